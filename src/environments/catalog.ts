import { PyroError } from "../errors.js";

/** A curated environment: a Debian release plus packages, built locally into a read-only ext4 image. */
export interface EnvironmentSpec {
  readonly name: string;
  /** Bumped whenever the recipe changes, so stale images are rebuilt. */
  readonly version: string;
  readonly description: string;
  readonly suite: string;
  readonly packages: readonly string[];
}

const COMMON = ["git", "ca-certificates", "python3", "curl", "procps"] as const;

export const CATALOG: readonly EnvironmentSpec[] = [
  {
    name: "debian:12",
    version: "1.0.0",
    description: "Debian 12 with git, python3, curl and ca-certificates: the default for coding agents.",
    suite: "bookworm",
    packages: COMMON,
  },
  {
    name: "debian:12-base",
    version: "1.0.0",
    description: "Minimal Debian 12 (minbase) for shell and core Unix tooling.",
    suite: "bookworm",
    packages: [],
  },
  {
    name: "debian:12-build",
    version: "1.0.0",
    description: "Debian 12 with git, python3 and build tools (build-essential, make, pkg-config).",
    suite: "bookworm",
    packages: [...COMMON, "build-essential", "make", "pkg-config"],
  },
];

export const DEFAULT_ENVIRONMENT = "debian:12";

export function findEnvironment(name: string): EnvironmentSpec {
  const spec = CATALOG.find((e) => e.name === name);
  if (!spec) {
    throw new PyroError("ENVIRONMENT_UNKNOWN", `unknown environment '${name}'; available: ${CATALOG.map((e) => e.name).join(", ")} (see 'pyro env list')`, {
      environment: name,
    });
  }
  return spec;
}

/**
 * The one rule for environment names pyro creates (imports, pulls, `--as`): they name a directory
 * under the cache, so they start with a letter or digit (never '.' or '..') and stay short.
 */
const ENVIRONMENT_NAME = /^[a-z0-9][a-z0-9._:-]{0,62}$/;

/** Returns `name` when it follows the environment name rule; else a clear INVALID_ARGUMENT naming `origin`. */
export function requireEnvironmentName(name: string, origin = "the environment name"): string {
  if (ENVIRONMENT_NAME.test(name)) return name;
  throw new PyroError(
    "INVALID_ARGUMENT",
    `invalid environment name '${name.slice(0, 80)}' (${origin}): use up to 63 lowercase letters, digits, '.', '_', ':' and '-', starting with a letter or digit`,
  );
}

/** Directory-safe form of an environment name ("debian:12" → "debian_12"); never '', '.' or '..'. */
export function environmentSlug(name: string): string {
  const slug = name.replace(/[^A-Za-z0-9._-]/g, "_");
  // Store paths join the slug under the cache: '.'/'..' would name the cache itself or its parent.
  if (slug === "" || slug === "." || slug === "..") throw new PyroError("INVALID_ARGUMENT", `invalid environment name '${name}': it names no directory`);
  return slug;
}
