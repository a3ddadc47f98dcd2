import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A real Distribution registry (Debian's docker-registry) on 127.0.0.1, optionally behind htpasswd. */
export interface TestRegistry {
  host: string;
  dir: string;
  stop: () => Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export async function startRegistry(options: { user?: string; password?: string } = {}): Promise<TestRegistry> {
  const dir = await mkdtemp(join(tmpdir(), "pyro-registry-"));
  const port = await freePort();
  let auth = "";
  if (options.user) {
    spawnSync("htpasswd", ["-Bbc", join(dir, "htpasswd"), options.user, options.password ?? ""], { stdio: "ignore" });
    auth = `auth:\n  htpasswd:\n    realm: pyro-test\n    path: ${join(dir, "htpasswd")}\n`;
  }
  await writeFile(
    join(dir, "config.yml"),
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, "data")}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n${auth}`,
  );
  const child: ChildProcess = spawn("docker-registry", ["serve", join(dir, "config.yml")], { stdio: "ignore" });
  const host = `127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    const up = await fetch(`http://${host}/v2/`).then(
      (r) => r.status,
      () => 0,
    );
    if (up === 200 || up === 401) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    host,
    dir,
    stop: async () => {
      child.kill("SIGKILL");
      await rm(dir, { recursive: true, force: true });
    },
  };
}
