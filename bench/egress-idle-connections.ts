/**
 * Benchmark (not a test): what idle guest connections to the egress proxy cost the host. A
 * workspace with network policy `egress` opens N TCP connections to the proxy address and holds
 * them without sending anything; the host side of its egress (every process whose command line
 * names the workspace's run or state directory, QEMU itself excluded) is then summed.
 *
 *   flock /tmp/pyro-vm.lock node dist/bench/egress-idle-connections.js [--connections N]
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { resolvePaths } from "../src/paths.js";
import { Pyro } from "../src/sdk/pyro.js";

const arg = process.argv.indexOf("--connections");
const CONNECTIONS = arg > 0 ? Number(process.argv[arg + 1]) : 20;
const pyro = new Pyro();
const paths = resolvePaths();

interface Usage {
  processes: number;
  rssKib: number;
  anonKib: number;
}

/** RSS and private anonymous memory of every process mentioning `needles`, except `skipPid`. */
async function egressUsage(needles: string[], skipPid: number): Promise<Usage> {
  const usage: Usage = { processes: 0, rssKib: 0, anonKib: 0 };
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === skipPid || Number(entry) === process.pid) continue;
    const cmdline = await readFile(join("/proc", entry, "cmdline"), "utf8").catch(() => "");
    if (!needles.some((n) => cmdline.includes(n))) continue;
    const status = await readFile(join("/proc", entry, "status"), "utf8").catch(() => "");
    const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? 0);
    usage.processes++;
    usage.rssKib += kib("VmRSS");
    usage.anonKib += kib("RssAnon");
  }
  return usage;
}

const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;

async function main(): Promise<void> {
  const ws = await pyro.createWorkspace("debian:12", { networkPolicy: "egress" });
  const id = ws.workspace_id;
  try {
    const needles = [join(paths.stateDir, "workspaces", id), join(paths.runtimeDir, id)];
    const qemuPid = ws.vm!.pid;
    const idle = await egressUsage(needles, qemuPid);
    const script = [
      "import socket, time",
      `held = [socket.create_connection(('10.0.2.100', 3128)) for _ in range(${CONNECTIONS})]`,
      "open('.held', 'w').write(str(len(held)))",
      "time.sleep(600)",
    ].join("\n");
    await pyro.startService(id, "hold", ["python3", "-c", script], { readiness: { type: "file", path: ".held" } });
    await new Promise((r) => setTimeout(r, 2_000)); // let every per-connection process finish starting
    const held = await egressUsage(needles, qemuPid);
    console.log(`egress host processes with no guest connection: ${idle.processes}, RSS ${mib(idle.rssKib)}, anon ${mib(idle.anonKib)}`);
    console.log(`with ${CONNECTIONS} idle guest connections:       ${held.processes}, RSS ${mib(held.rssKib)}, anon ${mib(held.anonKib)}`);
    console.log(`per connection: RSS ${mib((held.rssKib - idle.rssKib) / CONNECTIONS)}, anon ${mib((held.anonKib - idle.anonKib) / CONNECTIONS)}`);
    await pyro.stopService(id, "hold");
  } finally {
    await pyro.deleteWorkspace(id);
  }
}

await main();
