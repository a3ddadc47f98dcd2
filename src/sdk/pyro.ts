import { findEnvironment } from "../environments/catalog.js";
import { EnvironmentStore, type EnvironmentStatus } from "../environments/environment-store.js";
import { runDoctor, type DoctorReport } from "../doctor/doctor.js";
import { resolvePaths, type PyroPaths } from "../paths.js";
import { prepareGuestRuntime } from "../runtime/guest-runtime.js";
import { runOneShot } from "../vm-run/one-shot-run.js";
import type { RunOptions, RunResult } from "../vm-run/run-result.js";

export interface PyroOptions {
  /** Put all caches and state under this directory (same as PYRO_HOME). */
  home?: string;
}

/** The pyro SDK: the same operations as the CLI and the MCP tools, returning the same structures. */
export class Pyro {
  readonly paths: PyroPaths;

  constructor(options: PyroOptions = {}) {
    this.paths = resolvePaths(options.home ? { ...process.env, PYRO_HOME: options.home } : process.env);
  }

  /** Runs one command in a disposable microVM and destroys it. `command` is argv (no shell). */
  run(environment: string, command: string[], options: RunOptions = {}): Promise<RunResult> {
    return runOneShot(this.paths, environment, command, options);
  }

  listEnvironments(): Promise<EnvironmentStatus[]> {
    return new EnvironmentStore(this.paths).list();
  }

  inspectEnvironment(name: string): Promise<EnvironmentStatus> {
    return new EnvironmentStore(this.paths).status(findEnvironment(name));
  }

  /** Builds (or repairs) an environment and prepares the guest kernel, agent and initramfs it boots with. */
  async pullEnvironment(name: string, options: { force?: boolean; onProgress?: (message: string) => void } = {}): Promise<EnvironmentStatus> {
    const store = new EnvironmentStore(this.paths);
    findEnvironment(name);
    await prepareGuestRuntime(this.paths, options.onProgress);
    await store.pull(name, options);
    return store.status(findEnvironment(name));
  }

  pruneEnvironments(options: { all?: boolean } = {}): Promise<{ removed: string[] }> {
    return new EnvironmentStore(this.paths).prune(options);
  }

  doctor(): Promise<DoctorReport> {
    return runDoctor(this.paths);
  }
}
