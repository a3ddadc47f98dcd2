import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { mkdtemp, open, readFile, rm, stat, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { Pyro } from "../src/sdk/pyro.js";
import { testPaths } from "./helpers/vm-fixtures.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 240_000 };
const SECRET = "pyro-test-secret-9f8e7d";

describe("[vm] workspace-full: shells, services, secrets, network, disk tools", () => {
  let id: string;
  let scratch: string;
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "pyro-full-"));
    id = (await pyro.createWorkspace("debian:12", { secrets: { API_KEY: SECRET } })).workspace_id;
  });
  after(async () => {
    await pyro.deleteWorkspace(id).catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  });

  /** Reads from `cursor` until the plain output matches (programs start slowly under TCG). */
  async function readUntil(shellId: string, cursor: number, pattern: RegExp) {
    let output = "";
    let next = cursor;
    const deadline = Date.now() + 60_000;
    while (!pattern.test(output)) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${pattern}; got ${JSON.stringify(output)}`);
      const r = await pyro.readShell(id, shellId, { cursor: next, waitForIdleMs: 300 });
      output += r.output;
      next = r.next_cursor;
    }
    return { output: (await pyro.readShell(id, shellId, { cursor, plain: true, maxChars: next - cursor })).output, next_cursor: next };
  }

  it("runs python3 interactively in a PTY shell, pages output by cursor, and interrupts it", TIMEOUT, async () => {
    const shell = await pyro.openShell(id);
    assert.equal(shell.running, true);
    await pyro.writeShell(id, shell.shell_id, "python3 -q");
    let r = await readUntil(shell.shell_id, 0, />>> $/);
    await pyro.writeShell(id, shell.shell_id, "print(6 * 7)");
    r = await readUntil(shell.shell_id, r.next_cursor, /42\r?\n>>> $/);
    assert.match(r.output, /^42$/m);
    await pyro.writeShell(id, shell.shell_id, "import time; time.sleep(300)");
    await new Promise((res) => setTimeout(res, 500));
    await pyro.signalShell(id, shell.shell_id, "INT");
    r = await readUntil(shell.shell_id, r.next_cursor, /KeyboardInterrupt[\s\S]*>>> $/);
    // Paging: a small max_chars leaves the rest for the next read.
    const first = await pyro.readShell(id, shell.shell_id, { cursor: 0, maxChars: 10 });
    assert.equal(first.output.length, 10);
    assert.equal(first.more, true);
    const second = await pyro.readShell(id, shell.shell_id, { cursor: first.next_cursor, maxChars: 10 });
    assert.equal(second.cursor, 10);
    await pyro.writeShell(id, shell.shell_id, "exit()");
    await pyro.writeShell(id, shell.shell_id, "printf '\\033[1;31mred\\033[0m\\n'");
    const colored = await pyro.readShell(id, shell.shell_id, { cursor: r.next_cursor, waitForIdleMs: 500 });
    const plain = await pyro.readShell(id, shell.shell_id, { cursor: r.next_cursor, plain: true });
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the escape sequence is what this checks
    assert.match(colored.output, /\u001b\[1;31mred/);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the escape sequence is what this checks
    assert.doesNotMatch(plain.output, /\u001b/);
    assert.match(plain.output, /^red$/m);
    const closed = await pyro.closeShell(id, shell.shell_id);
    assert.equal(closed.running, false);
    await assert.rejects(pyro.readShell(id, shell.shell_id), (e) => isPyroError(e, "GUEST_OPERATION_FAILED") && /no shell/.test(e.message));
  });

  it("starts services with readiness, reports deaths and timeouts, and stops them", TIMEOUT, async () => {
    // Ready when it answers HTTP (a ready file touched before the server binds would race the probe below).
    const web = await pyro.startService(id, "web", ["sh", "-c", "echo booting; sleep 1; exec python3 -m http.server 8000"], {
      readiness: { type: "http", url: "http://127.0.0.1:8000/" },
    });
    assert.equal(web.state, "running");
    const probe = await pyro.execWorkspace(id, ["python3", "-c", "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/').status)"]);
    assert.equal(probe.stdout, "200\n", "the service keeps running between execs");
    const logs = await pyro.logsService(id, "web");
    assert.match(logs.stdout, /booting/);
    const list = await pyro.listServices(id);
    assert.equal(list.running_count, 1);

    const started = Date.now();
    await assert.rejects(
      pyro.startService(id, "never", ["sleep", "600"], { readiness: { type: "tcp", port: 9999 }, readyTimeoutSeconds: 2, readyIntervalMs: 200 }),
      (e) => isPyroError(e, "SERVICE_NOT_READY") && /within 2 s/.test(e.message) && /stopped/.test(e.message),
    );
    assert.ok(Date.now() - started < 20_000);
    await assert.rejects(
      pyro.startService(id, "crash", ["sh", "-c", "echo 'fatal: no config' >&2; exit 3"], { readiness: { type: "http", url: "http://127.0.0.1:8001/" } }),
      (e) => isPyroError(e, "SERVICE_EXITED") && /code 3/.test(e.message) && /fatal: no config/.test(e.message),
    );
    const stopped = await pyro.stopService(id, "web");
    assert.equal(stopped.state, "stopped");
    assert.equal(stopped.exit_code, 143);
  });

  it("never shows a secret: exec, logs, shells, service logs, files, diff and exports are redacted", TIMEOUT, async () => {
    const r = await pyro.execWorkspace(id, ["sh", "-c", "echo key=$MY_KEY; cp /run/pyro-secrets/API_KEY leaked.txt; cat leaked.txt"], {
      secretEnv: ["API_KEY=MY_KEY"],
    });
    assert.equal(r.stdout, "key=[REDACTED]\n[REDACTED]");
    assert.doesNotMatch(JSON.stringify(await pyro.logsWorkspace(id)), new RegExp(SECRET));
    assert.equal((await pyro.readWorkspaceFile(id, "leaked.txt")).content, "[REDACTED]");
    assert.doesNotMatch((await pyro.diffWorkspace(id)).patch, new RegExp(SECRET));
    await pyro.startService(id, "echoer", ["sh", "-c", "echo $API_KEY; touch .echoed; sleep 600"], {
      secretEnv: ["API_KEY"],
      readiness: { type: "file", path: ".echoed" },
    });
    assert.match((await pyro.logsService(id, "echoer")).stdout, /\[REDACTED\]/);
    const shell = await pyro.openShell(id, { secretEnv: ["API_KEY"] });
    await pyro.writeShell(id, shell.shell_id, "echo $API_KEY");
    assert.doesNotMatch((await pyro.readShell(id, shell.shell_id, { waitForIdleMs: 500 })).output, new RegExp(SECRET));
    await pyro.exportWorkspace(id, "leaked.txt", join(scratch, "leaked.txt"));
    assert.equal(await readFile(join(scratch, "leaked.txt"), "utf8"), "[REDACTED]");
    const dir = join(testPaths.stateDir, "workspaces", id);
    assert.equal((await stat(join(dir, "secrets.json"))).mode & 0o777, 0o600);
    for (const file of ["workspace.json", "commands.jsonl"]) assert.doesNotMatch(await readFile(join(dir, file), "utf8"), new RegExp(SECRET), file);
    await assert.rejects(pyro.execWorkspace(id, ["true"], { secretEnv: ["NOPE"] }), (e) => isPyroError(e, "INVALID_ARGUMENT") && /API_KEY/.test(e.message));
  });

  it("reads a stopped workspace's disk offline, and marks services lost after a restart", TIMEOUT, async () => {
    await pyro.writeWorkspaceFile(id, "docs/offline.txt", "read without booting\n");
    await pyro.execWorkspace(id, ["ln", "-s", "/", "/workspace/rootlink"]);
    // A guest process can put the secret it holds into a name: listings redact names too.
    await pyro.execWorkspace(id, ["sh", "-c", 'touch "/workspace/docs/name-$(cat /run/pyro-secrets/API_KEY)"']);
    await assert.rejects(pyro.listWorkspaceDisk(id), (e) => isPyroError(e, "WORKSPACE_RUNNING"));
    await pyro.stopWorkspace(id);
    // Offline paths are confined like live ones: no quoting tricks, no guest symlinks followed.
    const noShadow = (e: unknown) => isPyroError(e) && !/root:/.test(e.message);
    await assert.rejects(pyro.readWorkspaceDisk(id, '.."/etc/shadow"'), noShadow);
    await assert.rejects(pyro.readWorkspaceDisk(id, "rootlink/etc/shadow"), (e) => isPyroError(e, "PATH_OUTSIDE_WORKSPACE") && /symbolic link/.test(e.message));
    await assert.rejects(pyro.listWorkspaceDisk(id, "rootlink/etc"), (e) => isPyroError(e, "PATH_OUTSIDE_WORKSPACE"));
    const listing = await pyro.listWorkspaceDisk(id, ".", { recursive: true });
    assert.ok(
      listing.entries.some((e) => e.path === "docs/offline.txt" && e.type === "file"),
      JSON.stringify(listing.entries),
    );
    assert.ok(
      listing.entries.some((e) => e.path === "docs/name-[REDACTED]"),
      JSON.stringify(listing.entries),
    );
    assert.doesNotMatch(JSON.stringify(listing), new RegExp(SECRET));
    const file = await pyro.readWorkspaceDisk(id, "docs/offline.txt");
    assert.equal(file.content, "read without booting\n");
    assert.equal((await pyro.readWorkspaceDisk(id, "leaked.txt")).content, "[REDACTED]");
    // A symlink at the output (here dangling) is refused, its target never created.
    await symlink(join(scratch, "disk-canary"), join(scratch, "linked.img"));
    await assert.rejects(
      pyro.exportWorkspaceDisk(id, join(scratch, "linked.img")),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && /already exists/.test(e.message),
    );
    await assert.rejects(stat(join(scratch, "disk-canary")), { code: "ENOENT" });
    const image = join(scratch, "disk.img");
    await pyro.exportWorkspaceDisk(id, image);
    const h = await open(image, "r");
    const magic = Buffer.alloc(2);
    await h.read(magic, 0, 2, 1080);
    await h.close();
    assert.equal(magic.readUInt16LE(0), 0xef53, "a raw ext4 image");
    assert.equal((await pyro.statusWorkspace(id)).state, "stopped", "nothing booted");
    await pyro.startWorkspace(id);
    const services = await pyro.listServices(id);
    assert.deepEqual(
      services.services.map((s) => `${s.name}:${s.state}`),
      ["echoer:lost", "web:stopped"],
    );
    assert.equal((await pyro.execWorkspace(id, ["cat", "/run/pyro-secrets/API_KEY"])).stdout, "[REDACTED]", "secrets are back after a cold start");
  });
});

describe("[vm] workspace network policies", () => {
  let hostServer: Server;
  let hostPort: number;
  const created: string[] = [];
  before(async () => {
    hostServer = createServer((_req, res) => res.end("host-secret-service"));
    await new Promise<void>((r) => hostServer.listen(0, "127.0.0.1", () => r()));
    hostPort = (hostServer.address() as { port: number }).port;
  });
  after(async () => {
    hostServer.close();
    for (const ws of created) await pyro.deleteWorkspace(ws).catch(() => undefined);
  });
  const create = async (options: Parameters<Pyro["createWorkspace"]>[1]) => {
    const ws = await pyro.createWorkspace("debian:12", options);
    created.push(ws.workspace_id);
    return ws.workspace_id;
  };
  const curl = (ws: string, args: string) => pyro.execWorkspace(ws, `curl -sS -m 10 ${args} 2>&1; true`).then((r) => r.stdout);

  it("off has no network at all", TIMEOUT, async () => {
    const ws = await create({});
    assert.equal((await pyro.execWorkspace(ws, ["ls", "/sys/class/net"])).stdout, "lo\n");
    assert.match(await curl(ws, "http://deb.debian.org/"), /Could not resolve|Failed/);
  });

  it("egress reaches public hosts through pyro's proxy, never the host or private networks", TIMEOUT, async () => {
    const ws = await create({ networkPolicy: "egress" });
    assert.equal(await curl(ws, "-o /dev/null -w '%{http_code}' http://deb.debian.org/debian/dists/bookworm/Release"), "200");
    assert.match(await curl(ws, `--noproxy '*' http://10.0.2.2:${hostPort}/`), /Failed to connect|Couldn't connect/);
    assert.match(await curl(ws, `--noproxy '' http://127.0.0.1:${hostPort}/`), /non-public address/);
    assert.match(await curl(ws, `http://10.0.2.2:${hostPort}/`), /non-public address/);
    assert.doesNotMatch(await curl(ws, `--noproxy '' http://127.0.0.1:${hostPort}/`), /host-secret-service/);
  });

  it("an allowlist admits only the listed hosts, enforced outside the guest", TIMEOUT, async () => {
    const ws = await create({ networkPolicy: "egress", allowHosts: ["deb.debian.org"] });
    assert.equal(await curl(ws, "-o /dev/null -w '%{http_code}' http://deb.debian.org/debian/dists/bookworm/Release"), "200");
    assert.match(await curl(ws, "http://security.debian.org/"), /not in this workspace's egress allowlist/);
    await assert.rejects(pyro.createWorkspace("debian:12", { networkPolicy: "egress", allowHosts: ["not a host!"] }), (e) =>
      isPyroError(e, "INVALID_ARGUMENT"),
    );
    await assert.rejects(
      pyro.createWorkspace("debian:12", { allowHosts: ["deb.debian.org"] }),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && /needs --network-policy egress/.test(e.message),
    );
  });

  it("publishes a service port on the host's 127.0.0.1, unreachable from another workspace", TIMEOUT, async () => {
    const a = await create({ networkPolicy: "egress+published-ports" });
    const svc = await pyro.startService(a, "web", ["sh", "-c", "echo published-content > index.html; exec python3 -m http.server 8080"], {
      readiness: { type: "http", url: "http://127.0.0.1:8080/" },
      publish: [{ hostPort: 0, guestPort: 8080 }],
    });
    const url = svc.published[0]!.url;
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(await (await fetch(`${url}/index.html`)).text(), "published-content\n");
    const port = new URL(url).port;
    const b = await create({ networkPolicy: "egress" });
    assert.doesNotMatch(await curl(b, `--noproxy '*' http://10.0.2.2:${port}/index.html`), /published-content/);
    assert.doesNotMatch(await curl(b, `--noproxy '' http://127.0.0.1:${port}/index.html`), /published-content/);
    await assert.rejects(
      pyro.startService(b, "x", ["true"], { publish: [{ hostPort: 0, guestPort: 1 }] }),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && /egress\+published-ports/.test(e.message),
    );
    await pyro.stopService(a, "web");
    await assert.rejects(fetch(`${url}/index.html`));
  });
});
