/** Profile and mode names alone, so the CLI can offer them without loading every tool module. */
export const PROFILE_NAMES = ["vm-run", "workspace-core", "workspace-full"] as const;
export const MODE_NAMES = ["repro-fix", "inspect", "cold-start", "review-eval"] as const;
export type ProfileName = (typeof PROFILE_NAMES)[number];
export type ModeName = (typeof MODE_NAMES)[number];
export const DEFAULT_PROFILE: ProfileName = "workspace-core";
