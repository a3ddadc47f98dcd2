import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdir, open, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { resolvePaths } from "../src/paths.js";
import { Pyro } from "../src/sdk/pyro.js";
import { sweepOrphanedRunDirs } from "../src/vm-run/disposable-vm.js";
import { agentReady, CLI, processesMentioning, runDirs, sharedCacheDir, tempHome, waitFor } from "./helpers/vm-fixtures.js";

const TIMEOUT = { timeout: 180_000 };

/** Installs `debian:12` in a temp home as an image we control, with a matching manifest. */
async function installFakeEnvironment(home: string, makeImage: (imagePath: string) => Promise<number>): Promise<void> {
  const dir = join(home, "cache", "environments", "debian_12");
  await mkdir(dir, { recursive: true });
  const size = await makeImage(join(dir, "rootfs.ext4"));
  await writeFile(
    join(dir, "manifest.json"),
    JSON.stringify({
      name: "debian:12",
      version: "1.0.0",
      packages: [],
      suite: "bookworm",
      imageFile: "rootfs.ext4",
      imageSizeBytes: size,
      builtAt: new Date().toISOString(),
      buildSeconds: 0,
    }),
  );
}

/** An empty but valid 64 MiB ext4 filesystem. */
function emptyExt4(imagePath: string): number {
  execFileSync("mkfs.ext4", ["-q", "-F", "-b", "4096", imagePath, "65536k"], { env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` } });
  return 64 * 1024 * 1024;
}

describe("[vm] failures are clear and leak nothing", () => {
  it("a missing image is reported with the command that repairs it", TIMEOUT, async () => {
    const t = await tempHome();
    try {
      await installFakeEnvironment(t.home, async () => 1234);
      await assert.rejects(
        new Pyro({ home: t.home }).run("debian:12", ["true"]),
        (e) => isPyroError(e, "ENVIRONMENT_CORRUPT") && /missing/.test(e.message) && /pyro env pull debian:12/.test(e.message),
      );
    } finally {
      await t.dispose();
    }
  });

  it("an image with a destroyed superblock is refused before booting", TIMEOUT, async () => {
    const t = await tempHome();
    try {
      await installFakeEnvironment(t.home, async (p) => {
        const size = emptyExt4(p);
        const h = await open(p, "r+");
        await h.write(Buffer.alloc(4096), 0, 4096, 0);
        await h.close();
        return size;
      });
      await assert.rejects(
        new Pyro({ home: t.home }).run("debian:12", ["true"]),
        (e) => isPyroError(e, "ENVIRONMENT_CORRUPT") && /no ext4 superblock/.test(e.message),
      );
    } finally {
      await t.dispose();
    }
  });

  it("a filesystem the guest cannot mount fails the boot at once, without a retry", TIMEOUT, async () => {
    const t = await tempHome();
    try {
      await installFakeEnvironment(t.home, async (p) => {
        const size = emptyExt4(p);
        // Keep the superblock (offset 1024) but destroy the block group descriptors after it.
        const h = await open(p, "r+");
        await h.write(Buffer.alloc(8192, 0xa5), 0, 8192, 4096);
        await h.close();
        return size;
      });
      const started = Date.now();
      await assert.rejects(
        new Pyro({ home: t.home }).run("debian:12", ["true"]),
        (e) => isPyroError(e, "GUEST_BOOT_FAILED") && /cannot mount the root filesystem/.test(e.message) && !/attempts/.test(e.message),
      );
      assert.ok(Date.now() - started < 30_000);
      assert.deepEqual(await runDirs(resolvePaths({ PYRO_HOME: t.home }).runtimeDir), []);
    } finally {
      await t.dispose();
    }
  });

  it("a filesystem that is not a Linux root is named as such", TIMEOUT, async () => {
    const t = await tempHome();
    try {
      await installFakeEnvironment(t.home, async (p) => emptyExt4(p));
      await assert.rejects(
        new Pyro({ home: t.home }).run("debian:12", ["true"]),
        (e) => isPyroError(e, "GUEST_BOOT_FAILED") && /not a Linux root/.test(e.message),
      );
    } finally {
      await t.dispose();
    }
  });

  it("a boot that misses its deadline is retried once, then fails clearly", TIMEOUT, async () => {
    const saved = process.env.PYRO_BOOT_TIMEOUT_MS;
    // Below what even a template restore (~0.2 s) needs, so every start misses it and the cold boot is retried.
    process.env.PYRO_BOOT_TIMEOUT_MS = "20";
    try {
      await assert.rejects(new Pyro().run("debian:12", ["true"]), (e) => isPyroError(e, "GUEST_BOOT_FAILED") && /after 2 attempts/.test(e.message));
    } finally {
      if (saved === undefined) delete process.env.PYRO_BOOT_TIMEOUT_MS;
      else process.env.PYRO_BOOT_TIMEOUT_MS = saved;
    }
  });

  it("with --allow-host-compat, no guest means a host run that says so in the result", TIMEOUT, async () => {
    const t = await tempHome();
    try {
      const pyro = new Pyro({ home: t.home });
      await assert.rejects(pyro.run("debian:12", ["true"]), (e) => isPyroError(e, "ENVIRONMENT_NOT_INSTALLED"));
      const r = await pyro.run("debian:12", ["sh", "-c", "echo on-host"], { allowHostCompat: true });
      assert.equal(r.execution_mode, "host_compat");
      assert.equal(r.stdout, "on-host\n");
      assert.match(r.warning ?? "", /HOST without isolation/);
    } finally {
      await t.dispose();
    }
  });

  it("a VMM killed mid-command is a clear error, with no process or file left behind", TIMEOUT, async () => {
    const t = await tempHome();
    try {
      // Share the real environment: the temp home only isolates run directories.
      await symlink(join(sharedCacheDir, "environments"), join(t.home, "cache", "environments"));
      const runtimeDir = resolvePaths({ PYRO_HOME: t.home }).runtimeDir;
      const pending = new Pyro({ home: t.home }).run("debian:12", ["sleep", "120"], { timeoutSeconds: 300 });
      const runDir = await waitFor("a VM run directory", async () => (await runDirs(runtimeDir))[0]);
      const [qemuPid] = await waitFor("the qemu process", async () => {
        const pids = await processesMentioning(join(runDir, "agent.sock"));
        return pids.length ? pids : undefined;
      });
      // Kill it while the command runs: after the agent is up and the host had time to send the exec.
      await agentReady(runDir);
      await new Promise((r) => setTimeout(r, 500));
      process.kill(qemuPid!, "SIGKILL");
      await assert.rejects(pending, (e) => isPyroError(e, "VM_DIED") && /killed by SIGKILL/.test(e.message));
      assert.deepEqual(await processesMentioning(runDir), []);
      assert.deepEqual(await runDirs(runtimeDir), []);
    } finally {
      await t.dispose();
    }
  });

  const cases = [
    ["SIGTERM", "during boot"],
    ["SIGTERM", "mid-command"],
    ["SIGINT", "mid-command"],
    ["SIGKILL", "mid-command"],
  ] as const;
  for (const [signal, when] of cases) {
    it(`${signal} to the pyro CLI ${when} takes the VM down with it`, TIMEOUT, async () => {
      const t = await tempHome();
      try {
        await symlink(join(sharedCacheDir, "environments"), join(t.home, "cache", "environments"));
        const runtimeDir = resolvePaths({ PYRO_HOME: t.home }).runtimeDir;
        const child = spawn(process.execPath, [CLI, "run", "debian:12", "--timeout-seconds", "300", "--", "sleep", "120"], {
          env: { ...process.env, PYRO_HOME: t.home },
          stdio: "ignore",
        });
        const exited = new Promise<{ code: number | null; signal: string | null }>((r) => child.on("exit", (code, sig) => r({ code, signal: sig })));
        const runDir = await waitFor("a VM run directory", async () => (await runDirs(runtimeDir))[0]);
        await waitFor("the qemu process", async () => ((await processesMentioning(join(runDir, "agent.sock"))).length ? true : undefined));
        if (when === "mid-command") {
          await agentReady(runDir);
          await new Promise((r) => setTimeout(r, 500));
        }
        child.kill(signal);
        const exit = await exited;
        if (signal === "SIGKILL") assert.equal(exit.signal, "SIGKILL");
        else assert.equal(exit.code, signal === "SIGTERM" ? 143 : 130);
        // pdeathsig takes the VMM down even when pyro could not clean up.
        await waitFor("the qemu process to exit", async () => ((await processesMentioning(runDir)).length === 0 ? true : undefined), 10_000);
        if (signal !== "SIGKILL") assert.deepEqual(await runDirs(runtimeDir), []);
        else {
          // The orphaned directory is swept by the next run.
          assert.deepEqual(await sweepOrphanedRunDirs(runtimeDir), [runDir]);
        }
      } finally {
        await t.dispose();
      }
    });
  }
});
