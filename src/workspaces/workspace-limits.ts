/**
 * Workspace defaults and bounds, declared once. A leaf module (no imports) so the CLI's option
 * parsers and the MCP tool schemas can read them without loading the workspace code itself.
 */

/** A workspace's network: off (no NIC), egress through pyro's proxy, or egress plus published ports. */
export const NETWORK_POLICIES = ["off", "egress", "egress+published-ports"] as const;
export type NetworkPolicy = (typeof NETWORK_POLICIES)[number];

export const WORKSPACE_EXEC_DEFAULTS = { timeoutSeconds: 120, maxOutputBytes: 1 << 20 } as const;

/** How much of a file a read shows when the caller names no limit (live and offline reads alike), and the most it may ask for. */
export const FILE_READ_DEFAULT_MAX_BYTES = 65_536;
export const FILE_READ_MAX_BYTES = 64 * 1024 * 1024;

/** Shell reads: a page's default size, and the longest a read may wait for the shell to go quiet. */
export const SHELL_READ_DEFAULTS = { maxChars: 65_536, maxCharsLimit: 1 << 20, waitForIdleMaxMs: 30_000 } as const;

/** The signals a shell's foreground job can be sent. */
export const SHELL_SIGNALS = ["INT", "TERM", "KILL", "HUP"] as const;
export type ShellSignal = (typeof SHELL_SIGNALS)[number];

/** Service readiness and log defaults (log tail: the contract's 20 lines of each stream). */
export const SERVICE_DEFAULTS = { readyTimeoutSeconds: 30, readyTimeoutMaxSeconds: 3600, readyIntervalMs: 500, tailLines: 20 } as const;

/** The /workspace disk's size in GiB: default, and the range --disk-gib / disk_gib accepts. */
export const WORKSPACE_DISK_GIB = { default: 4, min: 1, max: 1024 } as const;

/**
 * The guest's walk of a /workspace tree (agent op `tree.manifest`), which diff and export parse on
 * the host: at most this many bytes (~500k entries), and at most this many entries, whatever their
 * size, so a hostile guest cannot make the host hold millions of tiny records. Seeds are held to
 * the same count, so every tree pyro builds can also be diffed and exported.
 */
export const TREE_MANIFEST_LIMITS = { bytes: 64 * 1024 * 1024, entries: 500_000 } as const;

/**
 * Tar header bytes one export writes at most. A tree at the entry limit above with ordinary names
 * needs 256 MiB (512 bytes an entry); long names and link targets add pax records. Without a
 * bound, a guest's ~10 MB of directory entries (hardlinks or names deep under a 4 KiB path) would
 * become ~5 GB of headers, each entry repeating its whole path.
 */
export const EXPORT_HEADER_BYTES = 512 * 1024 * 1024;

/** How many changed files one diff result lists (and, with the patch, formats), and how big a page's patch may grow. */
export const DIFF_PAGE_LIMITS = {
  summaryFiles: 1000,
  patchFiles: 100,
  /** A patch page stops after the file that takes it past this; the rest is the next page. */
  patchBytes: 256 * 1024,
  /** Files larger than this are shown as "binary" (their bytes are not pulled to diff them). */
  fileBytes: 4 * 1024 * 1024,
} as const;

/** `workspace fork`: how many copies one call makes (each is a running VM). */
export const FORK_COUNT = { default: 1, min: 1, max: 8 } as const;

/**
 * The longest pyro keeps a guest's /workspace frozen to copy its disk (frozen-disk-view.ts): the
 * copy is stopped past it, and the VM paused for it instead. The agent has its own cap for a host
 * that never thaws (guest/agent/src/freeze.rs).
 */
export const FROZEN_COPY_HOLD_MS = 10_000;
