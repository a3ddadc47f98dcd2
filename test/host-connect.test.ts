import assert from "node:assert/strict";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import { parse } from "smol-toml";
import { isPyroError } from "../src/errors.js";
import { spawnSync } from "node:child_process";
import { readFileSync, realpathSync } from "node:fs";
import { connectHost, doctorHosts, repairHost } from "../src/hosts/host-connect.js";
import { CLI } from "./helpers/vm-fixtures.js";
import { suiteTempDir } from "./helpers/suite-temp-dir.js";

describe("pyro host connect / doctor / repair", () => {
  const home = suiteTempDir("pyro-hosts-");
  let env: NodeJS.ProcessEnv;
  before(async () => {
    env = { HOME: home() };
  });

  it("adds pyro to Claude Code's config once, keeping the user's other servers and settings", async () => {
    const path = join(home(), ".claude.json");
    await writeFile(path, JSON.stringify({ theme: "dark", mcpServers: { other: { type: "stdio", command: "other", args: [] } } }));
    assert.equal((await connectHost("claude-code", { env })).status, "added");
    assert.equal((await connectHost("claude-code", { env })).status, "unchanged");
    const config = JSON.parse(await readFile(path, "utf8"));
    assert.equal(config.theme, "dark");
    assert.deepEqual(Object.keys(config.mcpServers).sort(), ["other", "pyro"]);
    assert.deepEqual(config.mcpServers.pyro.args.slice(-2), ["mcp", "serve"]);
    assert.equal((await connectHost("claude-code", { env, mode: "inspect" })).status, "updated");
  });

  it("edits Codex's TOML as text: comments and other servers survive", async () => {
    await mkdir(join(home(), ".codex"));
    const path = join(home(), ".codex", "config.toml");
    await writeFile(
      path,
      '# my settings\nmodel = "o3"\n\n[mcp_servers.pyro]\ncommand = "stale"\n\n[mcp_servers.pyro.env]\nX = "1"\n\n[mcp_servers.other] # keep\ncommand = "other"\n',
    );
    assert.equal((await connectHost("codex", { env, style: "npx" })).status, "updated");
    const text = await readFile(path, "utf8");
    assert.match(text, /^# my settings$/m);
    assert.match(text, /\[mcp_servers\.other\] # keep/);
    const parsed = parse(text) as { mcp_servers: Record<string, { command: string; args?: string[]; env?: unknown }> };
    assert.deepEqual(JSON.parse(JSON.stringify(parsed.mcp_servers.pyro)), { command: "npx", args: ["-y", "pyro-mcp", "mcp", "serve"] });
    assert.equal(parsed.mcp_servers.other?.command, "other");
    assert.equal((await connectHost("codex", { env, style: "npx" })).status, "unchanged");
  });

  it("refuses to rewrite a config it cannot parse", async () => {
    await mkdir(join(home(), ".config", "opencode"), { recursive: true });
    const path = join(home(), ".config", "opencode", "opencode.json");
    await writeFile(path, "{ not json");
    await assert.rejects(connectHost("opencode", { env }), (e) => isPyroError(e, "INVALID_ARGUMENT") && /will not overwrite/.test(e.message));
    assert.equal(await readFile(path, "utf8"), "{ not json");
    await writeFile(path, JSON.stringify({ mcp: { mine: { type: "local", command: ["x"] } } }));
    await connectHost("opencode", { env });
    const config = JSON.parse(await readFile(path, "utf8"));
    assert.deepEqual(Object.keys(config.mcp).sort(), ["mine", "pyro"]);
  });

  it("doctor finds a broken entry and repair fixes it, keeping the mode", async () => {
    const path = join(home(), ".claude.json");
    const config = JSON.parse(await readFile(path, "utf8"));
    config.mcpServers.pyro = { type: "stdio", command: "/nonexistent/node", args: ["/gone/main.js", "mcp", "serve", "--mode", "inspect"] };
    await writeFile(path, JSON.stringify(config));
    const broken = (await doctorHosts(env)).find((e) => e.host === "claude-code")!;
    assert.equal(broken.configured, true);
    assert.match(broken.problems.join("\n"), /pyro host repair claude-code/);
    assert.equal((await repairHost("claude-code", env)).status, "updated");
    const fixed = (await doctorHosts(env)).find((e) => e.host === "claude-code")!;
    assert.deepEqual(fixed.problems, []);
    assert.deepEqual(fixed.command?.args.slice(-2), ["--mode", "inspect"]);
    assert.equal(fixed.mode, "inspect");
  });

  it("doctor --mode names an entry that serves another mode, with the command that fixes it", async () => {
    const wrong = (await doctorHosts(env, "repro-fix")).find((e) => e.host === "claude-code")!;
    assert.deepEqual(wrong.problems, ["the entry serves mode inspect, not mode repro-fix; fix with: pyro host connect claude-code --mode repro-fix"]);
    assert.deepEqual((await doctorHosts(env, "inspect")).find((e) => e.host === "claude-code")!.problems, []);
    const cli = spawnSync(process.execPath, [CLI, "host", "doctor", "--mode", "repro-fix"], { encoding: "utf8", env: { ...process.env, HOME: home() } });
    assert.equal(cli.status, 1);
    assert.match(cli.stdout, /claude-code: BROKEN \(.*, mode inspect\)\n {2}- the entry serves mode inspect, not mode repro-fix/);
    const bad = spawnSync(process.execPath, [CLI, "host", "doctor", "--mode", "nope"], { encoding: "utf8", env: { ...process.env, HOME: home() } });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /nope/);
  });

  it("carries --project-path / --repo-url into the host's command, absolute, and repair keeps them", async () => {
    const pyro = (...args: string[]) =>
      spawnSync(process.execPath, [CLI, "host", ...args], { encoding: "utf8", cwd: home(), env: { ...process.env, HOME: home() } });
    await mkdir(join(home(), "app"), { recursive: true });
    const connected = pyro("connect", "codex", "--mode", "repro-fix", "--project-path", "app");
    assert.equal(connected.status, 0, connected.stderr);
    const args = () =>
      (parse(readFileSync(join(home(), ".codex", "config.toml"), "utf8")) as { mcp_servers: { pyro: { args: string[] } } }).mcp_servers.pyro.args;
    const expected = ["mcp", "serve", "--mode", "repro-fix", "--project-path", realpathSync(join(home(), "app"))];
    assert.deepEqual(args().slice(-6), expected);
    assert.equal(pyro("repair", "codex").status, 0);
    assert.deepEqual(args().slice(-6), expected, "repair keeps the mode and the project");
    const printed = pyro("print-config", "codex", "--repo-url", "https://example.com/app.git", "--repo-ref", "v1");
    assert.match(printed.stdout, /"--repo-url", "https:\/\/example.com\/app.git", "--repo-ref", "v1"/);
    const bad = pyro("connect", "codex", "--repo-ref", "v1");
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--repo-ref needs --repo-url/);
  });
});
