import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { isPyroError } from "../src/errors.js";
import { parseReference } from "../src/registry/image-reference.js";
import { RegistryClient } from "../src/registry/registry-client.js";
import { Pyro } from "../src/sdk/pyro.js";
import { startRegistry, type TestRegistry } from "./helpers/registry-fixture.js";
import { makeTar } from "./helpers/tar-builder.js";
import { sharedCacheDir } from "./helpers/vm-fixtures.js";

const TIMEOUT = { timeout: 300_000 };
const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** A fresh PYRO_HOME that shares the kernel (no download) but nothing else. */
async function freshHome(): Promise<{ pyro: Pyro; home: string; dispose: () => Promise<void> }> {
  const home = await mkdtemp(join(tmpdir(), "pyro-reg-home-"));
  await mkdir(join(home, "cache"), { recursive: true });
  await symlink(join(sharedCacheDir, "kernels"), join(home, "cache", "kernels"));
  await symlink(join(sharedCacheDir, "initramfs"), join(home, "cache", "initramfs"));
  return { pyro: new Pyro({ home }), home, dispose: () => rm(home, { recursive: true, force: true, maxRetries: 3 }) };
}

/** Two layers over a static busybox: whiteouts, an opaque directory and a hardlink. */
function testImageLayers(): Buffer[] {
  const busybox = readFileSync("/bin/busybox");
  const base = makeTar([
    { path: "bin/", type: "dir" },
    { path: "bin/busybox", content: busybox, mode: 0o755 },
    ...["sh", "cat", "ls", "stat", "test", "echo"].map((a) => ({ path: `bin/${a}`, type: "symlink" as const, linkpath: "busybox" })),
    { path: "data/", type: "dir" },
    { path: "data/a.txt", content: "lower a\n" },
    { path: "data/b.txt", content: "lower b\n" },
    { path: "gone.txt", content: "deleted by layer 2\n" },
    { path: "kept.txt", content: "kept\n" },
  ]);
  const top = makeTar([
    { path: ".wh.gone.txt" },
    { path: "data/", type: "dir" },
    { path: "data/.wh..wh..opq" },
    { path: "data/c.txt", content: "upper c\n" },
    { path: "hl/", type: "dir" },
    { path: "hl/orig", content: "same inode\n" },
    { path: "hl/link", type: "hardlink", linkpath: "hl/orig" },
  ]);
  return [base, top];
}

describe("[vm] environments over OCI registries and container image import", () => {
  let registry: TestRegistry;
  before(async () => {
    registry = await startRegistry();
  });
  after(async () => {
    await registry.stop();
  });

  it("pushes an environment and pulls it into a fresh cache, bootable, digest-checked and cached", TIMEOUT, async () => {
    const ref = `${registry.host}/pyro/debian:12`;
    const pushed = await new Pyro().pushEnvironment("debian:12", ref);
    assert.match(pushed.digest, /^sha256:[0-9a-f]{64}$/);
    assert.deepEqual(
      pushed.layers.map((l) => l.mediaType),
      ["application/vnd.pyro.rootfs.ext4.qcow2", "application/vnd.pyro.kernel.v1.tar+gzip"],
    );
    const fresh = await freshHome();
    try {
      const messages: string[] = [];
      // Two concurrent pulls of one environment: coalesced, both succeed, one download.
      const [a, b] = await Promise.all([
        fresh.pyro.pullEnvironment(ref, { as: "shipped", onProgress: (m) => messages.push(m) }),
        fresh.pyro.pullEnvironment(ref, { as: "shipped", onProgress: (m) => messages.push(m) }),
      ]);
      assert.equal(a.installed && b.installed, true);
      assert.equal(messages.filter((m) => m.includes("phase=download") && m.includes("rootfs")).length, 1, messages.join("\n"));
      const run = await fresh.pyro.run("shipped", ["sh", "-c", "git --version && cat /etc/debian_version"]);
      assert.equal(run.exit_code, 0, run.stderr);
      assert.match(run.stdout, /^git version/);
      assert.equal((await fresh.pyro.inspectEnvironment("shipped")).installed, true);
    } finally {
      await fresh.dispose();
    }
  });

  it("falls back to a local build when the catalog's registry cannot provide the environment, and says so", TIMEOUT, async () => {
    const fresh = await freshHome();
    const saved = process.env.PYRO_ENV_REGISTRY;
    process.env.PYRO_ENV_REGISTRY = `${registry.host}/nothing-here`;
    try {
      const messages: string[] = [];
      // debian:12-base is small; the registry has no such artifact.
      const status = await fresh.pyro.pullEnvironment("debian:12-base", { onProgress: (m) => messages.push(m) });
      assert.equal(status.installed, true);
      assert.ok(
        messages.some((m) => /cannot provide debian:12-base .*building it locally/.test(m)),
        messages.join("\n"),
      );
      assert.ok(messages.some((m) => m.includes("phase=bootstrap")));
    } finally {
      if (saved === undefined) delete process.env.PYRO_ENV_REGISTRY;
      else process.env.PYRO_ENV_REGISTRY = saved;
      await fresh.dispose();
    }
  });

  it("rejects a blob whose bytes do not match its digest, and resumes an interrupted download", TIMEOUT, async () => {
    const client = new RegistryClient(parseReference(`${registry.host}/blobs/test:1`));
    const payload = Buffer.alloc(3 * 1024 * 1024, 7);
    const dir = await mkdtemp(join(tmpdir(), "pyro-blob-"));
    try {
      await writeFile(join(dir, "src"), payload);
      await client.pushBlob(join(dir, "src"), sha(payload));
      // A lie about the digest: the download is discarded, nothing lands.
      const wrong = { mediaType: "application/octet-stream", digest: sha(payload), size: payload.length + 1 };
      await assert.rejects(client.pullBlob(wrong, join(dir, "bad")), (e) => isPyroError(e, "DIGEST_MISMATCH"));
      assert.deepEqual((await readdir(dir)).sort(), ["src"]);
      // Interrupted: the first megabyte is already there as a partial file.
      await writeFile(join(dir, "out.partial"), payload.subarray(0, 1024 * 1024));
      let firstProgress = -1;
      await client.pullBlob({ mediaType: "application/octet-stream", digest: sha(payload), size: payload.length }, join(dir, "out"), (done) => {
        if (firstProgress < 0) firstProgress = done;
      });
      assert.ok(firstProgress > 1024 * 1024, "the transfer resumed after the partial bytes (Range request)");
      assert.deepEqual(readFileSync(join(dir, "out")), payload);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("gives a clear error for an unauthorized pull", TIMEOUT, async () => {
    const locked = await startRegistry({ user: "alice", password: "wonderland" });
    try {
      const fresh = await freshHome();
      try {
        await assert.rejects(
          fresh.pyro.pullEnvironment(`${locked.host}/pyro/debian:12`),
          (e) => isPyroError(e, "REGISTRY_UNAUTHORIZED") && /PYRO_REGISTRY_USERNAME/.test(e.message),
        );
      } finally {
        await fresh.dispose();
      }
    } finally {
      await locked.stop();
    }
  });

  it("answers a Bearer token challenge", TIMEOUT, async () => {
    // A stand-in registry front: demands a token from its realm, then serves the manifest.
    const server = createServer((req, res) => {
      if (req.url?.startsWith("/token")) return res.end(JSON.stringify({ token: "t0k" }));
      if (req.headers.authorization !== "Bearer t0k") {
        res.writeHead(401, {
          "www-authenticate": `Bearer realm="http://127.0.0.1:${(server.address() as { port: number }).port}/token",service="test",scope="repository:x/y:pull"`,
        });
        return res.end();
      }
      res.writeHead(200, { "content-type": "application/vnd.oci.image.manifest.v1+json" });
      res.end('{"schemaVersion":2}');
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    try {
      const client = new RegistryClient(parseReference(`127.0.0.1:${(server.address() as { port: number }).port}/x/y:1`));
      assert.equal((await client.getManifest("1")).body.toString(), '{"schemaVersion":2}');
    } finally {
      server.close();
    }
  });

  it("imports a container image archive with whiteouts and hardlinks, which boots and runs", TIMEOUT, async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyro-image-"));
    const fresh = await freshHome();
    try {
      const [base, top] = testImageLayers() as [Buffer, Buffer];
      const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [sha(base), sha(top)] } }));
      const archive = makeTar([
        { path: "manifest.json", content: JSON.stringify([{ Config: "config.json", RepoTags: ["test/busy:1"], Layers: ["l1/layer.tar", "l2/layer.tar"] }]) },
        { path: "config.json", content: config },
        { path: "l1/layer.tar", content: base },
        { path: "l2/layer.tar", content: top },
      ]);
      await writeFile(join(dir, "image.tar"), archive);
      const status = await fresh.pyro.importEnvironment(join(dir, "image.tar"), "busy");
      assert.equal(status.installed, true);
      const r = await fresh.pyro.run("busy", ["sh", "-c", "ls /data; test -e /gone.txt && echo gone-still-there; cat /kept.txt /hl/link; stat -c %h /hl/orig"]);
      assert.equal(r.exit_code, 0, r.stderr);
      assert.equal(r.stdout, "c.txt\nkept\nsame inode\n2\n");

      // The same image from a registry (OCI manifest, gzip layers).
      const { gzipSync } = await import("node:zlib");
      const client = new RegistryClient(parseReference(`${registry.host}/test/busy:1`));
      const layers = [];
      for (const layer of [base, top]) {
        const gz = gzipSync(layer);
        await writeFile(join(dir, "blob"), gz);
        await client.pushBlob(join(dir, "blob"), sha(gz));
        layers.push({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha(gz), size: gz.length });
      }
      await writeFile(join(dir, "config"), config);
      await client.pushBlob(join(dir, "config"), sha(config));
      const manifest = {
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha(config), size: config.length },
        layers,
      };
      await client.putManifest("1", manifest.mediaType, Buffer.from(JSON.stringify(manifest)));
      await fresh.pyro.importEnvironment(`${registry.host}/test/busy:1`, "busy-remote");
      const remote = await fresh.pyro.run("busy-remote", ["cat", "/data/c.txt"]);
      assert.equal(remote.stdout, "upper c\n");
      await assert.rejects(
        fresh.pyro.importEnvironment(join(dir, "image.tar"), "debian:12"),
        (e) => isPyroError(e, "INVALID_ARGUMENT") && /catalog/.test(e.message),
      );
    } finally {
      await fresh.dispose();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
