/** Public SDK surface: `import { Pyro } from "pyro-mcp"`. */
export { Pyro, type PyroOptions } from "./pyro.js";
export { PyroError, type PyroErrorCode } from "../errors.js";
export type { RunOptions, RunResult } from "../vm-run/run-result.js";
export type { EnvironmentStatus } from "../environments/environment-store.js";
export type { DoctorReport } from "../doctor/doctor.js";
export type { ProjectSource } from "../workspaces/project-seed.js";
export { CATALOG, DEFAULT_ENVIRONMENT, type EnvironmentSpec } from "../environments/catalog.js";
