import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { EGRESS_CONNECTION_LIMITS } from "../src/network/connection-budget.js";
import { Pyro } from "../src/sdk/pyro.js";
import { testPaths } from "./helpers/vm-fixtures.js";

const pyro = new Pyro();
const TIMEOUT = { timeout: 240_000 };

/** Host processes serving one VM's egress (its egress server and per-connection forwarders), QEMU excluded. */
async function egressProcesses(runDir: string, qemuPid: number): Promise<{ pid: number; argv0: string; rssKib: number }[]> {
  const found = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === qemuPid) continue;
    const cmdline = await readFile(join("/proc", entry, "cmdline"), "utf8").catch(() => "");
    if (!cmdline.includes(join(runDir, "egress"))) continue;
    const status = await readFile(join("/proc", entry, "status"), "utf8").catch(() => "");
    found.push({ pid: Number(entry), argv0: cmdline.split("\0")[0] ?? "", rssKib: Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0) });
  }
  return found;
}

describe("[vm] the egress proxy guards the host", () => {
  let hostServer: Server;
  let hostPort: number;
  let hostRequests = 0;
  let ws: string;
  let qemuPid: number;

  before(async () => {
    hostServer = createServer((_req, res) => {
      hostRequests++;
      res.end("host-only-service");
    });
    await new Promise<void>((r) => hostServer.listen(0, "127.0.0.1", () => r()));
    hostPort = (hostServer.address() as { port: number }).port;
    const created = await pyro.createWorkspace("debian:12", { networkPolicy: "egress" });
    ws = created.workspace_id;
    qemuPid = created.vm!.pid;
  });
  after(async () => {
    if (ws) await pyro.deleteWorkspace(ws).catch(() => undefined);
    hostServer.closeAllConnections();
    hostServer.close();
  });

  it("refuses the host's loopback in every spelling, over plain requests and CONNECT, and never connects", TIMEOUT, async () => {
    const urls = [
      `http://[::ffff:127.0.0.1]:${hostPort}/`,
      `http://[::ffff:7f00:1]:${hostPort}/`,
      `http://2130706433:${hostPort}/`,
      `http://127.1:${hostPort}/`,
    ];
    // --noproxy '': even 127.x goes to the proxy (the guest's no_proxy would keep it local).
    const script = [
      ...urls.map((u) => `curl -sS -m 30 --noproxy '' '${u}' 2>&1; echo "|done"`),
      `curl -sS -m 30 --noproxy '' -p -w 'connect=%{http_connect}' 'http://[::ffff:7f00:1]:${hostPort}/' 2>&1; echo "|done"`,
    ].join("\n");
    const out = (await pyro.execWorkspace(ws, script, { timeoutSeconds: 180 })).stdout;
    const answers = out.split("|done\n").slice(0, -1);
    assert.equal(answers.length, urls.length + 1, out);
    for (const [i, answer] of answers.slice(0, urls.length).entries()) {
      assert.match(answer, /^pyro egress: .*non-public address \(127\.0\.0\.1: loopback\)/, `${urls[i]}: ${answer}`);
    }
    assert.match(answers[urls.length]!, /connect=403/, `CONNECT: ${answers[urls.length]}`);
    assert.doesNotMatch(out, /host-only-service/);
    assert.equal(hostRequests, 0, "the host service never saw a request");
  });

  it("caps a VM's proxy connections, answering the extra ones 503 at once, with bounded host memory", TIMEOUT, async () => {
    const cap = EGRESS_CONNECTION_LIMITS.perVm;
    const extra = 8;
    const script = [
      "import json, socket, time",
      `held = [socket.create_connection(('10.0.2.100', 3128), timeout=30) for _ in range(${cap + extra})]`,
      "time.sleep(5)",
      "refused = quiet = 0",
      "for s in held:",
      "    s.setblocking(False)",
      "    try:",
      "        refused += s.recv(4096).startswith(b'HTTP/1.1 503')",
      "    except BlockingIOError:",
      "        quiet += 1",
      "open('.egress-held', 'w').write(json.dumps({'refused': refused, 'quiet': quiet}))",
      "time.sleep(600)",
    ].join("\n");
    await pyro.startService(ws, "hold", ["python3", "-c", script], { readiness: { type: "file", path: ".egress-held" }, readyTimeoutSeconds: 120 });
    const held = JSON.parse((await pyro.readWorkspaceFile(ws, ".egress-held")).content) as { refused: number; quiet: number };
    assert.deepEqual(held, { refused: extra, quiet: cap });
    const processes = await egressProcesses(join(testPaths.runtimeDir, ws), qemuPid);
    const rssMib = processes.reduce((sum, p) => sum + p.rssKib, 0) / 1024;
    // One egress server plus one forwarder per held connection; the refused ones are gone.
    assert.equal(processes.length, cap + 1, JSON.stringify(processes));
    // Node processes per connection (the old design) cost ~48 MiB each: ~1.9 GiB here.
    assert.ok(rssMib < 100 + cap * 8, `egress processes use ${rssMib.toFixed(0)} MiB RSS`);
    await pyro.stopService(ws, "hold");
  });

  it("runs one egress server per VM, with the VM: a restored VM gets its own, a stopped one leaves none", TIMEOUT, async () => {
    const runDir = join(testPaths.runtimeDir, ws);
    const servers = async () => (await egressProcesses(runDir, -1)).filter((p) => !p.argv0.endsWith("socat") && !p.argv0.includes("qemu"));
    await pyro.resetWorkspace(ws); // snapshot restore: a new VMM, so a new server
    const afterReset = await servers();
    assert.equal(afterReset.length, 1, JSON.stringify(afterReset));
    const out = (await pyro.execWorkspace(ws, `curl -sS -m 30 --noproxy '' 'http://127.1:${hostPort}/' 2>&1`)).stdout;
    assert.match(out, /^pyro egress: .*non-public address/, "the restored guest reaches its proxy");
    await pyro.stopWorkspace(ws);
    // Nobody kills the server: it follows QEMU out through its lifeline.
    const deadline = Date.now() + 10_000;
    while ((await servers()).length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(await servers(), []);
    assert.equal(hostRequests, 0);
  });
});
