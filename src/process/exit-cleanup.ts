/**
 * Last-resort cleanup for resources that must not outlive pyro (one-shot VMM processes, their run
 * directories). Owners register a synchronous `onExit` and an async `onSignal`; every exit path —
 * normal exit, uncaught error, and (with handleTerminationSignals) SIGINT, SIGTERM, SIGHUP — runs them.
 */
interface CleanupEntry {
  /** Synchronous: runs inside process 'exit', where nothing async completes. */
  onExit: () => void;
  /** Asynchronous, graceful version used on signals. */
  onSignal: () => Promise<void>;
}

const entries = new Set<CleanupEntry>();
let installed = false;

const SIGNAL_EXIT_CODES: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };

function install(): void {
  if (installed) return;
  installed = true;
  process.on("exit", () => {
    for (const entry of entries) {
      try {
        entry.onExit();
      } catch {
        // keep going: the other entries still need their cleanup
      }
    }
  });
}

let signalsHandled = false;

/**
 * Makes SIGINT/SIGTERM/SIGHUP run the graceful cleanup, then exit with 128+signal. For programs
 * (the CLI, the MCP server); a library embedding the SDK keeps its own signal handling.
 */
export function handleTerminationSignals(): void {
  if (signalsHandled) return;
  signalsHandled = true;
  for (const signal of Object.keys(SIGNAL_EXIT_CODES) as NodeJS.Signals[]) {
    process.on(signal, () => {
      // A second signal while cleaning up exits at once ('exit' handlers still run).
      if (cleaningUp) process.exit(SIGNAL_EXIT_CODES[signal]);
      cleaningUp = true;
      const all = [...entries].map((e) => e.onSignal().catch(() => undefined));
      void Promise.race([Promise.all(all), new Promise((r) => setTimeout(r, 5_000).unref())]).then(() => process.exit(SIGNAL_EXIT_CODES[signal]));
    });
  }
}

let cleaningUp = false;

/** True once a termination signal started the cleanup: nothing new (like a boot retry) should start. */
export function shuttingDown(): boolean {
  return cleaningUp;
}

/** Registers cleanup; returns a function that unregisters it (call it after a normal dispose). */
export function registerExitCleanup(onExit: () => void, onSignal: () => Promise<void>): () => void {
  install();
  const entry = { onExit, onSignal };
  entries.add(entry);
  return () => entries.delete(entry);
}
