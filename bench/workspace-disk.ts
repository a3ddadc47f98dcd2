/**
 * Benchmark (not a test): seeding, diffing and exporting a synthetic tree through pyro's /workspace
 * disk, against the host floor measured in the same run on the same tree:
 *   seed   `workspace create --seed-path`       vs  tar -c | tar -x of the tree
 *   diff   `workspace diff --summary` after appending to --changed files  vs  diff -rq of two copies
 *   export `workspace export . --output x.tar`  vs  tar -c -f x.tar of the tree
 *   sync   `workspace sync push` of --sync-files files (default 2000)  vs  tar -c | tar -x of those files
 * --steps sync (or diff,export,sync: a comma list) times only those steps after the seed; the seed is always timed.
 * Each pyro step is its own CLI process. "pyro RSS" is that node process's own peak (reported by a
 * preload at exit): the figure the ≤ 200 MB target is about. "tools RSS" is the largest peak of
 * anything it waited for (mkfs, qemu-img, debugfs, tar…), from getrusage(RUSAGE_CHILDREN) of a
 * wrapper. Medians of --runs.
 *
 *   flock /tmp/pyro-vm.lock node dist/bench/workspace-disk.js [--files 10000] [--file-bytes 12000] [--changed 1000] [--sync-files 2000] [--steps diff,export,sync] [--runs 3] [--disk-gib 4]
 *   flock /tmp/pyro-vm.lock node dist/bench/workspace-disk.js --large
 *
 * --large is the 2 GB / 200k-file tree (200,000 files of 10,001 bytes in 2,000 directories, an
 * 8 GiB disk, one run, no sync push): seed, diff --summary and export. It needs ~16 GB of free disk
 * under $TMPDIR for the tree, the floors' copies and the archives, all removed at the end.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const LARGE = process.argv.includes("--large");
function option(name: string, fallback: number, large: number = fallback): number {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? Number(process.argv[at + 1]) : LARGE ? large : fallback;
}
const FILES = option("files", 10_000, 200_000);
const FILE_BYTES = option("file-bytes", 12_000, 10_000);
const CHANGED = option("changed", 1_000);
/** Files pushed by the sync step (issue #13's figure is 2,000), apart from the --changed the diff sees. */
const SYNC_FILES = option("sync-files", 2_000);
const STEPS = new Set((process.argv[process.argv.indexOf("--steps") + 1] ?? "").split(","));
const stepOn = (name: string) => !process.argv.includes("--steps") || STEPS.has(name);
const RUNS = option("runs", 3, 1);
const DISK_GIB = option("disk-gib", 4, 8);
/** sync push is another figure's (and minutes on the large tree): left out there. */
const SYNC = !LARGE && stepOn("sync");
const CLI = join(dirname(fileURLToPath(import.meta.url)), "..", "src", "cli", "main.js");
const PER_DIR = 100;

/** Prints the node process's own peak RSS (KiB) on stderr as it exits: pyro's figure, apart from its tools'. */
const RSS_PRELOAD = `data:text/javascript,process.on("exit",()=>process.stderr.write("\\npyro-max-rss-kib="+process.resourceUsage().maxRSS+"\\n"))`;

/** Runs a command; returns wall seconds, its stdout, the peak RSS (MiB) of it and what it waited for, and pyro's own where it reported one. */
function timed(argv: string[], options: { shell?: boolean } = {}): { seconds: number; stdout: string; rssMib: number; pyroRssMib: number } {
  const wrapper = [
    "import resource, subprocess, sys, time, json",
    "t = time.monotonic()",
    `r = subprocess.run(sys.argv[1:], capture_output=True, shell=${options.shell ? "True" : "False"})`,
    "d = time.monotonic() - t",
    "sys.stderr.write(r.stderr.decode(errors='replace'))",
    "print(json.dumps({'seconds': d, 'rc': r.returncode, 'rss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 'stdout': r.stdout.decode(errors='replace')}))",
  ].join("\n");
  const r = spawnSync("python3", ["-c", wrapper, ...(options.shell ? [argv.join(" ")] : argv)], { encoding: "utf8", maxBuffer: 256 << 20 });
  const out = JSON.parse(r.stdout) as { seconds: number; rc: number; rss_kib: number; stdout: string };
  if (out.rc !== 0) throw new Error(`${argv.join(" ")} failed (${out.rc}): ${r.stderr.slice(-2000)}`);
  const pyroRss = /pyro-max-rss-kib=(\d+)/.exec(r.stderr);
  return { seconds: out.seconds, stdout: out.stdout, rssMib: out.rss_kib / 1024, pyroRssMib: pyroRss ? Number(pyroRss[1]) / 1024 : Number.NaN };
}

const pyroCli = (...args: string[]) => timed([process.execPath, "--import", RSS_PRELOAD, CLI, ...args]);

async function makeTree(root: string): Promise<string[]> {
  const files: string[] = [];
  for (let i = 0; i < FILES; i++) {
    const dir = join(root, `d${Math.floor(i / PER_DIR)}`);
    if (i % PER_DIR === 0) await mkdir(dir, { recursive: true });
    const rel = `d${Math.floor(i / PER_DIR)}/f${i}.txt`;
    // Text-like content (hex), so a diff shows lines rather than "binary".
    await writeFile(join(root, rel), randomBytes(FILE_BYTES / 2).toString("hex") + "\n");
    files.push(rel);
  }
  return files;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), "pyro-bench-disk-"));
  const tree = join(work, "tree");
  await mkdir(tree);
  const files = await makeTree(tree);
  const changed = files.slice(0, CHANGED);
  const pushed = files.slice(0, SYNC_FILES);
  if (pushed.length < SYNC_FILES) throw new Error(`--sync-files ${SYNC_FILES} is more than the tree's ${FILES} files`);
  const mb = Number(execFileSync("du", ["-sm", "--apparent-size", tree], { encoding: "utf8" }).split("\t")[0]);
  console.log(
    `tree: ${FILES} files of ${FILE_BYTES} bytes in ${Math.ceil(FILES / PER_DIR)} dirs, ${mb} MB; ${CHANGED} changed; ${SYNC ? SYNC_FILES : 0} pushed; ${RUNS} runs; disk ${DISK_GIB} GiB`,
  );
  const rows: Record<string, { pyro: number[]; floor: number[]; pyroRss: number[]; toolsRss: number[] }> = {};
  const record = (name: string, step: ReturnType<typeof timed>, floor: number) => {
    rows[name] ??= { pyro: [], floor: [], pyroRss: [], toolsRss: [] };
    rows[name]!.pyro.push(step.seconds);
    rows[name]!.floor.push(floor);
    rows[name]!.pyroRss.push(step.pyroRssMib);
    rows[name]!.toolsRss.push(step.rssMib);
  };
  try {
    for (let run = 1; run <= RUNS; run++) {
      const scratch = join(work, `run${run}`);
      await mkdir(scratch);
      // Host floors, same run, same tree.
      const copyA = join(scratch, "a");
      const copyB = join(scratch, "b");
      await mkdir(copyA);
      const seedFloor = timed([`tar -C ${tree} -cf - . | tar -C ${copyA} -xf -`], { shell: true }).seconds;
      execFileSync("cp", ["-a", copyA, copyB]);
      for (const rel of changed) execFileSync("sh", ["-c", `echo more >> '${join(copyB, rel)}'`]);
      const diffFloor = timed([`diff -rq ${copyA} ${copyB} > /dev/null; test $? -le 1`], { shell: true }).seconds;
      const exportFloor = timed(["tar", "-C", tree, "-cf", join(scratch, "floor.tar"), "."]).seconds;
      await rm(join(scratch, "floor.tar"));
      const syncList = join(scratch, "sync.list");
      await writeFile(syncList, pushed.join("\n") + "\n");
      const syncDir = join(scratch, "sync");
      await mkdir(syncDir);
      const syncFloor = timed([`tar -C ${copyB} -cf - -T ${syncList} | tar -C ${syncDir} -xf -`], { shell: true }).seconds;
      // Every pushed file then differs from what the guest holds (untimed), so none is the same bytes.
      for (const rel of pushed) await appendFile(join(syncDir, rel), "pushed\n");

      const created = pyroCli("workspace", "create", "debian:12", "--seed-path", tree, "--disk-gib", String(DISK_GIB), "--json");
      const id = (JSON.parse(created.stdout) as { workspace_id: string }).workspace_id;
      try {
        record("seed (create)", created, seedFloor);
        const appendScript = `cd /workspace && for f in ${changed.join(" ")}; do echo more >> $f; done`;
        await writeFile(join(scratch, "append.sh"), appendScript);
        // The changes themselves are guest work, not timed.
        pyroCli("workspace", "exec", id, "--", "sh", "-c", appendScript);
        if (stepOn("diff")) {
          const diff = pyroCli("workspace", "diff", id, "--summary", "--json");
          const total = (JSON.parse(diff.stdout) as { total_files: number }).total_files;
          if (total !== CHANGED) throw new Error(`diff found ${total} changed files, expected ${CHANGED}`);
          record("diff --summary", diff, diffFloor);
        }
        if (stepOn("export")) {
          const exported = pyroCli("workspace", "export", id, ".", "--output", join(scratch, "pyro.tar"), "--json");
          const exportedBytes = (JSON.parse(exported.stdout) as { bytes: number }).bytes;
          if (exportedBytes < mb * 1e6) throw new Error(`the export holds ${exportedBytes} bytes, less than the tree's ${mb} MB`);
          record("export .", exported, exportFloor);
          await rm(join(scratch, "pyro.tar"));
        }
        if (SYNC) {
          const push = pyroCli("workspace", "sync", "push", id, syncDir, "--json");
          const pushedFiles = (JSON.parse(push.stdout) as { files: number }).files;
          if (pushedFiles !== SYNC_FILES) throw new Error(`sync push sent ${pushedFiles} files, expected ${SYNC_FILES}`);
          record(`sync push (${SYNC_FILES} files)`, push, syncFloor);
        }
      } finally {
        pyroCli("workspace", "delete", id, "--json");
      }
      await rm(scratch, { recursive: true, force: true });
    }
    console.log("| step | pyro (s) | host floor (s) | ratio | pyro peak RSS (MiB) | tools' peak RSS (MiB) |");
    console.log("|---|---|---|---|---|---|");
    for (const [name, r] of Object.entries(rows)) {
      const p = median(r.pyro);
      const f = median(r.floor);
      console.log(
        `| ${name} | ${p.toFixed(2)} | ${f.toFixed(3)} | ${(p / f).toFixed(1)}x | ${Math.max(...r.pyroRss).toFixed(0)} | ${Math.max(...r.toolsRss).toFixed(0)} |`,
      );
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
