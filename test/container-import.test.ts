import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { gzipSync } from "node:zlib";
import { isPyroError } from "../src/errors.js";
import { applyLayer } from "../src/environments/image-layer.js";
import { digestFileName, requireDigest } from "../src/registry/digest.js";
import { RootedTree } from "../src/storage/rooted-path.js";
import { Pyro } from "../src/sdk/pyro.js";
import { startRegistry, type TestRegistry } from "./helpers/registry-fixture.js";
import { makeTar, type RawTarEntry } from "./helpers/tar-builder.js";
import { snapshotTree } from "./helpers/tree-snapshot.js";

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** A private PYRO_HOME for one import (nothing shared: the import's work dir lives under it). */
async function importHome(): Promise<{ pyro: Pyro; home: string; environments: string; dispose: () => Promise<void> }> {
  const home = await mkdtemp(join(tmpdir(), "pyro-imp-"));
  const environments = join(home, "cache", "environments");
  await mkdir(environments, { recursive: true });
  return { pyro: new Pyro({ home }), home, environments, dispose: () => rm(home, { recursive: true, force: true }) };
}

/** A host directory the attack aims at: files, a directory with children, a symlink. */
async function plantCanary(dir: string): Promise<void> {
  await mkdir(join(dir, "full", "sub"), { recursive: true });
  await writeFile(join(dir, "victim.txt"), "must survive\n");
  await writeFile(join(dir, "full", "a.txt"), "a\n");
  await writeFile(join(dir, "full", "sub", "b.txt"), "b\n");
  await symlink("victim.txt", join(dir, "link"));
}

/** Layer 1: `x/z0 -> ..`, `x/zN -> z(N-1)/..`: each looks inside the root lexically, the chain climbs to the host's `/`. */
function climbingChain(): RawTarEntry[] {
  return [
    { path: "x/", type: "dir" },
    { path: "x/z0", type: "symlink", linkpath: ".." },
    ...Array.from({ length: 15 }, (_, i) => ({ path: `x/z${i + 1}`, type: "symlink" as const, linkpath: `z${i}/..` })),
  ];
}

/** Layer 2: whiteouts and an opaque marker under `x/z15/<host path of the canary>`. */
function whiteoutsThroughChain(canary: string): RawTarEntry[] {
  const host = canary.replace(/^\//, "");
  return [{ path: `x/z15/${host}/.wh.victim.txt` }, { path: `x/z15/${host}/.wh.link` }, { path: `x/z15/${host}/full/.wh..wh..opq` }];
}

function dockerSave(layers: Buffer[]): Buffer {
  return makeTar([
    { path: "manifest.json", content: JSON.stringify([{ Config: "config.json", Layers: layers.map((_, i) => `l${i}/layer.tar`) }]) },
    { path: "config.json", content: "{}" },
    ...layers.map((content, i) => ({ path: `l${i}/layer.tar`, content })),
  ]);
}

/** An OCI layout; `digests` overrides the digest written into the index / manifest for a blob. */
function ociLayout(layers: Buffer[], options: { manifestDigest?: string; layerDigest?: string } = {}): Buffer {
  const descriptors = layers.map((l) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: options.layerDigest ?? sha(l), size: l.length }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha(Buffer.from("{}")), size: 2 },
      layers: descriptors,
    }),
  );
  const index = {
    schemaVersion: 2,
    manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: options.manifestDigest ?? sha(manifest), size: manifest.length }],
  };
  const blob = (b: Buffer) => ({ path: `blobs/sha256/${sha(b).slice(7)}`, content: b });
  return makeTar([
    { path: "oci-layout", content: '{"imageLayoutVersion":"1.0.0"}' },
    { path: "index.json", content: JSON.stringify(index) },
    { path: "blobs/", type: "dir" },
    { path: "blobs/sha256/", type: "dir" },
    blob(manifest),
    blob(Buffer.from("{}")),
    ...layers.map(blob),
  ]);
}

/** Imports `archive` and reports whether it succeeded; a PyroError is an acceptable refusal, anything else is not. */
async function tryImport(pyro: Pyro, path: string, name: string): Promise<"imported" | string> {
  try {
    await pyro.importEnvironment(path, name);
    return "imported";
  } catch (error) {
    assert.ok(isPyroError(error), `the import failed with a non-pyro error: ${String(error)}`);
    return `${error.code}: ${error.message}`;
  }
}

describe("container image import: hostile images never touch the host", () => {
  let registry: TestRegistry;
  before(async () => {
    registry = await startRegistry();
  });
  after(async () => {
    await registry.stop();
  });

  for (const format of ["docker save", "OCI layout", "registry"] as const) {
    it(`a symlink chain z0..z15 with whiteouts and an opaque marker behind it leaves a host canary alone (${format})`, { timeout: 120_000 }, async () => {
      const env = await importHome();
      try {
        // Right next to the import's work directory (<environments>/.import-*), reached by absolute path through the chain.
        const canary = join(env.environments, "canary");
        await plantCanary(canary);
        const before = await snapshotTree(canary);
        const layers = [makeTar(climbingChain()), makeTar(whiteoutsThroughChain(canary))];
        let source: string;
        if (format === "registry") {
          const { RegistryClient } = await import("../src/registry/registry-client.js");
          const { parseReference } = await import("../src/registry/image-reference.js");
          const client = new RegistryClient(parseReference(`${registry.host}/evil/chain:1`));
          const descriptors = [];
          for (const layer of layers) {
            const gz = gzipSync(layer);
            await writeFile(join(env.home, "blob"), gz);
            await client.pushBlob(join(env.home, "blob"), sha(gz));
            descriptors.push({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha(gz), size: gz.length });
          }
          const config = Buffer.from("{}");
          await writeFile(join(env.home, "blob"), config);
          await client.pushBlob(join(env.home, "blob"), sha(config));
          const manifest = {
            schemaVersion: 2,
            mediaType: "application/vnd.oci.image.manifest.v1+json",
            config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha(config), size: config.length },
            layers: descriptors,
          };
          await client.putManifest("1", manifest.mediaType, Buffer.from(JSON.stringify(manifest)));
          source = `${registry.host}/evil/chain:1`;
        } else {
          source = join(env.home, "image.tar");
          await writeFile(source, format === "docker save" ? dockerSave(layers) : ociLayout(layers));
        }
        const outcome = await tryImport(env.pyro, source, "chain");
        assert.deepEqual(await snapshotTree(canary), before, `the canary changed (import: ${outcome})`);
        // Inside the image the chain is harmless: every zN resolves to the image's own root.
        assert.equal(outcome, "imported");
        assert.deepEqual((await readdir(env.environments)).sort(), ["canary", "chain"], "the work directory was cleaned up");
      } finally {
        await env.dispose();
      }
    });
  }

  it("refuses an OCI layout whose digests are paths ('sha256:../../x'), reading nothing outside the layout", async () => {
    const env = await importHome();
    try {
      const layer = makeTar([{ path: "marker.txt", content: "from outside\n" }]);
      // What a traversing digest would reach from <work>/archive/blobs/sha256: a manifest planted in PYRO_HOME.
      const planted = Buffer.from(
        JSON.stringify({ schemaVersion: 2, layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: sha(layer), size: layer.length }] }),
      );
      await writeFile(join(env.home, "planted.json"), planted);
      const image = join(env.home, "image.tar");
      for (const override of [
        { manifestDigest: "sha256:../../../../../../planted.json" },
        { layerDigest: "sha256:../../../../../../planted.json" },
        { manifestDigest: "sha256:" + "A".repeat(64) },
      ]) {
        await writeFile(image, ociLayout([layer], override));
        await assert.rejects(
          env.pyro.importEnvironment(image, "dig"),
          (e) => isPyroError(e, "INVALID_ARGUMENT") && /invalid digest/.test(e.message),
          JSON.stringify(override),
        );
      }
      assert.deepEqual((await readdir(env.environments)).sort(), []);
    } finally {
      await env.dispose();
    }
  });

  it("refuses registry manifests whose digests are paths before naming any file or URL by them", async () => {
    const requests: string[] = [];
    const bad = "sha256:../../../../etc/passwd";
    const server = createServer((req, res) => {
      requests.push(req.url ?? "");
      res.writeHead(200, { "content-type": "application/vnd.oci.image.manifest.v1+json" });
      res.end(JSON.stringify({ schemaVersion: 2, layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: bad, size: 10 }] }));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const env = await importHome();
    try {
      const ref = `127.0.0.1:${(server.address() as { port: number }).port}/evil/img:1`;
      await assert.rejects(env.pyro.importEnvironment(ref, "dig"), (e) => isPyroError(e, "INVALID_ARGUMENT") && /invalid digest/.test(e.message));
      assert.deepEqual(requests, ["/v2/evil/img/manifests/1"], "no blob was requested by a malformed digest");
    } finally {
      server.close();
      await env.dispose();
    }
  });

  it("validates digests as sha256:<64 hex> everywhere they name something", () => {
    const good = `sha256:${"0".repeat(64)}`;
    assert.equal(requireDigest(good, "x"), good);
    assert.equal(digestFileName(good, "x"), `sha256-${"0".repeat(64)}`);
    for (const bad of [
      "sha256:../../x",
      `sha256:${"0".repeat(63)}`,
      `sha256:${"0".repeat(64)}/..`,
      `sha512:${"0".repeat(64)}`,
      `SHA256:${"0".repeat(64)}`,
      "",
      7,
      undefined,
    ]) {
      assert.throws(
        () => digestFileName(bad, "the thing"),
        (e) => isPyroError(e, "INVALID_ARGUMENT") && /the thing has an invalid digest/.test(e.message),
        String(bad),
      );
    }
  });

  it("resolves the outer archive's layer paths inside it: a symlink out of the archive leads nowhere", async () => {
    const env = await importHome();
    try {
      // A well-formed layer outside the archive, which a followed host symlink would import.
      const outside = join(env.home, "outside");
      await mkdir(outside);
      await writeFile(join(outside, "layer.tar"), makeTar([{ path: "stolen.txt", content: "host data\n" }]));
      const image = join(env.home, "image.tar");
      await writeFile(
        image,
        makeTar([
          { path: "manifest.json", content: JSON.stringify([{ Layers: ["l/layer.tar"] }]) },
          ...climbingChain(),
          // Lexically inside the archive (node-tar's own checks pass it); on the host it climbs to `/`.
          { path: "l", type: "symlink", linkpath: `x/z15${outside}` },
        ]),
      );
      await assert.rejects(env.pyro.importEnvironment(image, "out"), (e) => isPyroError(e, "INVALID_ARGUMENT") && /does not exist/.test(e.message));
      // The same with an absolute link: re-rooted at the archive, where nothing is.
      await writeFile(
        image,
        makeTar([
          { path: "manifest.json", content: JSON.stringify([{ Layers: ["l/layer.tar"] }]) },
          { path: "l", type: "symlink", linkpath: outside },
        ]),
      );
      await assert.rejects(env.pyro.importEnvironment(image, "out"), (e) => isPyroError(e, "INVALID_ARGUMENT") && /does not exist/.test(e.message));
    } finally {
      await env.dispose();
    }
  });

  it("unpacks the outer archive without writing through its own symlink chains", async () => {
    const env = await importHome();
    try {
      const canary = join(env.environments, "canary");
      await plantCanary(canary);
      const before = await snapshotTree(canary);
      const host = canary.replace(/^\//, "");
      const layer = makeTar([{ path: "ok.txt", content: "ok\n" }]);
      const image = join(env.home, "image.tar");
      await writeFile(
        image,
        makeTar([
          ...climbingChain(),
          { path: `x/z15/${host}/victim.txt`, content: "overwritten\n" },
          { path: `x/z15/${host}/full/new.txt`, content: "planted\n" },
          { path: `x/z15/${host}/hard`, type: "hardlink", linkpath: `x/z15/${host}/victim.txt` },
          { path: "manifest.json", content: JSON.stringify([{ Layers: ["layer.tar"] }]) },
          { path: "layer.tar", content: layer },
        ]),
      );
      const outcome = await tryImport(env.pyro, image, "outer");
      assert.deepEqual(await snapshotTree(canary), before, `the canary changed (import: ${outcome})`);
    } finally {
      await env.dispose();
    }
  });
});

describe("container image layers: what a well-formed image gets", () => {
  it("applies layers like a container runtime: './' entries, exact modes, absolute symlinks kept, whiteouts and opaque dirs, hardlinks, type changes", async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyro-layers-"));
    try {
      const root = join(dir, "root");
      await mkdir(root);
      const tree = new RootedTree(root);
      const apply = async (i: number, entries: RawTarEntry[]) => {
        await writeFile(join(dir, `l${i}.tar`), makeTar(entries));
        await applyLayer(tree, { path: join(dir, `l${i}.tar`), compression: "none" }, `layer ${i}`);
      };
      await apply(1, [
        { path: "./", type: "dir" },
        { path: "./etc/", type: "dir" },
        { path: "./etc/alternatives/", type: "dir" },
        { path: "./etc/alternatives/awk", type: "symlink", linkpath: "/usr/bin/mawk" },
        { path: "./usr/bin/mawk", content: "#!mawk\n", mode: 0o755 },
        { path: "./usr/bin/awk", type: "symlink", linkpath: "/etc/alternatives/awk" },
        { path: "./usr/bin/su", content: "su", mode: 0o4755 },
        { path: "./tmp/", type: "dir", mode: 0o1777 },
        { path: "./data/", type: "dir" },
        { path: "./data/a", content: "lower a" },
        { path: "./data/sub/b", content: "lower b" },
        { path: "./gone", content: "gone" },
        { path: "./becomes-dir", content: "file" },
        { path: "./becomes-file/", type: "dir" },
        { path: "./becomes-file/x", content: "x" },
        { path: "./lib", type: "symlink", linkpath: "usr/lib" },
        { path: "./usr/lib/", type: "dir" },
      ]);
      await apply(2, [
        { path: "./.wh.gone" },
        { path: "./data/", type: "dir" },
        { path: "./data/.wh..wh..opq" },
        { path: "./data/c", content: "upper c" },
        { path: "./becomes-dir/", type: "dir" },
        { path: "./becomes-file", content: "now a file" },
        // Written through the image's own relative symlink lib -> usr/lib, resolved inside the root.
        { path: "./lib/libx.so", content: "libx" },
        { path: "./hard", type: "hardlink", linkpath: "lib/libx.so" },
      ]);
      assert.equal((await lstat(root)).mode & 0o7777, 0o755, "the root keeps its own mode");
      assert.equal(await readlink(join(root, "usr/bin/awk")), "/etc/alternatives/awk", "absolute symlinks are kept verbatim (they mean the guest's /)");
      assert.equal((await lstat(join(root, "usr/bin/su"))).mode & 0o7777, 0o4755);
      assert.equal((await lstat(join(root, "usr/bin/mawk"))).mode & 0o7777, 0o755);
      assert.equal((await lstat(join(root, "tmp"))).mode & 0o7777, 0o1777);
      assert.deepEqual((await readdir(join(root, "data"))).sort(), ["c"]);
      await assert.rejects(lstat(join(root, "gone")));
      assert.ok((await lstat(join(root, "becomes-dir"))).isDirectory());
      assert.equal(await readFile(join(root, "becomes-file"), "utf8"), "now a file");
      assert.equal(await readFile(join(root, "usr/lib/libx.so"), "utf8"), "libx");
      assert.equal((await lstat(join(root, "lib"))).isSymbolicLink(), true);
      assert.equal((await lstat(join(root, "hard"))).ino, (await lstat(join(root, "usr/lib/libx.so"))).ino);
      assert.equal((await lstat(join(root, "hard"))).nlink, 2);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
