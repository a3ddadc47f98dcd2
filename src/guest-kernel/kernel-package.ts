import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { PyroError } from "../errors.js";
import { requireExecutable, runHostCommand, runHostCommandRaw } from "../process/host-command.js";
import { writeFileAtomic } from "../storage/atomic-file.js";

/** Debian's cloud kernel: small, virtio drivers as modules, PVH entry point (runtime-facts §2). */
const KERNEL_METAPACKAGE = "linux-image-cloud-amd64";

/** Resolves the concrete kernel package the metapackage points at, e.g. linux-image-6.1.0-56-cloud-amd64. */
export async function resolveKernelPackage(): Promise<string> {
  const aptCache = requireExecutable("apt-cache", "apt");
  const result = await runHostCommandRaw(aptCache, ["depends", KERNEL_METAPACKAGE], { timeoutMs: 60_000 });
  const match = /Depends:\s*(linux-image-[0-9][^\s]*-cloud-amd64)/.exec(result.stdout.toString("utf8"));
  if (!match?.[1]) {
    throw new PyroError("KERNEL_UNAVAILABLE", `cannot find the Debian cloud kernel package (${KERNEL_METAPACKAGE}); run 'apt-get update' and retry`);
  }
  return match[1];
}

/** Downloads the kernel .deb (without installing it) and unpacks it into `dir`. */
export async function unpackKernelPackage(packageName: string, dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const aptGet = requireExecutable("apt-get", "apt");
  const dpkgDeb = requireExecutable("dpkg-deb", "dpkg");
  await runHostCommand(aptGet, ["download", packageName], { cwd: dir, timeoutMs: 600_000 });
  const debs = (await readdir(dir)).filter((f) => f.endsWith(".deb"));
  if (debs.length !== 1 || !debs[0]) throw new PyroError("KERNEL_UNAVAILABLE", `apt-get download ${packageName} produced no package`);
  await runHostCommand(dpkgDeb, ["-x", join(dir, debs[0]), join(dir, "root")], { timeoutMs: 300_000 });
  await rm(join(dir, debs[0]));
}

/** The bzImage's LZ4 payload, decompressed: an ELF vmlinux QEMU boots through its PVH note (faster, §1g). */
export async function extractVmlinux(vmlinuzPath: string, outputPath: string): Promise<void> {
  const image = await readFile(vmlinuzPath);
  const lz4Magic = Buffer.from([0x02, 0x21, 0x4c, 0x18]);
  const at = image.indexOf(lz4Magic);
  if (at < 0) throw new PyroError("KERNEL_UNAVAILABLE", `${vmlinuzPath} has no LZ4 payload; this kernel build is not supported`);
  const lz4 = requireExecutable("lz4", "lz4");
  // The legacy LZ4 stream is followed by other bzImage data; lz4 stops at the end of the stream and may warn.
  const result = await runHostCommandRaw(lz4, ["-dc"], { input: image.subarray(at), maxOutputBytes: 512 << 20 });
  const elf = result.stdout;
  if (elf.length < 1 << 20 || elf.readUInt32BE(0) !== 0x7f454c46) {
    throw new PyroError("KERNEL_UNAVAILABLE", `decompressing ${vmlinuzPath} did not produce an ELF kernel: ${result.stderr.trim()}`);
  }
  await writeFileAtomic(outputPath, elf);
}

/**
 * Module paths (relative to modulesDir) in load order, dependencies first, for the named modules.
 * The .deb ships no modules.dep (depmod runs at install time), so read each module's own
 * `depends=` entry from its .modinfo section instead.
 */
export async function moduleLoadOrder(modulesDir: string, wanted: readonly string[]): Promise<string[]> {
  const orderText = await readFile(join(modulesDir, "modules.order"), "utf8");
  const byName = new Map<string, string>();
  for (const line of orderText.split("\n")) {
    const rel = line.trim();
    if (rel) byName.set(moduleName(rel), rel);
  }
  const order: string[] = [];
  const visit = async (name: string, chain: string[]): Promise<void> => {
    const rel = byName.get(name);
    if (!rel || order.includes(rel)) return; // absent from modules.order: built into the kernel
    if (chain.includes(name)) throw new PyroError("KERNEL_UNAVAILABLE", `module dependency cycle: ${[...chain, name].join(" -> ")}`);
    const deps = /\0depends=([^\0]*)\0/.exec((await readFile(join(modulesDir, rel))).toString("latin1"))?.[1] ?? "";
    for (const dep of deps.split(",").filter(Boolean)) await visit(dep.replace(/-/g, "_"), [...chain, name]);
    order.push(rel);
  };
  for (const name of wanted) await visit(name, []);
  return order;
}

export function moduleName(path: string): string {
  return (path.split("/").pop() ?? path).replace(/\.ko(\.xz|\.zst|\.gz)?$/, "").replace(/-/g, "_");
}
