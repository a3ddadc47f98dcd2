import { z } from "zod";
import { SERVICE_DEFAULTS } from "../../workspaces/workspace-limits.js";
import { chooseReadiness } from "../../workspaces/service-readiness.js";
import { secretEnv, shellCommand, tcpPort, workspaceId } from "../tool-arguments.js";
import { ADDITIVE, defineTool, destructive, READ_ONLY } from "../tool-definition.js";

const name = z.string().describe("Service name");

export const serviceStart = defineTool({
  name: "service_start",
  title: "Start a background service",
  description:
    "Start a long-running process (dev server, database) that keeps running between commands, and wait until it is ready. " +
    "Give exactly one readiness check. Next: service_logs if it fails, service_status later.",
  profile: "workspace-full",
  annotations: ADDITIVE,
  input: {
    workspace_id: workspaceId,
    name,
    command: shellCommand,
    cwd: z.string().optional(),
    ready_file: z.string().optional().describe("Ready once this file exists"),
    ready_tcp_port: tcpPort.optional().describe("Ready once this guest port accepts connections"),
    ready_http_url: z.string().optional().describe("Ready once this http:// URL answers 2xx/3xx"),
    ready_command: z.string().optional().describe("Ready once this command exits 0"),
    ready_timeout_seconds: z
      .number()
      .positive()
      .optional()
      .describe(
        `Give up (and stop the service) after this long, at most ${SERVICE_DEFAULTS.readyTimeoutMaxSeconds} (default ${SERVICE_DEFAULTS.readyTimeoutSeconds}); needs a readiness check`,
      ),
    publish_guest_ports: z.array(tcpPort).optional().describe("Publish these ports on the host's 127.0.0.1 (needs network policy egress+published-ports)"),
    secret_env: secretEnv,
  },
  run: (a, rt) => {
    const readiness = chooseReadiness(
      {
        file: a.ready_file,
        tcp: a.ready_tcp_port ? { port: a.ready_tcp_port } : undefined,
        http: a.ready_http_url,
        command: a.ready_command,
        timeoutSeconds: a.ready_timeout_seconds,
      },
      { file: "ready_file", tcp: "ready_tcp_port", http: "ready_http_url", command: "ready_command", timeoutSeconds: "ready_timeout_seconds" },
    );
    return rt.pyro.startService(a.workspace_id, a.name, a.command, {
      ...(a.cwd ? { cwd: a.cwd } : {}),
      ...readiness,
      ...(a.publish_guest_ports ? { publish: a.publish_guest_ports.map((guestPort) => ({ hostPort: 0, guestPort })) } : {}),
      ...(a.secret_env ? { secretEnv: a.secret_env } : {}),
    });
  },
});

export const serviceList = defineTool({
  name: "service_list",
  title: "List services",
  description: "List the workspace's services: running, exited (with exit code), stopped, or lost to a VM restart.",
  profile: "workspace-full",
  annotations: READ_ONLY,
  input: { workspace_id: workspaceId },
  run: (a, rt) => rt.pyro.listServices(a.workspace_id),
});

export const serviceStatus = defineTool({
  name: "service_status",
  title: "Service status",
  description: "One service's state, pid, exit code and published URLs.",
  profile: "workspace-full",
  annotations: READ_ONLY,
  input: { workspace_id: workspaceId, name },
  run: (a, rt) => rt.pyro.statusService(a.workspace_id, a.name),
});

export const serviceLogs = defineTool({
  name: "service_logs",
  title: "Service logs",
  description: "The last lines of a service's stdout and stderr.",
  profile: "workspace-full",
  annotations: READ_ONLY,
  input: { workspace_id: workspaceId, name, tail_lines: z.number().int().positive().default(SERVICE_DEFAULTS.tailLines) },
  run: (a, rt) => rt.pyro.logsService(a.workspace_id, a.name, { tailLines: a.tail_lines }),
});

export const serviceStop = defineTool({
  name: "service_stop",
  title: "Stop a service",
  description: "Stop a service (TERM, then KILL) and unpublish its ports.",
  profile: "workspace-full",
  annotations: destructive(true),
  input: { workspace_id: workspaceId, name },
  run: (a, rt) => rt.pyro.stopService(a.workspace_id, a.name),
});
