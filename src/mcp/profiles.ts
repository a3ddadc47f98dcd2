import { TOOL_CATALOG, type ToolName } from "./catalog.js";
import { DEFAULT_PROFILE, PROFILE_NAMES, type ModeName, type ProfileName } from "./profile-names.js";
import type { Surface } from "./tool-definition.js";

export { DEFAULT_PROFILE, type ModeName, type ProfileName } from "./profile-names.js";

export interface ToolSet {
  tools: readonly ToolName[];
  surface: Surface;
  /** Mode-specific wording for tools whose job differs in that workflow. */
  descriptions?: Partial<Record<ToolName, string>>;
}

const NARROW: Surface = { snapshots: false, machineShape: false, secretsAndNetwork: false };
const WIDE: Surface = { snapshots: true, machineShape: true, secretsAndNetwork: true };

/** What each profile exposes beyond its tools: only workspace-full widens the schemas. */
const PROFILE_SURFACES: Record<ProfileName, Surface> = { "vm-run": NARROW, "workspace-core": NARROW, "workspace-full": WIDE };

/** The catalogue's tools a profile serves: profiles nest, each tool names the smallest one that has it. */
function profileTools(profile: ProfileName): ToolName[] {
  const rank = PROFILE_NAMES.indexOf(profile);
  return TOOL_CATALOG.filter((tool) => PROFILE_NAMES.indexOf(tool.profile) <= rank).map((tool) => tool.name);
}

/** The profiles, derived from the catalogue. */
export const PROFILES: Record<ProfileName, ToolSet> = {
  "vm-run": { tools: profileTools("vm-run"), surface: PROFILE_SURFACES["vm-run"] },
  "workspace-core": { tools: profileTools("workspace-core"), surface: PROFILE_SURFACES["workspace-core"] },
  "workspace-full": { tools: profileTools("workspace-full"), surface: PROFILE_SURFACES["workspace-full"] },
};

/** Workflow modes: a narrowed tool set and wording for one recipe each (a curated choice, so data). */
export const MODES = {
  "repro-fix": {
    tools: [
      "workspace_create",
      "workspace_list",
      "workspace_update",
      "workspace_status",
      "workspace_exec",
      "workspace_logs",
      "workspace_file_list",
      "workspace_file_read",
      "workspace_file_write",
      "workspace_patch_apply",
      "workspace_diff",
      "workspace_export",
      "workspace_reset",
      "workspace_delete",
    ],
    surface: NARROW,
    descriptions: {
      workspace_create:
        "Start the repro-fix loop: create a workspace seeded with the project (the server's checkout unless you pass seed_path). Next: workspace_exec to reproduce the failure.",
      workspace_exec: "Reproduce the failure or re-run the tests in the workspace (cwd /workspace). After a fix, run the same command again to confirm.",
      workspace_patch_apply:
        "Apply your fix as a unified diff; if a hunk does not apply nothing changes. Next: workspace_exec to re-run the failing test, then workspace_diff.",
    },
  },
  inspect: {
    tools: [
      "workspace_create",
      "workspace_status",
      "workspace_file_list",
      "workspace_file_read",
      "workspace_exec",
      "workspace_logs",
      "workspace_export",
      "workspace_delete",
    ],
    surface: NARROW,
    descriptions: {
      workspace_create:
        "Create an offline, isolated workspace holding the untrusted code to inspect (seed_path). It has no network. Next: workspace_file_list.",
      workspace_exec:
        "Run an inspection command on the untrusted code (grep, file, strings…). The workspace has no network and nothing leaves it unless you export it.",
    },
  },
  "cold-start": {
    tools: [
      "workspace_create",
      "workspace_status",
      "workspace_exec",
      "workspace_logs",
      "workspace_file_list",
      "workspace_file_read",
      "workspace_file_write",
      "workspace_export",
      "workspace_reset",
      "workspace_delete",
      "service_start",
      "service_status",
      "service_logs",
      "service_stop",
    ],
    surface: { snapshots: false, machineShape: true, secretsAndNetwork: true },
    descriptions: {
      workspace_create:
        "Create a workspace from a fresh copy of the project (the server's checkout unless you pass seed_path) to validate that it builds and its tests pass from scratch. Next: workspace_exec with the setup steps.",
    },
  },
  "review-eval": {
    tools: [
      "workspace_create",
      "workspace_status",
      "workspace_exec",
      "workspace_logs",
      "workspace_file_read",
      "workspace_diff",
      "workspace_summary",
      "snapshot_create",
      "snapshot_list",
      "workspace_reset",
      "workspace_export",
      "workspace_delete",
      "shell_open",
      "shell_read",
      "shell_write",
      "shell_close",
    ],
    surface: { snapshots: true, machineShape: false, secretsAndNetwork: false },
    descriptions: {
      snapshot_create: "Checkpoint the workspace before each evaluation step, so every candidate is judged from the same state.",
      workspace_summary: "Summarise the evaluation: commands run, failures, files changed since creation. Use it to write the review.",
    },
  },
} as const satisfies Record<ModeName, ToolSet>;

/** The tool set served: a mode when given (its own narrowed set), else the profile. */
export function resolveToolSet(profile: ProfileName = DEFAULT_PROFILE, mode?: ModeName): ToolSet {
  return mode ? MODES[mode] : PROFILES[profile];
}
