import { createHash } from "node:crypto";
import { chmod, copyFile, mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { PyroError } from "../errors.js";
import type { PyroPaths } from "../paths.js";
import { requireExecutable, runHostCommand } from "../process/host-command.js";
import { writeFileAtomic } from "../storage/atomic-file.js";
import { MEMORY_RETURN_MODULE, type GuestKernel } from "./guest-kernel.js";
import { INIT_APPLETS, INIT_SCRIPT } from "./init-script.js";
import { isFile } from "../storage/path-exists.js";

/** busybox-static's binary; a dynamically linked busybox would not run in the initramfs. */
const BUSYBOX_PATH = "/bin/busybox";

export interface Initramfs {
  readonly path: string;
  /** Content key: changes whenever the kernel, agent, busybox or /init change. */
  readonly key: string;
}

/** Where the initramfs for this kernel and agent lives (built or not): computes its key, builds nothing. */
export async function plannedInitramfs(paths: PyroPaths, kernel: GuestKernel, agentPath: string): Promise<Initramfs> {
  if (!(await isFile(BUSYBOX_PATH))) {
    throw new PyroError("HOST_TOOL_MISSING", `${BUSYBOX_PATH} is missing; install it with: apt-get install -y busybox-static`);
  }
  const [agent, busybox] = await Promise.all([readFile(agentPath), readFile(BUSYBOX_PATH)]);
  const key = createHash("sha256")
    .update(kernel.package)
    .update(INIT_SCRIPT)
    .update(kernel.baseModules.join(",") + "|" + kernel.netModules.join(",") + (kernel.memoryReturnModule ? `|${MEMORY_RETURN_MODULE}` : ""))
    .update(agent)
    .update(busybox)
    .digest("hex")
    .slice(0, 16);
  return { path: join(initramfsDir(paths), `${key}.cpio`), key };
}

export function initramfsDir(paths: PyroPaths): string {
  return join(paths.cacheDir, "initramfs");
}

/** Builds (or reuses) the initramfs holding busybox, the virtio modules, /init and the agent. */
export async function ensureInitramfs(paths: PyroPaths, kernel: GuestKernel, agentPath: string): Promise<Initramfs> {
  const { path, key } = await plannedInitramfs(paths, kernel, agentPath);
  if (await isFile(path)) return { path, key };

  const staging = `${path}.d-${process.pid}`;
  await rm(staging, { recursive: true, force: true });
  try {
    await mkdir(join(staging, "bin"), { recursive: true });
    await mkdir(join(staging, "modules"));
    await copyFile(BUSYBOX_PATH, join(staging, "bin", "busybox"));
    for (const applet of INIT_APPLETS) await symlink("busybox", join(staging, "bin", applet));
    await writeFile(join(staging, "init"), INIT_SCRIPT, { mode: 0o755 });
    await copyFile(agentPath, join(staging, "pyro-agent"));
    await chmod(join(staging, "pyro-agent"), 0o755);
    for (const m of [...kernel.baseModules, ...kernel.netModules]) await copyFile(join(kernel.modulesDir, `${m}.ko`), join(staging, "modules", `${m}.ko`));
    await writeFile(join(staging, "modules", "base.list"), kernel.baseModules.join("\n") + "\n");
    await writeFile(join(staging, "modules", "net.list"), kernel.netModules.join("\n") + "\n");
    const files = [
      "bin",
      "init",
      "pyro-agent",
      "modules",
      ...INIT_APPLETS.map((a) => `bin/${a}`),
      "bin/busybox",
      "modules/base.list",
      "modules/net.list",
      ...[...kernel.baseModules, ...kernel.netModules].map((m) => `modules/${m}.ko`),
    ];
    if (kernel.memoryReturnModule) {
      await copyFile(kernel.memoryReturnModule, join(staging, "modules", `${MEMORY_RETURN_MODULE}.ko`));
      await writeFile(join(staging, "modules", "memory.list"), `${MEMORY_RETURN_MODULE}\n`);
      files.push(`modules/${MEMORY_RETURN_MODULE}.ko`, "modules/memory.list");
    }
    // Uncompressed newc: decompressing gzip under TCG costs more than reading ~4 MB more.
    const cpio = requireExecutable("cpio", "cpio");
    const archive = await runHostCommand(cpio, ["-o", "-H", "newc", "--quiet", "-R", "0:0"], {
      cwd: staging,
      input: files.join("\n") + "\n",
      maxOutputBytes: 256 << 20,
    });
    await writeFileAtomic(path, archive.stdout);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return { path, key };
}
