import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { isPyroError } from "../src/errors.js";
import { environmentSlug, requireEnvironmentName } from "../src/environments/catalog.js";
import { pullEnvironmentArtifact, unpackRootfsLayer } from "../src/environments/environment-artifact.js";
import { EnvironmentStore } from "../src/environments/environment-store.js";
import { resolvePaths } from "../src/paths.js";
import { findExecutable } from "../src/process/host-command.js";
import { parseReference } from "../src/registry/image-reference.js";
import { credentialsFromEnv, RegistryClient, type RegistryCredentials } from "../src/registry/registry-client.js";
import { RootedTree } from "../src/storage/rooted-path.js";
import { extractTarInRoot } from "../src/storage/rooted-tar-extract.js";
import { UnpackBudget } from "../src/storage/unpack-budget.js";
import { makeTar } from "./helpers/tar-builder.js";
import { tempHome } from "./helpers/vm-fixtures.js";

/**
 * A hostile registry, played by a plain HTTP server on 127.0.0.1: what it serves and what it asks
 * for is up to each test. No VM: everything here is refused (or checked) before a guest would boot.
 */

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
const needsTools = findExecutable("qemu-img") && findExecutable("bwrap") ? false : "needs qemu-img and bwrap";

type Handler = (req: IncomingMessage, res: ServerResponse, host: string) => void;

async function serve(handler: Handler): Promise<{ host: string; server: Server; close: () => Promise<void> }> {
  let host = "";
  const server = createServer((req, res) => handler(req, res, host));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    host,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Serves one pyro environment artifact (config + rootfs layer) under <host>/pyro/env:1. */
function artifactHandler(config: object, rootfs: Buffer): Handler {
  const configBlob = Buffer.from(JSON.stringify(config));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      artifactType: "application/vnd.pyro.environment.v1",
      config: { mediaType: "application/vnd.pyro.environment.config.v1+json", digest: sha(configBlob), size: configBlob.length },
      layers: [
        {
          mediaType: "application/vnd.pyro.rootfs.ext4.qcow2",
          digest: sha(rootfs),
          size: rootfs.length,
          annotations: { "org.opencontainers.image.title": "rootfs.qcow2" },
        },
      ],
    }),
  );
  const blobs = new Map([
    [sha(configBlob), configBlob],
    [sha(rootfs), rootfs],
  ]);
  return (req, res) => {
    if (req.url === "/v2/pyro/env/manifests/1") {
      res.writeHead(200, { "content-type": "application/vnd.oci.image.manifest.v1+json" });
      return res.end(manifest);
    }
    const blob = blobs.get(req.url?.replace("/v2/pyro/env/blobs/", "") ?? "");
    if (blob) return res.end(blob);
    res.writeHead(404);
    res.end();
  };
}

function artifactConfig(name: string, imageSizeBytes: number): object {
  return { name, version: "1", packages: [], suite: "bookworm", image_size_bytes: imageSizeBytes, kernel_package: null };
}

/** Every file under `dir` (symlinks not followed) whose bytes contain `marker`. */
async function filesContaining(dir: string, marker: Buffer): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    if ((await readFile(path)).includes(marker)) found.push(path);
  }
  return found;
}

describe("hostile registry: rootfs layers that reach for host files", () => {
  let dir: string;
  let secret: string;
  const marker = Buffer.from(`PYRO-HOST-SECRET-${randomBytes(8).toString("hex")}`);
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "pyro-hostile-reg-"));
    secret = join(dir, "id_ed25519");
    // 1 MiB of "host secret" the overlay points at.
    await writeFile(secret, Buffer.concat(Array.from({ length: (1 << 20) / 64 }, () => Buffer.concat([marker, Buffer.alloc(64 - marker.length, 0x2e)]))));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("a pulled qcow2 whose backing file is a host path is refused; no host byte reaches the cache", { skip: needsTools, timeout: 60_000 }, async () => {
    const evil = join(dir, "evil.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", evil]);
    const registry = await serve(artifactHandler(artifactConfig("evil", 1 << 20), await readFile(evil)));
    const home = await tempHome();
    try {
      const paths = resolvePaths({ PYRO_HOME: home.home });
      await assert.rejects(
        pullEnvironmentArtifact(paths, new EnvironmentStore(paths), `${registry.host}/pyro/env:1`, { progress: () => () => undefined, log: () => undefined }),
        (e) => isPyroError(e, "REGISTRY_ERROR") && /backing file/.test(e.message) && e.message.includes(secret),
      );
      assert.deepEqual(await filesContaining(home.home, marker), [], "host secret bytes were copied into the cache");
    } finally {
      await registry.close();
      await home.dispose();
    }
  });

  it("unpacking refuses json:/URL backing names and external data files, and converts a standalone qcow2 in the sandbox", {
    skip: needsTools,
    timeout: 60_000,
  }, async () => {
    const out = join(dir, "out");
    const cases: [string, string[]][] = [
      ["json.qcow2", ["-u", "-b", `json:{"driver":"raw","file":{"driver":"file","filename":"${secret}"}}`, "-F", "raw"]],
      ["url.qcow2", ["-u", "-b", "http://169.254.169.254/latest/meta-data", "-F", "raw"]],
      ["data-file.qcow2", ["-o", `data_file=${join(dir, "data.raw")},data_file_raw=on`]],
    ];
    for (const [name, options] of cases) {
      const image = join(dir, name);
      execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", ...options, image, "1M"]);
      await rm(out, { recursive: true, force: true });
      await mkdir(out);
      await assert.rejects(
        unpackRootfsLayer(image, out, 1 << 20, "the test registry"),
        (e) => isPyroError(e, "REGISTRY_ERROR") && /refused/.test(e.message),
        name,
      );
      assert.deepEqual(await readdir(out), [], `${name}: nothing was written`);
    }
    // Not a qcow2 at all (qemu-img would otherwise probe the format).
    await writeFile(join(dir, "raw.img"), Buffer.alloc(1 << 20));
    await assert.rejects(
      unpackRootfsLayer(join(dir, "raw.img"), out, 1 << 20, "the test registry"),
      (e) => isPyroError(e, "REGISTRY_ERROR") && /not a qcow2/.test(e.message),
    );
    // A standalone qcow2 still converts, confined, to exactly its bytes.
    const payload = randomBytes(1 << 20);
    await writeFile(join(dir, "payload.raw"), payload);
    const good = join(dir, "good.qcow2");
    execFileSync("qemu-img", ["convert", "-q", "-c", "-f", "raw", "-O", "qcow2", join(dir, "payload.raw"), good]);
    const raw = await unpackRootfsLayer(good, out, 1 << 20, "the test registry");
    assert.ok((await readFile(raw)).equals(payload));
    // ...and a size the artifact misstates is refused before converting.
    await rm(out, { recursive: true, force: true });
    await mkdir(out);
    await assert.rejects(unpackRootfsLayer(good, out, 2 << 20, "the test registry"), (e) => isPyroError(e, "REGISTRY_ERROR"));
  });
});

describe("hostile registry: environment names that are paths", () => {
  it("a config named '..' (or --as '..') is refused and moves nothing", { skip: needsTools, timeout: 60_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyro-name-"));
    const home = await tempHome();
    const rootfs = join(dir, "rootfs.qcow2");
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", rootfs, "1M"]);
    const paths = resolvePaths({ PYRO_HOME: home.home });
    await mkdir(join(paths.cacheDir, "environments"), { recursive: true });
    const before = (await readdir(paths.cacheDir)).sort();
    try {
      for (const [name, as] of [
        ["..", undefined],
        [".", undefined],
        ["ok", ".."],
        ["ok", "../x"],
      ] as const) {
        const registry = await serve(artifactHandler(artifactConfig(name, 1 << 20), await readFile(rootfs)));
        try {
          await assert.rejects(
            pullEnvironmentArtifact(paths, new EnvironmentStore(paths), `${registry.host}/pyro/env:1`, {
              ...(as ? { as } : {}),
              progress: () => () => undefined,
              log: () => undefined,
            }),
            (e) => isPyroError(e, "INVALID_ARGUMENT") && /invalid environment name/.test(e.message),
            `name ${name} as ${as}`,
          );
        } finally {
          await registry.close();
        }
        assert.ok((await stat(paths.cacheDir)).isDirectory(), "the cache directory is where it was");
        assert.deepEqual((await readdir(paths.cacheDir)).sort(), before);
        assert.deepEqual((await readdir(home.home)).sort(), ["cache"]);
      }
    } finally {
      await home.dispose();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("store paths never resolve to '.' or '..'; every accepted name is one plain directory", () => {
    for (const bad of ["", ".", ".."])
      assert.throws(
        () => environmentSlug(bad),
        (e) => isPyroError(e, "INVALID_ARGUMENT"),
      );
    for (const bad of ["..", ".", "", "../x", "a/b", "Debian", "-x", `a${"b".repeat(63)}`])
      assert.throws(
        () => requireEnvironmentName(bad),
        (e) => isPyroError(e, "INVALID_ARGUMENT"),
        bad,
      );
    for (const good of ["debian:12", "debian:12-build", "node22", "a", "a.."]) assert.equal(requireEnvironmentName(good), good);
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(..."ab0.:_-/\\ A"), maxLength: 70 }), (name) => {
        let accepted = false;
        try {
          requireEnvironmentName(name);
          accepted = true;
        } catch (e) {
          assert.ok(isPyroError(e, "INVALID_ARGUMENT"));
        }
        if (!accepted) return;
        const slug = environmentSlug(name);
        assert.ok(slug !== "." && slug !== ".." && !slug.includes("/") && slug.length > 0, slug);
      }),
      { numRuns: 300 },
    );
  });
});

describe("hostile registry: credentials stay with their registry", () => {
  const credentials = (registry: string, tokenHost?: string): RegistryCredentials => ({
    username: "alice",
    password: "wonderland",
    registry,
    ...(tokenHost ? { tokenHost } : {}),
  });
  const aliceBasic = `Basic ${Buffer.from("alice:wonderland").toString("base64")}`;

  /** A registry that wants Basic auth and records every Authorization header it is sent. */
  async function basicRegistry(seen: (string | undefined)[]) {
    return serve((req, res) => {
      seen.push(req.headers.authorization);
      if (req.headers.authorization !== aliceBasic) {
        res.writeHead(401, { "www-authenticate": 'Basic realm="x"' });
        return res.end();
      }
      res.writeHead(200, { "content-type": "application/vnd.oci.image.manifest.v1+json" });
      res.end("{}");
    });
  }

  it("Basic credentials go only to the registry PYRO_REGISTRY_HOST names", async () => {
    const seen: (string | undefined)[] = [];
    const registry = await basicRegistry(seen);
    try {
      const stranger = new RegistryClient(parseReference(`${registry.host}/x/y:1`), credentials("ghcr.io"));
      await assert.rejects(stranger.getManifest("1"), (e) => isPyroError(e, "REGISTRY_UNAUTHORIZED") && /PYRO_REGISTRY_HOST/.test(e.message));
      assert.deepEqual(seen, [undefined], "the credentials were offered to a registry they do not belong to");
      seen.length = 0;
      const own = new RegistryClient(parseReference(`${registry.host}/x/y:1`), credentials(registry.host));
      await own.getManifest("1");
      assert.deepEqual(seen, [undefined, aliceBasic]);
    } finally {
      await registry.close();
    }
  });

  it("a Bearer realm elsewhere gets an anonymous token request; the registry's own (or the named token host) gets Basic", async () => {
    const realmSaw: (string | undefined)[] = [];
    const realm = await serve((req, res) => {
      realmSaw.push(req.headers.authorization);
      res.end(JSON.stringify({ token: "t0k" }));
    });
    let realmUrl = "";
    const registry = await serve((req, res, host) => {
      if (req.url?.startsWith("/token")) {
        realmSaw.push(req.headers.authorization);
        return res.end(JSON.stringify({ token: "t0k" }));
      }
      if (req.headers.authorization !== "Bearer t0k") {
        res.writeHead(401, { "www-authenticate": `Bearer realm="${realmUrl || `http://${host}/token`}",service="s"` });
        return res.end();
      }
      res.writeHead(200, { "content-type": "application/vnd.oci.image.manifest.v1+json" });
      res.end("{}");
    });
    try {
      realmUrl = `http://${realm.host}/token`;
      await new RegistryClient(parseReference(`${registry.host}/x/y:1`), credentials(registry.host)).getManifest("1");
      assert.deepEqual(realmSaw, [undefined], "a foreign token realm was sent the registry credentials");
      realmSaw.length = 0;
      await new RegistryClient(parseReference(`${registry.host}/x/y:1`), credentials(registry.host, realm.host)).getManifest("1");
      assert.deepEqual(realmSaw, [aliceBasic], "the token host the user named receives them");
      realmSaw.length = 0;
      realmUrl = "";
      await new RegistryClient(parseReference(`${registry.host}/x/y:1`), credentials(registry.host)).getManifest("1");
      assert.deepEqual(realmSaw, [aliceBasic], "the registry's own realm receives them");
    } finally {
      await registry.close();
      await realm.close();
    }
  });

  it("credentials from the environment need PYRO_REGISTRY_HOST", () => {
    assert.equal(credentialsFromEnv({}), undefined);
    assert.throws(
      () => credentialsFromEnv({ PYRO_REGISTRY_USERNAME: "alice", PYRO_REGISTRY_PASSWORD: "pw" }),
      (e) => isPyroError(e, "INVALID_ARGUMENT") && /PYRO_REGISTRY_HOST/.test(e.message),
    );
    assert.deepEqual(credentialsFromEnv({ PYRO_REGISTRY_USERNAME: "alice", PYRO_REGISTRY_PASSWORD: "pw", PYRO_REGISTRY_HOST: "GHCR.io" }), {
      username: "alice",
      password: "pw",
      registry: "ghcr.io",
    });
  });
});

describe("hostile registry: downloads and archives stay within budget", () => {
  it("a blob body longer than its descriptor is cut off at the declared size and discarded", { timeout: 30_000 }, async () => {
    let sent = 0;
    const registry = await serve((_req, res) => {
      // An endless body: 64 KiB chunks until the client hangs up.
      const chunk = Buffer.alloc(65536, 0x41);
      const endless = new Readable({
        read() {
          sent += chunk.length;
          this.push(chunk);
        },
      });
      res.on("close", () => endless.destroy());
      endless.pipe(res);
    });
    const dir = await mkdtemp(join(tmpdir(), "pyro-endless-"));
    try {
      const client = new RegistryClient(parseReference(`${registry.host}/x/y:1`));
      const descriptor = { mediaType: "application/octet-stream", digest: sha(Buffer.from("x")), size: 1000 };
      await assert.rejects(
        client.pullBlob(descriptor, join(dir, "blob")),
        (e) => isPyroError(e, "DIGEST_MISMATCH") && /more than its declared 1000 bytes/.test(e.message),
      );
      assert.deepEqual(await readdir(dir), [], "nothing of the oversized download stays");
      assert.ok(sent < 64 << 20, `the client stopped reading early (server pushed ${sent} bytes)`);
    } finally {
      await registry.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a descriptor declaring an absurd size is refused before anything is fetched", async () => {
    let requests = 0;
    const registry = await serve((_req, res) => {
      requests++;
      res.end("x");
    });
    const dir = await mkdtemp(join(tmpdir(), "pyro-absurd-"));
    try {
      const client = new RegistryClient(parseReference(`${registry.host}/x/y:1`));
      for (const size of [2 ** 60, -1, 1.5, Number.NaN]) {
        await assert.rejects(
          client.pullBlob({ mediaType: "application/octet-stream", digest: sha(Buffer.from("x")), size }, join(dir, "blob")),
          (e) => isPyroError(e, "REGISTRY_ERROR") && /impossible size/.test(e.message),
          String(size),
        );
      }
      assert.equal(requests, 0);
    } finally {
      await registry.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("archive extraction stops at its byte and entry budget, before writing the entry that exceeds it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyro-budget-"));
    try {
      const big = makeTar([
        { path: "small", content: "x".repeat(500) },
        { path: "big", content: "y".repeat(2000) },
      ]);
      await mkdir(join(dir, "a"));
      await assert.rejects(
        extractTarInRoot(new RootedTree(join(dir, "a")), Readable.from([big]), { label: "the test layer", budget: new UnpackBudget(1000, 100) }),
        (e) => isPyroError(e, "UNSAFE_ARCHIVE") && /more than 1000 bytes/.test(e.message) && /the test layer, entry 'big'/.test(e.message),
      );
      assert.deepEqual(await readdir(join(dir, "a")), ["small"]);
      const many = makeTar(Array.from({ length: 5 }, (_, i) => ({ path: `f${i}`, content: "z" })));
      await mkdir(join(dir, "b"));
      await assert.rejects(
        extractTarInRoot(new RootedTree(join(dir, "b")), Readable.from([many]), { label: "the test layer", budget: new UnpackBudget(1 << 20, 3) }),
        (e) => isPyroError(e, "UNSAFE_ARCHIVE") && /more than 3 entries/.test(e.message),
      );
      assert.deepEqual((await readdir(join(dir, "b"))).sort(), ["f0", "f1", "f2"]);
      // One budget shared by several layers adds them up.
      const shared = new UnpackBudget(1 << 20, 6);
      await mkdir(join(dir, "c"));
      await extractTarInRoot(new RootedTree(join(dir, "c")), Readable.from([many]), { label: "layer 1", budget: shared });
      await assert.rejects(extractTarInRoot(new RootedTree(join(dir, "c")), Readable.from([many]), { label: "layer 2", budget: shared }), (e) =>
        isPyroError(e, "UNSAFE_ARCHIVE"),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
