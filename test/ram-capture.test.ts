import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, open, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { findExecutable } from "../src/process/host-command.js";
import { captureMappedRam, findRamMapping, isOwnPage } from "../src/runtime/qemu/ram-capture.js";

const PAGE = 4096;
const PAGES = 32;
const SIZE = PAGES * PAGE;

/** /proc/<pid>/maps lines, as the kernel writes them: the path (if any) padded to column 73. */
function mapsLine(m: { start: bigint; end: bigint; perms: string; offset: bigint; inode: number; path: string }): string {
  const head = `${m.start.toString(16).padStart(8, "0")}-${m.end.toString(16).padStart(8, "0")} ${m.perms} ${m.offset.toString(16).padStart(8, "0")} 00:1b ${m.inode} `;
  return m.path ? head.padEnd(73, " ") + m.path : head;
}

describe("RAM capture: /proc parsers", () => {
  it("finds a mapping only when exactly one private writable mapping names exactly that path", () => {
    const path = fc.constantFrom("", "/dev/shm/p/a.ram", "/dev/shm/p/a.ram (deleted)", "/dev/shm/p/a b.ram", "/dev/shm/p/a.ram.x", "[heap]");
    const mapping = fc.record({
      start: fc.bigInt({ min: 0n, max: (1n << 47n) - 1n }),
      length: fc.bigInt({ min: 1n, max: 1n << 36n }),
      perms: fc.constantFrom("rw-p", "rw-s", "r--p", "r-xp", "---p"),
      offset: fc.bigInt({ min: 0n, max: 1n << 40n }),
      inode: fc.nat(),
      path,
    });
    fc.assert(
      fc.property(fc.array(mapping, { maxLength: 6 }), fc.constantFrom("/dev/shm/p/a.ram", "/dev/shm/p/a b.ram"), (mappings, target) => {
        const lines = mappings.map((m) => ({ ...m, end: m.start + m.length }));
        const matching = lines.filter((m) => m.path === target && m.perms === "rw-p");
        const found = findRamMapping(lines.map(mapsLine).join("\n"), target);
        if (matching.length !== 1) return assert.equal(found, undefined);
        const m = matching[0]!;
        assert.deepEqual(found, { start: Number(m.start), end: Number(m.end), fileOffset: Number(m.offset) });
      }),
      { numRuns: 300 },
    );
  });

  it("takes a page as the VM's own exactly when it is present and anonymous, or swapped out", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), (high) => {
        const present = high >= 2 ** 31;
        const swapped = Math.floor(high / 2 ** 30) % 2 === 1;
        const file = Math.floor(high / 2 ** 29) % 2 === 1;
        assert.equal(isOwnPage(high), (present && !file) || swapped);
      }),
      { numRuns: 300 },
    );
  });
});

/**
 * A real process standing in for QEMU: maps `file` private and writable (as a template, fork or
 * snapshot restore does) and writes the pages it is given, then waits (paused, as the VM is).
 */
const MAPPER = `
import mmap, os, sys
path, size = sys.argv[1], int(sys.argv[2])
f = open(path, "r+b")
m = mmap.mmap(f.fileno(), size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=int(os.environ.get("OFFSET", "0")))
for arg in sys.argv[3:]:
    page, byte = (int(x) for x in arg.split(":"))
    m[page * 4096:(page + 1) * 4096] = bytes([byte]) * 4096
print("ready", flush=True)
sys.stdin.read()
`;

describe("RAM capture of a private file mapping", () => {
  const python = findExecutable("python3");
  let dir: string;
  const children: ChildProcess[] = [];
  before(async () => {
    dir = await mkdtemp("/dev/shm/pyro-ram-capture-test-");
  });
  after(async () => {
    for (const c of children) c.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  });

  async function startMapper(file: string, writes: Map<number, number>, offset = 0): Promise<ChildProcess> {
    const child = spawn(python!, ["-c", MAPPER, file, String(SIZE), ...[...writes].map(([p, b]) => `${p}:${b}`)], {
      stdio: ["pipe", "pipe", "inherit"],
      env: { ...process.env, OFFSET: String(offset) },
    });
    children.push(child);
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once("data", () => resolve());
      child.once("exit", (code) => reject(new Error(`mapper exited ${code}`)));
    });
    return child;
  }

  it("refuses a mapping that does not start at the file's start (a restore maps the capture from offset 0), writing nothing", async (t) => {
    if (!python) return t.skip("no python3 to map a file");
    const shared = join(dir, "offset-template.ram");
    const out = join(dir, "offset-capture.ram");
    const offset = 1024 * PAGE;
    const handle = await open(shared, "w", 0o600);
    await handle.truncate(offset + SIZE);
    await handle.close();
    const mapper = await startMapper(shared, new Map([[0, 7]]), offset);
    try {
      await assert.rejects(captureMappedRam(mapper.pid!, shared, SIZE, out), (e: { code?: string }) => e.code === "HOST_COMMAND_FAILED");
    } finally {
      mapper.kill("SIGKILL");
    }
    await assert.rejects(stat(out), { code: "ENOENT" });
  });

  it("writes the mapping's view (own pages over the file's) without allocating the file's holes or exceeding its size", async (t) => {
    if (!python) return t.skip("no python3 to map a file");
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        // The shared file: some pages with data, the rest holes.
        fc.dictionary(fc.integer({ min: 0, max: PAGES - 1 }).map(String), fc.integer({ min: 1, max: 255 }), { maxKeys: PAGES }),
        // The VM's own writes (zero pages included: a hostile guest writes anything).
        fc.dictionary(fc.integer({ min: 0, max: PAGES - 1 }).map(String), fc.integer({ min: 0, max: 255 }), { maxKeys: PAGES }),
        async (fileData, ownWrites) => {
          run++;
          const shared = join(dir, `template-${run}.ram`);
          const out = join(dir, `capture-${run}.ram`);
          const handle = await open(shared, "w", 0o600);
          await handle.truncate(SIZE);
          for (const [page, byte] of Object.entries(fileData)) await handle.write(Buffer.alloc(PAGE, byte), 0, PAGE, Number(page) * PAGE);
          await handle.close();
          const writes = new Map(Object.entries(ownWrites).map(([p, b]) => [Number(p), b]));
          const mapper = await startMapper(shared, writes);
          // After the mapper's writes: a write fault on a tmpfs hole fills it in the file first (the kernel's doing, not the capture's).
          const sharedBlocks = (await stat(shared)).blocks;
          try {
            const { ownBytes } = await captureMappedRam(mapper.pid!, shared, SIZE, out);
            assert.equal(ownBytes, writes.size * PAGE);
          } finally {
            mapper.kill("SIGKILL");
          }
          const captured = await readFile(out);
          assert.equal(captured.length, SIZE);
          for (let page = 0; page < PAGES; page++) {
            const expected = writes.get(page) ?? fileData[String(page)] ?? 0;
            const got = captured.subarray(page * PAGE, (page + 1) * PAGE);
            assert.ok(
              got.every((b) => b === expected),
              `page ${page}: expected ${expected}, got ${got[0]}`,
            );
          }
          assert.equal((await stat(shared)).blocks, sharedBlocks, "the capture allocated pages in the shared file");
          assert.ok((await stat(out)).blocks * 512 <= SIZE + PAGE, "the capture is larger than the guest's memory");
          assert.equal((await stat(out)).mode & 0o077, 0, "the capture is readable by other users");
          await rm(shared);
          await rm(out);
        },
      ),
      { numRuns: 12 },
    );
  });
});
