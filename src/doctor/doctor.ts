import { templateMemoryMode, type TemplateMemoryMode } from "../workspaces/boot-templates.js";
import { arch, platform } from "node:os";
import { EnvironmentStore, type EnvironmentStatus } from "../environments/environment-store.js";
import { locateAgent, builtAgentPath } from "../guest-agent/agent-binary.js";
import { currentGuestKernel } from "../guest-kernel/guest-kernel.js";
import type { PyroPaths } from "../paths.js";
import { findExecutable, runHostCommandRaw } from "../process/host-command.js";
import { prepareGuestRuntime } from "../runtime/guest-runtime.js";
import { locatePrivateRamDiscard } from "../runtime/qemu/private-ram-discard.js";

/** Host tools pyro shells out to, and the Debian package that provides each. */
const HOST_TOOLS: ReadonlyArray<[tool: string, pkg: string, purpose: string]> = [
  ["qemu-system-x86_64", "qemu-system-x86", "runs the microVMs"],
  ["qemu-img", "qemu-utils", "creates per-VM disk overlays"],
  ["mmdebstrap", "mmdebstrap", "builds environments"],
  ["mkfs.ext4", "e2fsprogs", "packs environments into disk images"],
  ["lz4", "lz4", "unpacks the guest kernel"],
  ["cpio", "cpio", "packs the initramfs"],
  ["busybox", "busybox-static", "runs the initramfs"],
  ["setpriv", "util-linux", "ties one-shot VMs to the pyro process"],
  ["socat", "socat", "joins each guest connection to the egress proxy"],
  ["apt-get", "apt", "downloads the guest kernel"],
];

export interface DoctorProblem {
  what: string;
  fix: string;
}

export interface DoctorReport {
  platform: string;
  runtime: "PASS" | "FAIL";
  node_version: string;
  qemu: { binary: string | null; version: string | null };
  kvm: { exists: boolean; readable: boolean; writable: boolean; usable: boolean | null; reason: string };
  accel: "kvm" | "tcg" | null;
  guest_kernel: { prepared: boolean; package: string | null; release: string | null };
  guest_agent: { built: boolean; path: string };
  tools: Record<string, { found: boolean; path: string | null; package: string; purpose: string }>;
  cache_dir: string;
  state_dir: string;
  environment_cache: string;
  environments: Pick<EnvironmentStatus, "name" | "installed" | "problem">[];
  capabilities: { vm_boot: boolean; guest_exec: boolean; guest_network: boolean };
  /** shared_file: restored VMs map the template's RAM copy-on-write; streamed: each loads a full copy. */
  boot_templates: { memory: TemplateMemoryMode["mode"]; detail: string };
  problems: DoctorProblem[];
}

async function qemuVersion(binary: string): Promise<string | null> {
  const result = await runHostCommandRaw(binary, ["--version"], { timeoutMs: 10_000 }).catch(() => undefined);
  return /version ([0-9][^\s]*)/.exec(result?.stdout.toString() ?? "")?.[1] ?? null;
}

/** Inspects the host without changing it (except caching the KVM probe verdict). */
export async function runDoctor(paths: PyroPaths): Promise<DoctorReport> {
  const problems: DoctorProblem[] = [];
  const tools: DoctorReport["tools"] = {};
  for (const [tool, pkg, purpose] of HOST_TOOLS) {
    const found = findExecutable(tool) ?? null;
    tools[tool] = { found: Boolean(found), path: found, package: pkg, purpose };
    if (!found) problems.push({ what: `${tool} is missing (${purpose})`, fix: `apt-get install -y ${pkg}` });
  }
  const qemuBinary = tools["qemu-system-x86_64"]?.path ?? null;
  const version = qemuBinary ? await qemuVersion(qemuBinary) : null;
  const kernel = await currentGuestKernel(paths);
  if (!kernel) problems.push({ what: "the guest kernel is not prepared", fix: "pyro env pull debian:12 (or scripts/setup.sh)" });
  const agentPath = await locateAgent();
  const privateRamDiscard = await locatePrivateRamDiscard();
  if (!agentPath) problems.push({ what: `the guest agent is not built (${builtAgentPath()})`, fix: "scripts/setup.sh (builds guest/agent with cargo)" });

  let kvm: DoctorReport["kvm"] = { exists: false, readable: false, writable: false, usable: null, reason: "not checked" };
  let accel: DoctorReport["accel"] = null;
  if (qemuBinary && kernel && agentPath && tools.busybox?.found && tools.cpio?.found) {
    // Kernel and agent exist, so this prepares nothing new: it builds the initramfs if needed and
    // runs (or reads the cached verdict of) the same KVM probe every boot relies on.
    const choice = (await prepareGuestRuntime(paths)).accelerator;
    accel = choice.accel;
    kvm = { ...choice.kvmDevice, usable: choice.accel === "kvm", reason: choice.reason };
  } else {
    kvm.reason = "cannot probe until QEMU, the guest kernel and the agent are ready";
  }

  const store = new EnvironmentStore(paths);
  const environments = (await store.list()).map(({ name, installed, problem }) => ({ name, installed, ...(problem ? { problem } : {}) }));
  for (const env of environments) {
    if (env.problem) problems.push({ what: `environment ${env.name}: ${env.problem}`, fix: `pyro env pull ${env.name}` });
  }
  const defaultEnv = environments.find((e) => e.name === "debian:12");
  if (defaultEnv && !defaultEnv.installed && !defaultEnv.problem)
    problems.push({ what: "the default environment debian:12 is not installed", fix: "pyro env pull debian:12" });

  const vmBoot = Boolean(qemuBinary && kernel && agentPath && accel);
  const memory = await templateMemoryMode(paths);
  return {
    platform: `${platform()}-${arch() === "x64" ? "x86_64" : arch()}`,
    runtime: vmBoot && environments.some((e) => e.installed) ? "PASS" : "FAIL",
    node_version: process.version,
    qemu: { binary: qemuBinary, version },
    kvm,
    accel,
    guest_kernel: { prepared: Boolean(kernel), package: kernel?.package ?? null, release: kernel?.release ?? null },
    guest_agent: { built: Boolean(agentPath), path: agentPath ?? builtAgentPath() },
    tools,
    cache_dir: paths.cacheDir,
    state_dir: paths.stateDir,
    environment_cache: store.rootDir,
    environments,
    // Guest egress is QEMU user-mode networking plus pyro's proxy: nothing more from the host.
    capabilities: { vm_boot: vmBoot, guest_exec: vmBoot, guest_network: vmBoot },
    boot_templates: { memory: memory.mode, detail: templateMemoryDetail(memory, Boolean(kernel?.memoryReturnModule), privateRamDiscard) },
    problems,
  };
}

/** Which memory path VMs take and why, and whether freed guest memory goes back to the host. */
function templateMemoryDetail(memory: TemplateMemoryMode, balloonDriver: boolean, privateRamDiscard: string | undefined): string {
  const driver = balloonDriver ? "" : " once the guest's virtio_balloon driver is prepared";
  if (memory.mode === "shared_file") {
    const shared = `template RAM in ${memory.dir} (/dev/shm is a tmpfs), mapped copy-on-write by every VM restored from it`;
    return privateRamDiscard
      ? `${shared}; freed guest pages go back to the host (virtio-balloon free page reporting; QEMU runs with ${privateRamDiscard}, so it drops its own copies without punching the shared file)${driver}`
      : `${shared}; no free page reporting on those VMs (QEMU would punch the freed pages out of the shared file; host/private-ram-discard is not built: run scripts/setup.sh), networked VMs have it${driver}`;
  }
  return `template RAM streamed into each restore (${memory.reason}); freed guest pages ${balloonDriver ? "go back to the host (virtio-balloon free page reporting)" : "stay with the VM (the guest kernel's virtio_balloon driver is not prepared)"}`;
}
