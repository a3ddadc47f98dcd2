import type { Readiness } from "./service-readiness.js";
import { SERVICE_DEFAULTS } from "./workspace-limits.js";
import { createServer } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { isPyroError, PyroError } from "../errors.js";
import { serviceCommandFields, type AgentClient } from "../guest-protocol/agent-client.js";
import { checkGuestRequest } from "../guest-protocol/request-limits.js";
import type { RunningVm } from "../runtime/vmm-backend.js";
import { workspacePath, WORKSPACE_ROOT } from "./guest-paths.js";
import { readWholeFile } from "./guest-transfer.js";
import { nowIso, withRunningWorkspace, type WorkspaceContext } from "./workspace-context.js";
import { networkEnvironment, requirePublishing } from "./workspace-network.js";
import type { WorkspaceRecord } from "./workspace-record.js";
import type { Redactor } from "./secret-redaction.js";
import { secretEnvironment } from "./workspace-secrets.js";

export type { Readiness };

export { SERVICE_DEFAULTS };

export interface StartServiceOptions {
  cwd?: string;
  readiness?: Readiness;
  readyTimeoutSeconds?: number;
  readyIntervalMs?: number;
  /** Publish guest ports on 127.0.0.1 of the host; hostPort 0 picks a free one. */
  publish?: { hostPort: number; guestPort: number }[];
  secretEnv?: string[];
}

export interface ServiceView {
  workspace_id: string;
  name: string;
  /** running; exited (on its own, see exit_code); stopped (by request); lost (the VM restarted under it). */
  state: "running" | "exited" | "stopped" | "lost";
  pid: number | null;
  exit_code: number | null;
  command: string[] | string;
  started_at: string;
  published: { host_port: number; guest_port: number; url: string }[];
}

function view(record: WorkspaceRecord, name: string, agentState: Record<string, unknown> | undefined): ServiceView {
  const meta = record.services[name]!;
  const state = !agentState
    ? meta.stopped_at
      ? "stopped"
      : "lost"
    : agentState.running === true
      ? "running"
      : agentState.stopped_by_request === true
        ? "stopped"
        : "exited";
  return {
    workspace_id: record.id,
    name,
    state,
    pid: agentState ? Number(agentState.pid) : null,
    exit_code: typeof agentState?.exit_code === "number" ? agentState.exit_code : null,
    command: meta.command,
    started_at: meta.started_at,
    published: meta.published.map((p) => ({ ...p, url: `http://127.0.0.1:${p.host_port}` })),
  };
}

async function agentServices(agent: AgentClient): Promise<Map<string, Record<string, unknown>>> {
  return new Map((await agent.serviceList()).map((s) => [s.name, s]));
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

async function probe(vm: RunningVm, readiness: Readiness, env: Record<string, string>): Promise<{ ready: boolean; detail: string }> {
  switch (readiness.type) {
    case "file":
      return vm.agent.stat(workspacePath(readiness.path)).then(
        () => ({ ready: true, detail: "file exists" }),
        () => ({ ready: false, detail: `${readiness.path} does not exist yet` }),
      );
    case "tcp": {
      const reply = await vm.agent.probeTcp(readiness.host ?? "127.0.0.1", readiness.port, 1000);
      return { ready: reply.ready, detail: reply.detail || "connected" };
    }
    case "http": {
      const reply = await vm.agent.probeHttp(readiness.url, 2000);
      return { ready: reply.ready, detail: reply.detail };
    }
    case "command": {
      const r = await vm.agent.exec({ command: readiness.command, cwd: WORKSPACE_ROOT, env, timeoutMs: 10_000 });
      return { ready: r.exitCode === 0, detail: `readiness command exited ${r.exitCode}` };
    }
  }
}

async function logTail(agent: AgentClient, path: string, redactor: Redactor, maxBytes = 4096): Promise<string> {
  try {
    const { size } = await agent.stat(path);
    // Read before the cut too, so a secret crossing it is redacted whole, not left as a suffix.
    const offset = Math.max(0, size - maxBytes - redactor.contextBytes);
    const { data } = await agent.readFile(path, { offset, maxBytes: size - offset });
    return redactor.window(data, Math.max(0, data.length - maxBytes), data.length, { cutBefore: offset > 0 }).bytes.toString("utf8");
  } catch {
    return "";
  }
}

type PublishedPort = { host_port: number; guest_port: number };

async function unpublish(vm: RunningVm, ports: PublishedPort[]): Promise<void> {
  for (const p of ports) await vm.removePortForward(p.host_port).catch(() => undefined);
}

/** Publishes every requested port or none: after a failure the ports already added are removed. */
async function publishAll(vm: RunningVm, requests: { hostPort: number; guestPort: number }[]): Promise<PublishedPort[]> {
  const published: PublishedPort[] = [];
  for (const p of requests) {
    const hostPort = p.hostPort || (await freePort());
    try {
      await vm.addPortForward(hostPort, p.guestPort);
    } catch (error) {
      await unpublish(vm, published);
      const why = error instanceof Error ? error.message : String(error);
      throw new PyroError(
        "INVALID_ARGUMENT",
        `cannot publish guest port ${p.guestPort} on 127.0.0.1:${hostPort} (${why}); the host port is probably in use: choose another, or give only the guest port to let pyro pick a free one. Nothing was started.`,
        { host_port: hostPort, guest_port: p.guestPort },
      );
    }
    published.push({ host_port: hostPort, guest_port: p.guestPort });
  }
  return published;
}

/**
 * Starts a named background service and waits for its readiness probe. A service that dies or
 * never becomes ready is an error that says why (exit code, last probe, log tail); one that never
 * became ready is stopped rather than left half-up. All or nothing: whatever fails (a port that
 * cannot be published, readiness), no service is left running and no port stays published.
 */
export async function startService(
  ctx: WorkspaceContext,
  ref: string,
  name: string,
  command: string[] | string,
  options: StartServiceOptions = {},
): Promise<ServiceView & { ready_ms: number }> {
  const cwd = workspacePath(options.cwd ?? WORKSPACE_ROOT);
  const timeoutMs = (options.readyTimeoutSeconds ?? SERVICE_DEFAULTS.readyTimeoutSeconds) * 1000;
  const intervalMs = options.readyIntervalMs ?? SERVICE_DEFAULTS.readyIntervalMs;
  if (!(timeoutMs > 0) || !(intervalMs > 0)) throw new PyroError("INVALID_ARGUMENT", "ready timeout and interval must be positive");
  checkGuestRequest("the service command", { name, cwd, ...serviceCommandFields(command) });
  return withRunningWorkspace(ctx, ref, async (record, vm, session) => {
    if (options.publish?.length) requirePublishing(record);
    const env = { ...networkEnvironment(record), ...secretEnvironment(session.secrets, options.secretEnv) };
    const started = Date.now();
    // Ports first: a busy host port must not leave a running service that no record knows about.
    const published = await publishAll(vm, options.publish ?? []);
    let running = false;
    try {
      const startedState = await vm.agent.serviceStart({ name, cwd, env, command });
      running = true;
      const stopAndFail = async (code: "SERVICE_NOT_READY" | "SERVICE_EXITED", message: string) => {
        await vm.agent.serviceStop(name, 1000).catch(() => undefined);
        running = false;
        const stderr = (await logTail(vm.agent, startedState.stderr_path, session.redactor)).trim().split("\n").slice(-10).join("\n");
        throw new PyroError(code, `${message}${stderr ? `\n--- stderr (tail) ---\n${stderr}` : ""}`, { service: name });
      };
      if (options.readiness) {
        for (let last = "not probed yet"; ; ) {
          const state = await vm.agent.serviceStatus(name);
          if (!state.running) await stopAndFail("SERVICE_EXITED", `service ${name} exited with code ${String(state.exit_code)} before it became ready`);
          const result = await probe(vm, options.readiness, env).catch((e: Error) => ({ ready: false, detail: e.message }));
          if (result.ready) break;
          last = result.detail;
          if (Date.now() - started > timeoutMs) {
            await stopAndFail(
              "SERVICE_NOT_READY",
              `service ${name} did not become ready within ${timeoutMs / 1000} s (last probe: ${last}); it has been stopped`,
            );
          }
          await sleep(intervalMs);
        }
      }
    } catch (error) {
      if (running) await vm.agent.serviceStop(name, 1000).catch(() => undefined);
      await unpublish(vm, published);
      throw error;
    }
    record.services[name] = { command, cwd, started_at: nowIso(), published };
    delete record.services[name].stopped_at;
    record.last_activity_at = record.updated_at = nowIso();
    await ctx.store.write(record);
    return { ...view(record, name, (await agentServices(vm.agent)).get(name)), ready_ms: Date.now() - started };
  });
}

export async function listServices(ctx: WorkspaceContext, ref: string) {
  return withRunningWorkspace(ctx, ref, async (record, vm) => {
    const live = await agentServices(vm.agent);
    const services = Object.keys(record.services)
      .sort()
      .map((name) => view(record, name, live.get(name)));
    return { workspace_id: record.id, count: services.length, running_count: services.filter((s) => s.state === "running").length, services };
  });
}

function known(record: WorkspaceRecord, name: string): void {
  if (!record.services[name])
    throw new PyroError("INVALID_ARGUMENT", `workspace ${record.id} has no service '${name}'; see 'pyro workspace service list ${record.id}'`);
}

export async function serviceStatus(ctx: WorkspaceContext, ref: string, name: string): Promise<ServiceView> {
  return withRunningWorkspace(ctx, ref, async (record, vm) => {
    known(record, name);
    return view(record, name, (await agentServices(vm.agent)).get(name));
  });
}

/** The last lines of a service's stdout and stderr (everything with all). */
export async function serviceLogs(ctx: WorkspaceContext, ref: string, name: string, options: { tailLines?: number; all?: boolean } = {}) {
  const tailLines = options.all ? undefined : (options.tailLines ?? SERVICE_DEFAULTS.tailLines);
  return withRunningWorkspace(ctx, ref, async (record, vm, session) => {
    known(record, name);
    const read = async (stream: string) => {
      // Redacted before the line tail cuts it (a multi-line secret would leave lines behind).
      const text = await readWholeFile(vm.agent, `/run/pyro-services/${name}/${stream}.log`, 16 * 1024 * 1024).then(
        (b) => session.redactor.bytes(b).toString("utf8"),
        // A log not written yet reads as empty; a guest breaking the protocol is reported.
        (error) => {
          if (isPyroError(error, "GUEST_OPERATION_FAILED")) return "";
          throw error;
        },
      );
      if (tailLines === undefined) return text;
      const lines = text.split("\n");
      const trailing = lines[lines.length - 1] === "" ? lines.pop() : undefined;
      return lines.slice(-tailLines).join("\n") + (trailing !== undefined ? "\n" : "");
    };
    return { workspace_id: record.id, name, tail_lines: tailLines ?? null, stdout: await read("stdout"), stderr: await read("stderr") };
  });
}

export async function stopService(ctx: WorkspaceContext, ref: string, name: string): Promise<ServiceView> {
  return withRunningWorkspace(ctx, ref, async (record, vm) => {
    known(record, name);
    const live = (await agentServices(vm.agent)).get(name);
    if (live) await vm.agent.serviceStop(name, 3000, 30_000);
    await unpublish(vm, record.services[name]!.published);
    record.services[name]!.published = [];
    record.services[name]!.stopped_at = nowIso();
    record.updated_at = nowIso();
    await ctx.store.write(record);
    return view(record, name, (await agentServices(vm.agent)).get(name));
  });
}
