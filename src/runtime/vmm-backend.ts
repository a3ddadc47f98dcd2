import type { AgentClient } from "../guest-protocol/agent-client.js";
import type { HelloInfo } from "../guest-protocol/messages.js";

export type Accelerator = "kvm" | "tcg";

/** Everything a VMM needs to start one guest. Backends must not need anything else. */
export interface VmLaunchSpec {
  /** Uncompressed PVH vmlinux. */
  kernelPath: string;
  initramfsPath: string;
  rootDisk: { path: string; format: "qcow2" | "raw"; readOnly?: boolean; cache: "unsafe" | "writeback" };
  /**
   * A second disk the guest finds by its virtio serial (WORKSPACE_DISK_SERIAL) and mounts on
   * /workspace when asked (the agent's workspace.mount). Part of the machine: a state saved with one
   * restores only into a VM with one of the same size.
   */
  workspaceDisk?: { path: string; format: "qcow2" | "raw"; cache: "unsafe" | "writeback" };
  vcpuCount: number;
  memMib: number;
  hostname: string;
  /**
   * No NIC at all, or a NIC with no direct route out: every guest connection to the egress proxy
   * address (10.0.2.100:3128) is handed to `egressServer`, which decides what may pass. The backend
   * runs that program beside the VMM for the VM's whole life, appending `--listen=<unix socket>`
   * (where it accepts one stream per guest connection) and `--lifeline=<unix socket>` (served by
   * the VMM: the program connects there and exits when that connection ends, so it dies with the
   * VM without anyone killing it); it prints `ready` once it listens.
   */
  network: "none" | { egressServer: string[] /** Written to the program's stdin, then closed (values kept in memory only). */; egressInput?: Buffer };
  /** Directory owned by this VM: sockets, console log. Kept short (unix socket paths ≤ 107 bytes). */
  runDir: string;
  /** Per-attempt boot deadline, from VMM start to the agent's first reply. */
  bootTimeoutMs: number;
  /** Kill the VMM if this pyro process dies (one-shot VMs). Workspace VMs outlive the CLI. */
  dieWithParent: boolean;
  /** Remove the whole run directory (disk overlay included) on dispose, for throwaway VMs. */
  ownsRunDir: boolean;
  /**
   * Resume from this saved VM state instead of booting. The machine (devices, memory, vCPUs) must
   * match the one that saved it exactly (runtime-facts G10); only file and socket paths may differ.
   */
  incomingState?: string;
  /**
   * Guest RAM is this file instead of anonymous memory. `share: true` maps it MAP_SHARED (a
   * template VM: its RAM ends up in the file); `share: false` maps it copy-on-write, so many VMs
   * read the same pages and only the pages each one writes become its own. With `incomingState`,
   * the state is taken to hold device state only (saved with `skipSharedMemory`): the RAM is the file.
   */
  memoryFile?: { path: string; share: boolean };
  /**
   * A virtio-balloon device with free page reporting: pages the guest frees go back to the host
   * within seconds. Part of the machine (a saved state restores only where it is the same). With a
   * copy-on-write `memoryFile` (which other VMs map), QEMU discards a reported page by punching a
   * hole in the file itself, zeroing that page under every VM sharing it; the QEMU backend then
   * starts QEMU with host/private-ram-discard, which leaves the file alone so only this VM's
   * private copies go, and refuses the launch where that library is missing.
   */
  freePageReporting?: boolean;
}

export interface SaveStateOptions {
  /** Leave RAM mapped from a shared memory file out of the state (a template save: device state only). */
  skipSharedMemory?: boolean;
}

/** How `saveMappedState` kept the guest's RAM. */
export type SavedMemory =
  /** RAM in its own file (restore with `memoryFile: { path, share: false }` and the device-only state). */
  | { kind: "mapped"; memoryPath: string /** Bytes that were the VM's own pages (the rest is the file it mapped). */; ownBytes: number }
  /** RAM streamed into the state file with the devices (restore with `incomingState` alone), and why. */
  | { kind: "streamed"; reason: string };

/** What another pyro process needs to reach a VM that outlived the process that started it. */
export interface VmHandle {
  pid: number;
  runDir: string;
  accel: Accelerator;
  /**
   * When the VMM process started (clock ticks after boot, /proc/<pid>/stat field 22): with the pid,
   * what tells this process from a later one given the same pid. Absent in handles recorded before.
   */
  startTime?: string;
}

/** A VMM process found or recorded: enough to check, resume or kill it, not to talk to its guest. */
export type VmProcessRef = Pick<VmHandle, "pid" | "runDir" | "startTime">;

export interface VmExit {
  code: number | null;
  signal: string | null;
}

/** A booted guest whose agent has answered. Owns the VMM process and its run directory. */
export interface RunningVm {
  readonly backend: string;
  readonly accel: Accelerator;
  readonly pid: number;
  /** The VMM process's start time (see VmHandle.startTime), where the backend can read it. */
  readonly startTime?: string;
  /** Holds the agent socket (`agent.sock`), QMP socket and console log. */
  readonly runDir: string;
  readonly agent: AgentClient;
  readonly hello: HelloInfo;
  /** Wall time from VMM spawn to the agent's first reply, for the attempt that succeeded. */
  readonly bootMs: number;
  readonly attempts: number;
  /** Resolves when the VMM process exits, for whatever reason. */
  readonly exited: Promise<VmExit>;
  /** The last lines of the guest console, for error messages. */
  consoleTail(maxBytes?: number): Promise<string>;
  /** Kills the VMM (if still running) and removes its files (the run directory if it owns it). Idempotent. */
  dispose(): Promise<void>;
  /**
   * Pauses the guest and writes its state to `path`: memory and devices, or devices only for RAM in
   * a shared memory file when `skipSharedMemory` is set. The guest stays paused.
   */
  saveState(path: string, options?: SaveStateOptions): Promise<void>;
  /**
   * Pauses the guest and saves it so that a restore maps its RAM instead of loading it: device
   * state to `statePath`, RAM to a new sparse file `memoryPath`, the file the VM maps left
   * untouched. Where that cannot be done (anonymous RAM, process memory not readable) it saves as
   * `saveState` does and says why. The guest stays paused.
   */
  saveMappedState(statePath: string, memoryPath: string): Promise<SavedMemory>;
  /** Pauses the guest (its disks stop changing until resume). */
  pause(): Promise<void>;
  /** Resumes a paused guest. */
  resume(): Promise<void>;
  /** Lets the VM outlive this process: no kill on exit, the connection to its agent is closed. */
  detach(): VmHandle;
  /** Forwards 127.0.0.1:hostPort on the host to guestPort in the guest (NIC required). */
  addPortForward(hostPort: number, guestPort: number): Promise<void>;
  removePortForward(hostPort: number): Promise<void>;
}

/** What work on VMs that already run needs of a backend (attach, status, find, stop): everything but a launch. */
export type RunningVmControl = Omit<VmmBackend, "launch">;

/** A way to run microVMs. QEMU microvm now; Firecracker can implement the same contract. */
export interface VmmBackend {
  readonly name: string;
  /** Boots a guest and waits for its agent; retries once on a boot timeout (runtime-facts G1). */
  launch(spec: VmLaunchSpec, signal?: AbortSignal): Promise<RunningVm>;
  /** Reconnects to a detached VM; fails with VM_DIED if it is gone. */
  attach(handle: VmHandle, timeoutMs?: number): Promise<RunningVm>;
  /**
   * Stops a VM gracefully: the guest syncs its disks and powers off; after `graceMs` it is killed
   * (as `kill`, run directory removed).
   */
  stop(vm: RunningVm, graceMs?: number): Promise<void>;
  /**
   * Whether a detached VM is still running (no connection made): the process under its pid is ours,
   * started when the handle says (where it says), and serves its run directory.
   */
  isRunning(handle: VmProcessRef): Promise<boolean>;
  /**
   * Kills a detached VM if the process under its pid is still that VM (pids are reused), waits
   * until it is gone and removes its run directory. Idempotent.
   */
  kill(handle: VmProcessRef): Promise<void>;
  /**
   * Kills a detached VM as `kill` does, but returns once the signal is sent: `gone` settles when
   * the process has exited (rejecting where `kill` would throw). The run directory is left to the
   * caller, who may be starting the VM's successor in it while the kernel tears the old one down.
   */
  killInBackground(handle: VmProcessRef): Promise<{ gone: Promise<void> }>;
  /** The RAM files that running VMs of this backend map (so none is removed from under one). */
  memoryFilesInUse(): Promise<Set<string>>;
  /** Every VM of this backend whose run directory lies directly under `runRoot`, running now. */
  findVms(runRoot: string): Promise<VmProcessRef[]>;
  /**
   * Resumes a detached VM left paused (a state save interrupted by a crash), cancelling a
   * half-done save first. Returns whether it had to.
   */
  resumeIfPaused(handle: VmProcessRef): Promise<boolean>;
}
