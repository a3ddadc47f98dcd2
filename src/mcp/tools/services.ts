import { z } from "zod";
import { PyroError } from "../../errors.js";
import type { ToolFactory } from "../tool-definition.js";
import type { Readiness } from "../../workspaces/workspace-services.js";
import { SERVICE_LOG_TAIL_LINES } from "../../workspaces/service-log-tail.js";

const ws = z.string().describe("Workspace id or name");
const name = z.string().describe("Service name");

export const serviceStart: ToolFactory = () => ({
  name: "service_start",
  title: "Start a background service",
  description:
    "Start a long-running process (dev server, database) that keeps running between commands, and wait until it is ready. " +
    "Give exactly one readiness check. Next: service_logs if it fails, service_status later.",
  inputSchema: {
    workspace_id: ws,
    name,
    command: z.string().min(1).describe("Shell command, run with /bin/sh -c"),
    cwd: z.string().optional(),
    ready_file: z.string().optional().describe("Ready once this file exists"),
    ready_tcp_port: z.number().int().min(1).max(65535).optional().describe("Ready once this guest port accepts connections"),
    ready_http_url: z.string().optional().describe("Ready once this http:// URL answers 2xx/3xx"),
    ready_command: z.string().optional().describe("Ready once this command exits 0"),
    ready_timeout_seconds: z.number().positive().max(3600).default(30),
    publish_guest_ports: z.array(z.number().int().min(1).max(65535)).optional().describe("Publish these ports on the host's 127.0.0.1 (needs network policy egress+published-ports)"),
    secret_env: z.array(z.string()).optional(),
  },
  run: (a, rt) => {
    const probes: Readiness[] = [
      ...(a.ready_file ? [{ type: "file" as const, path: String(a.ready_file) }] : []),
      ...(a.ready_tcp_port ? [{ type: "tcp" as const, port: Number(a.ready_tcp_port) }] : []),
      ...(a.ready_http_url ? [{ type: "http" as const, url: String(a.ready_http_url) }] : []),
      ...(a.ready_command ? [{ type: "command" as const, command: String(a.ready_command) }] : []),
    ];
    if (probes.length > 1) throw new PyroError("INVALID_ARGUMENT", "give at most one of ready_file, ready_tcp_port, ready_http_url, ready_command");
    const readiness = probes[0];
    return rt.pyro.startService(String(a.workspace_id), String(a.name), String(a.command), {
      ...(a.cwd ? { cwd: String(a.cwd) } : {}),
      ...(readiness ? { readiness } : {}),
      readyTimeoutSeconds: Number(a.ready_timeout_seconds),
      ...(a.publish_guest_ports ? { publish: (a.publish_guest_ports as number[]).map((guestPort) => ({ hostPort: 0, guestPort })) } : {}),
      ...(a.secret_env ? { secretEnv: a.secret_env as string[] } : {}),
    });
  },
});

export const serviceList: ToolFactory = () => ({
  name: "service_list",
  title: "List services",
  description: "List the workspace's services: running, exited (with exit code), stopped, or lost to a VM restart.",
  inputSchema: { workspace_id: ws },
  run: (a, rt) => rt.pyro.listServices(String(a.workspace_id)),
});

export const serviceStatus: ToolFactory = () => ({
  name: "service_status",
  title: "Service status",
  description: "One service's state, pid, exit code and published URLs.",
  inputSchema: { workspace_id: ws, name },
  run: (a, rt) => rt.pyro.statusService(String(a.workspace_id), String(a.name)),
});

export const serviceLogs: ToolFactory = () => ({
  name: "service_logs",
  title: "Service logs",
  description: "The last lines of a service's stdout and stderr.",
  inputSchema: { workspace_id: ws, name, tail_lines: z.number().int().positive().default(SERVICE_LOG_TAIL_LINES) },
  run: (a, rt) => rt.pyro.logsService(String(a.workspace_id), String(a.name), { tailLines: Number(a.tail_lines) }),
});

export const serviceStop: ToolFactory = () => ({
  name: "service_stop",
  title: "Stop a service",
  description: "Stop a service (TERM, then KILL) and unpublish its ports.",
  inputSchema: { workspace_id: ws, name },
  run: (a, rt) => rt.pyro.stopService(String(a.workspace_id), String(a.name)),
});
