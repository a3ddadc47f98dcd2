/** Public SDK surface: `import { Pyro } from "pyro-mcp"`. */
export { Pyro, type PyroOptions } from "./pyro.js";
export { PyroError, type PyroErrorCode } from "../errors.js";
export type { RunOptions, RunResult } from "../vm-run/run-result.js";
export type { EnvironmentStatus } from "../environments/environment-store.js";
export type { DoctorReport } from "../doctor/doctor.js";
export type { ProjectSource } from "../workspaces/project-seed.js";
export { CATALOG, DEFAULT_ENVIRONMENT, type EnvironmentSpec } from "../environments/catalog.js";
export type * from "./results.js";
export type { CreateWorkspaceOptions, UpdateWorkspaceOptions, WorkspaceView } from "../workspaces/workspace-lifecycle.js";
export type { WorkspaceExecOptions } from "../workspaces/workspace-exec.js";
export type { Readiness, StartServiceOptions, ServiceView } from "../workspaces/workspace-services.js";
export type { ShellReadOptions } from "../workspaces/workspace-shells.js";
export type { NetworkPolicy, ShellSignal } from "../workspaces/workspace-limits.js";
export { COMMAND_TIMEOUT_MAX_SECONDS, DEFAULT_MACHINE_SHAPE, MACHINE_SHAPE_LIMITS } from "../runtime/guest-limits.js";
