import { z } from "zod";
import type { ToolFactory } from "../tool-definition.js";

export const vmRun: ToolFactory = () => ({
  name: "vm_run",
  title: "Run one command in a throwaway VM",
  description:
    "Run one shell command in a fresh, isolated Linux microVM that is destroyed afterwards. Use for one-off checks " +
    "(versions, quick scripts). For repeated work on files, create a workspace with workspace_create instead.",
  inputSchema: {
    command: z.string().min(1).describe("Shell command, run with /bin/sh -c"),
    environment: z.string().default("debian:12").describe("debian:12, debian:12-base or debian:12-build"),
    timeout_seconds: z.number().positive().max(3600).default(30),
    network: z.boolean().default(false).describe("Allow outbound network access"),
  },
  run: (a, rt) =>
    rt.pyro.run(String(a.environment), ["sh", "-c", String(a.command)], {
      timeoutSeconds: Number(a.timeout_seconds),
      network: Boolean(a.network),
    }),
});
