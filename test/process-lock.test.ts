import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { processStartTime } from "../src/process/process-identity.js";
import { acquireLock, breakDeadLock, inspectLock, sweepLockScratch, tryAcquireLock } from "../src/storage/process-lock.js";

const MODULE = join(import.meta.dirname, "..", "src", "storage", "process-lock.js");

describe("process lock", () => {
  const dirs: string[] = [];
  async function lockPath(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), "pyro-lock-"));
    dirs.push(dir);
    return join(dir, "ws.lock");
  }
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it("is exclusive while its holder lives and released on release", async () => {
    const path = await lockPath();
    const held = await tryAcquireLock(path, "exec");
    assert.ok(held);
    assert.equal(held.interrupted, undefined);
    assert.equal(await tryAcquireLock(path, "exec"), undefined);
    await held.release();
    const again = await tryAcquireLock(path, "exec");
    assert.ok(again);
    await again.release();
  });

  it("is taken over at once from a holder killed with SIGKILL, naming what it was doing", async () => {
    const path = await lockPath();
    const child = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const m = await import(${JSON.stringify(MODULE)}); await m.tryAcquireLock(${JSON.stringify(path)}, "sync push"); console.log("held"); setInterval(() => {}, 1000);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
    assert.equal(await tryAcquireLock(path, "exec"), undefined, "a live holder keeps the lock");
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    const started = Date.now();
    const held = await acquireLock(path, "exec", 30_000);
    assert.ok(held);
    assert.ok(Date.now() - started < 1_000, `took ${Date.now() - started} ms`);
    assert.equal(held.interrupted?.purpose, "sync push");
    assert.equal(held.interrupted?.pid, child.pid);
    await held.release();
  });

  it("does not trust a reused pid: same pid, other start time is a dead holder", async () => {
    const path = await lockPath();
    await mkdir(path);
    const realStart = processStartTime(process.pid);
    assert.ok(realStart);
    await writeFile(
      join(path, "owner.json"),
      JSON.stringify({ pid: process.pid, start: String(Number(realStart) - 1), acquired_at: new Date().toISOString(), purpose: "reset" }),
    );
    const held = await tryAcquireLock(path, "exec");
    assert.ok(held);
    assert.equal(held.interrupted?.purpose, "reset");
    await held.release();
  });

  it("sweeps scratch directories of dead acquirers only", async () => {
    const path = await lockPath();
    const dir = join(path, "..");
    await mkdir(`${path}.acquiring-999999999-abcd`);
    await mkdir(`${path}.acquiring-${process.pid}-abcd`);
    assert.deepEqual(await sweepLockScratch(dir), ["ws.lock.acquiring-999999999-abcd"]);
    assert.deepEqual(await readdir(dir), [`ws.lock.acquiring-${process.pid}-abcd`]);
  });
});

describe("process lock: breaking a dead owner's lock races no one", () => {
  it("a breaker that read a dead owner and lost the race leaves the new holder's lock alone (C reads X, B breaks and takes, C breaks, E tries)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyro-lock-"));
    try {
      const path = join(dir, "ws.lock");
      // X: a process that took the lock and died holding it.
      const x = spawn(
        process.execPath,
        ["--input-type=module", "-e", `const m = await import(${JSON.stringify(MODULE)}); await m.tryAcquireLock(${JSON.stringify(path)}, "reset");`],
        { stdio: "inherit" },
      );
      assert.equal(await new Promise((r) => x.once("exit", r)), 0);
      // C reads the dead owner X…
      const seenByC = await inspectLock(path);
      assert.equal(seenByC?.owner?.pid, x.pid);
      // …B breaks X's lock and takes it…
      const b = await tryAcquireLock(path, "exec");
      assert.ok(b);
      assert.equal(b.interrupted?.pid, x.pid);
      const bRecord = await inspectLock(path);
      // …C goes on to break what it read: it must not touch B's lock.
      assert.equal(await breakDeadLock(path, seenByC!), false);
      assert.deepEqual(await inspectLock(path), bRecord, "B's lock is where it was, unchanged");
      // E finds the lock held, so there is one holder only.
      assert.equal(await tryAcquireLock(path, "sync push"), undefined);
      assert.deepEqual(await readdir(dir), ["ws.lock"], "nothing moved aside");
      await b.release();
      const e = await tryAcquireLock(path, "sync push");
      assert.ok(e);
      assert.equal(e.interrupted, undefined);
      await e.release();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("the same race on a lock written without a holder file (older pyro) also leaves the new holder alone", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyro-lock-"));
    try {
      const path = join(dir, "ws.lock");
      await mkdir(path);
      await writeFile(join(path, "owner.json"), JSON.stringify({ pid: 999999999, start: "1", acquired_at: new Date().toISOString(), purpose: "reset" }));
      const seenByC = await inspectLock(path);
      const b = await tryAcquireLock(path, "exec");
      assert.ok(b);
      assert.equal(b.interrupted?.pid, 999999999);
      const bRecord = await inspectLock(path);
      assert.equal(await breakDeadLock(path, seenByC!), false);
      assert.deepEqual(await inspectLock(path), bRecord);
      assert.equal(await tryAcquireLock(path, "sync push"), undefined);
      await b.release();
      assert.deepEqual(await readdir(dir), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("an acquirer takes a lock a breaker emptied but has not removed yet", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyro-lock-"));
    try {
      const path = join(dir, "ws.lock");
      await mkdir(path);
      const held = await tryAcquireLock(path, "exec");
      assert.ok(held);
      await held.release();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
