/**
 * Another local user must not be able to reach a workspace's agent channel, secrets or guest
 * memory: pyro refuses runtime directories it does not own privately, and keeps everything it
 * writes owner-only (dirs 0700, files and sockets no group/other bits).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmod, chown, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CLI, processesMentioning, sharedCacheDir } from "./helpers/vm-fixtures.js";

const TIMEOUT = { timeout: 300_000 };
const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

/** A home with the shared kernel, initramfs and environments, and nothing else: pyro makes the rest. */
async function freshCache(cacheDir: string, entries = ["kernels", "initramfs", "environments"]): Promise<void> {
  await mkdir(cacheDir, { recursive: true, mode: 0o700 });
  for (const entry of entries) await symlink(join(sharedCacheDir, entry), join(cacheDir, entry));
}

function cli(args: string[], env: NodeJS.ProcessEnv) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 240_000, env });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Every entry under `root` (links not followed) with its permission bits. */
async function walk(root: string): Promise<{ path: string; kind: string; mode: number }[]> {
  const out: { path: string; kind: string; mode: number }[] = [];
  for (const name of await readdir(root)) {
    const path = join(root, name);
    const st = await lstat(path);
    const kind = st.isSymbolicLink() ? "link" : st.isDirectory() ? "dir" : st.isSocket() ? "socket" : st.isFile() ? "file" : "other";
    out.push({ path, kind, mode: st.mode & 0o7777 });
    if (kind === "dir") out.push(...(await walk(path)));
  }
  return out;
}

describe("[vm] other local users", () => {
  let base: string;
  before(async () => {
    base = await mkdtemp(join(tmpdir(), "pyro-lu-"));
  });
  after(async () => {
    await rm(base, { recursive: true, force: true });
  });

  /**
   * The default layout without XDG_RUNTIME_DIR: the runtime dir is $TMPDIR/pyro-<uid>, a name any
   * local user can create first.
   */
  async function defaultLayout(name: string) {
    const home = join(base, name);
    await freshCache(join(home, "xdg-cache", "pyro-mcp"), ["kernels", "initramfs", "environments", "templates"]);
    await mkdir(join(home, "tmp"), { recursive: true });
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      HOME: home,
      TMPDIR: join(home, "tmp"),
      XDG_CACHE_HOME: join(home, "xdg-cache"),
      XDG_STATE_HOME: join(home, "xdg-state"),
      PYRO_ACCEL: "tcg",
    };
    for (const key of ["PYRO_HOME", "PYRO_RUNTIME_DIR", "XDG_RUNTIME_DIR"]) delete env[key];
    return { env, runtimeDir: join(home, "tmp", `pyro-${process.getuid?.() ?? 0}`) };
  }

  const attacks: { name: string; skip?: string | false; plant: (runtimeDir: string) => Promise<string> }[] = [
    {
      name: "owned by another user",
      skip: !isRoot && "needs root to chown",
      plant: async (dir) => {
        await mkdir(dir, { mode: 0o700 });
        await chown(dir, NOBODY, NOBODY);
        return dir;
      },
    },
    {
      name: "writable by everyone",
      plant: async (dir) => {
        await mkdir(dir);
        await chmod(dir, 0o777);
        return dir;
      },
    },
    {
      name: "a symbolic link to someone else's directory",
      plant: async (dir) => {
        const theirs = `${dir}-theirs`;
        await mkdir(theirs, { mode: 0o700 });
        await symlink(theirs, dir);
        return theirs;
      },
    },
  ];

  for (const attack of attacks) {
    it(`refuses a runtime dir ${attack.name}, for 'run' and 'workspace create', and puts nothing in it`, { ...TIMEOUT, skip: attack.skip }, async () => {
      const { env, runtimeDir } = await defaultLayout(`a-${attacks.indexOf(attack)}`);
      const planted = await attack.plant(runtimeDir);
      for (const args of [
        ["run", "debian:12", "--", "true"],
        ["workspace", "create", "debian:12"],
      ]) {
        const r = cli(args, env);
        assert.equal(r.code, 125, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
        const lines = r.stderr.trim().split("\n");
        assert.equal(lines.length, 1, r.stderr);
        assert.match(lines[0]!, /^pyro: error \[UNSAFE_DIRECTORY\]: refusing to use .*pyro-\d+: .*Remove it/);
        assert.ok(lines[0]!.includes(runtimeDir), lines[0]);
      }
      assert.deepEqual(await readdir(planted), [], "nothing was created in the planted directory");
      assert.deepEqual(await processesMentioning(planted), []);
      assert.deepEqual(await processesMentioning(runtimeDir), []);
    });
  }

  it("keeps every directory 0700 and every file and socket owner-only, template and snapshots included", TIMEOUT, async () => {
    const home = join(base, "h");
    await freshCache(join(home, "cache")); // no boot template: this home builds its own
    const env: NodeJS.ProcessEnv = { ...process.env, PYRO_HOME: home, PYRO_ACCEL: "tcg" };
    delete env.PYRO_RUNTIME_DIR;
    const created = cli(["workspace", "create", "debian:12", "--secret", "TOKEN=hunter2", "--json"], env);
    assert.equal(created.code, 0, created.stderr + created.stdout);
    const id = JSON.parse(created.stdout).workspace_id as string;
    let forkId: string | undefined;
    try {
      const snap = cli(["workspace", "snapshot", "create", id, "s1"], env);
      assert.equal(snap.code, 0, snap.stderr + snap.stdout);
      // A fork's copy: its own copies of the disk layers, the secrets it inherits, its RAM file.
      const fork = cli(["workspace", "fork", id, "--json"], env);
      assert.equal(fork.code, 0, fork.stderr + fork.stdout);
      forkId = JSON.parse(fork.stdout).forks[0].workspace_id as string;
      const forkRam = (await readFile(`/proc/${JSON.parse(fork.stdout).forks[0].vm.pid}/cmdline`, "utf8")).split("\0").find((a) => a.includes("mem-path="));
      const ramPath = /mem-path=([^,]+)/.exec(forkRam ?? "")?.[1];
      if (ramPath) assert.equal((await stat(ramPath)).mode & 0o777, 0o600, `${ramPath} is not owner-only`);
      const entries = await walk(home);
      const kinds = new Set(
        entries.map(
          (e) =>
            `${e.kind}:${e.path
              .slice(home.length)
              .replace(/ws-[a-z2-7]+/g, "ws-*")
              .replace(/-[0-9a-f]{16}$/, "-*")}`,
        ),
      );
      // The things an attacker wants are all there, so the walk below means something.
      for (const expected of [
        "socket:/run/ws-*/agent.sock",
        "socket:/run/ws-*/qmp.sock",
        "file:/run/ws-*/console.log",
        "file:/state/workspaces/ws-*/secrets.json",
        "file:/state/workspaces/ws-*/disk.qcow2",
        "file:/state/workspaces/ws-*/snapshots/s1/state.bin",
        "file:/state/workspaces/ws-*/snapshots/s1/disk.qcow2",
        "file:/state/workspaces/ws-*/fork-base/disk.qcow2",
      ]) {
        assert.ok(kinds.has(expected), `${expected} missing from ${[...kinds].join(" ")}`);
      }
      assert.ok(
        entries.some((e) => /\/cache\/templates\/.*\/state\.bin$/.test(e.path)),
        "the boot template's memory image is in the cache",
      );
      const loose = entries.filter((e) => e.kind !== "link" && (e.kind === "dir" ? e.mode !== 0o700 : e.mode & 0o077));
      assert.deepEqual(
        loose.map((e) => `${e.mode.toString(8)} ${e.kind} ${e.path}`),
        [],
      );
      assert.deepEqual(
        entries.filter((e) => e.kind === "file" && e.mode !== 0o600 && e.mode !== 0o400).map((e) => `${e.mode.toString(8)} ${e.path}`),
        [],
      );
    } finally {
      cli(["workspace", "delete", id], env);
      if (forkId) cli(["workspace", "delete", forkId], env);
    }
  });
});
