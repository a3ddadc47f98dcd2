/**
 * The VM lifecycle and the guest protocol each live behind one contract, so a second backend can
 * implement them: only src/guest-protocol sends raw agent requests (everyone else calls AgentClient's
 * typed methods), and only src/runtime looks a VM's process up in /proc or signals it (everyone else
 * calls VmmBackend). A source scan: a call that bypasses the contract fails here by file and line.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, it } from "node:test";

const ROOT = join(import.meta.dirname, "..", "..");
const SRC = join(ROOT, "src");

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sources(path);
    return entry.name.endsWith(".ts") ? [path] : [];
  });
}

interface Hit {
  file: string;
  line: number;
  text: string;
}

/** Lines of files outside `allowedUnder` (src-relative folders) matching `pattern`, comments skipped. */
function offenders(pattern: RegExp, allowedUnder: string[], allowed: (hit: Hit) => boolean = () => false): Hit[] {
  const hits: Hit[] = [];
  for (const path of sources(SRC)) {
    const file = relative(ROOT, path);
    if (allowedUnder.some((dir) => file.startsWith(`src/${dir}/`))) continue;
    readFileSync(path, "utf8")
      .split("\n")
      .forEach((text, index) => {
        const code = text.trim();
        if (code.startsWith("//") || code.startsWith("*") || code.startsWith("/*")) return;
        const hit = { file, line: index + 1, text: code };
        if (pattern.test(text) && !allowed(hit)) hits.push(hit);
      });
  }
  return hits;
}

const RAW_AGENT_REQUEST = /\bagent\s*\??\.\s*request\s*\(/;
const CMDLINE_READ = /\/proc\/\$\{[^}]*\}\/cmdline|\/proc\/["'`]\s*\+/;
const SIGNAL = /process\.kill\s*\(/;

const show = (hits: Hit[]) => hits.map((h) => `${h.file}:${h.line}: ${h.text}`).join("\n");

describe("lifecycle boundaries", () => {
  it("only src/guest-protocol sends raw agent requests; callers use AgentClient's typed methods", () => {
    const hits = offenders(RAW_AGENT_REQUEST, ["guest-protocol"]);
    assert.equal(hits.length, 0, `raw agent.request outside src/guest-protocol (add a typed AgentClient method):\n${show(hits)}`);
  });

  it("only src/runtime reads a process's /proc/<pid>/cmdline", () => {
    // The egress server's pid (not a VM) is checked the same way by the connection budget that started it.
    const hits = offenders(CMDLINE_READ, ["runtime"], (h) => h.file === "src/network/connection-budget.ts");
    assert.equal(hits.length, 0, `/proc/<pid>/cmdline read outside src/runtime (ask VmmBackend):\n${show(hits)}`);
  });

  it("outside src/runtime, signals go only to children the module spawned itself (or probe liveness)", () => {
    const ownChild = /process\.kill\(\s*-?child\.pid\b/;
    const livenessProbe = /process\.kill\(\s*pid\s*,\s*0\s*\)/;
    const hits = offenders(SIGNAL, ["runtime"], (h) => ownChild.test(h.text) || (h.file === "src/process/process-alive.ts" && livenessProbe.test(h.text)));
    assert.equal(
      hits.length,
      0,
      `a signal sent outside src/runtime to a process that is not the module's own child (kill VMs through VmmBackend.kill):\n${show(hits)}`,
    );
  });

  it("the scan sees the code it guards (a scan that finds nothing proves nothing)", () => {
    assert.ok(RAW_AGENT_REQUEST.test('const { header } = await vm.agent.request("service.list");'));
    assert.ok(
      offenders(CMDLINE_READ, []).some((h) => h.file.startsWith("src/runtime/")),
      "finds src/runtime's cmdline reads",
    );
    assert.ok(
      offenders(SIGNAL, []).some((h) => h.file.startsWith("src/runtime/")),
      "finds src/runtime's signals",
    );
    assert.ok(
      sources(SRC).some((path) => relative(SRC, path).startsWith("workspaces/")),
      "scans src/workspaces",
    );
  });
});
