import { readdir } from "node:fs/promises";
import { EnvironmentStore, type InstalledEnvironment } from "../environments/environment-store.js";
import { locateAgent } from "../guest-agent/agent-binary.js";
import { currentGuestKernel } from "../guest-kernel/guest-kernel.js";
import { initramfsDir, plannedInitramfs } from "../guest-kernel/initramfs.js";
import { isFile } from "../storage/path-exists.js";
import type { PyroPaths } from "../paths.js";
import { findExecutable } from "../process/host-command.js";
import { prepareGuestRuntime } from "../runtime/guest-runtime.js";
import { anyTemplateSaved, findBootTemplate } from "./boot-templates.js";
import { WORKSPACE_DEFAULTS } from "./workspace-lifecycle.js";

/**
 * warm: present and current, the daily loop uses it as is.
 * cold: absent, the next create builds it (slow).
 * stale: something is there but no longer matches (older build, broken files): it is rebuilt.
 */
export type Readiness = "warm" | "cold" | "stale";

export interface PieceReadiness {
  state: Readiness;
  detail: string;
}

export interface DailyLoopReadiness {
  environment: string;
  /** True when every piece is warm. */
  warm: boolean;
  pieces: {
    environment: PieceReadiness;
    kernel: PieceReadiness;
    initramfs: PieceReadiness;
    template: PieceReadiness;
    network?: PieceReadiness;
  };
}

/**
 * How ready the create → exec → reset loop is for `environment`, piece by piece. Read-only: it
 * builds, downloads and boots nothing (beyond the accelerator probe every runtime needs, whose
 * verdict is cached), so `pyro doctor --environment` can call it freely.
 */
export async function dailyLoopReadiness(paths: PyroPaths, environment: string, options: { network?: boolean } = {}): Promise<DailyLoopReadiness> {
  const store = new EnvironmentStore(paths);
  const spec = await store.spec(environment);
  const status = await store.status(spec);
  const envPiece: PieceReadiness = status.installed
    ? { state: "warm", detail: `installed (built ${status.built_at ?? "unknown"})` }
    : status.problem
      ? { state: "stale", detail: status.problem }
      : { state: "cold", detail: "not installed" };

  const kernel = await currentGuestKernel(paths);
  const kernelPiece: PieceReadiness = kernel ? { state: "warm", detail: `${kernel.package} (${kernel.release})` } : { state: "cold", detail: "not prepared" };

  const agentPath = await locateAgent();
  let initramfsPiece: PieceReadiness;
  if (!kernel || !agentPath) {
    initramfsPiece = { state: "cold", detail: `cannot be built until the ${kernel ? "guest agent" : "guest kernel"} is ready` };
  } else {
    const planned = await plannedInitramfs(paths, kernel, agentPath);
    if (await isFile(planned.path)) initramfsPiece = { state: "warm", detail: planned.path };
    else {
      const others = (await readdir(initramfsDir(paths)).catch(() => [] as string[])).filter((f) => f.endsWith(".cpio"));
      initramfsPiece = others.length
        ? { state: "stale", detail: "only initramfs builds for an older kernel or agent exist" }
        : { state: "cold", detail: "not built" };
    }
  }

  let templatePiece: PieceReadiness;
  if (envPiece.state !== "warm" || kernelPiece.state !== "warm" || initramfsPiece.state !== "warm") {
    templatePiece = {
      state: (await anyTemplateSaved(paths, spec.name, WORKSPACE_DEFAULTS)) ? "stale" : "cold",
      detail: "needs the environment, kernel and initramfs first",
    };
  } else {
    // Everything the runtime needs is present, so this builds nothing.
    const runtime = await prepareGuestRuntime(paths);
    const installed: InstalledEnvironment = await store.require(spec.name);
    const template = await findBootTemplate(paths, runtime, installed, WORKSPACE_DEFAULTS);
    templatePiece = template
      ? { state: "warm", detail: `saved state ${template.key} (${WORKSPACE_DEFAULTS.vcpuCount} vCPU, ${WORKSPACE_DEFAULTS.memMib} MiB)` }
      : (await anyTemplateSaved(paths, spec.name, WORKSPACE_DEFAULTS))
        ? { state: "stale", detail: "saved for an older environment, kernel, initramfs or QEMU build" }
        : { state: "cold", detail: "not built: the next create boots cold and saves one" };
  }

  const pieces: DailyLoopReadiness["pieces"] = { environment: envPiece, kernel: kernelPiece, initramfs: initramfsPiece, template: templatePiece };
  if (options.network) {
    // Guest egress is QEMU user networking joined to pyro's proxy by socat, with the guest's NIC
    // modules in the initramfs: nothing to build, only to be present.
    const socat = findExecutable("socat");
    pieces.network = !socat
      ? { state: "cold", detail: "socat is missing: apt-get install -y socat" }
      : !kernel || kernel.netModules.length === 0
        ? { state: "cold", detail: "the guest kernel's network modules are not prepared" }
        : { state: "warm", detail: `egress via ${socat}` };
  }
  return { environment: spec.name, warm: Object.values(pieces).every((p) => p.state === "warm"), pieces };
}
