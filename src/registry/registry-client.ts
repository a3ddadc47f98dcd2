import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { rename, rm, stat } from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import { Readable, Transform } from "node:stream";
import { PyroError } from "../errors.js";
import { MAX_UNPACKED_BYTES } from "../storage/unpack-budget.js";
import { requireDigest } from "./digest.js";
import type { ImageReference } from "./image-reference.js";

export interface RegistryCredentials {
  username: string;
  password: string;
  /** The one registry (host[:port]) they belong to; never sent anywhere else. */
  registry: string;
  /** A token service host other than the registry that may also receive them (Docker Hub's auth.docker.io). */
  tokenHost?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  artifactType?: string;
  platform?: { architecture: string; os: string; variant?: string };
}

/** Reports transfer progress: bytes so far of total. */
export type ProgressFn = (done: number, total: number) => void;

const MANIFEST_TYPES = [
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
];

/**
 * Credentials from PYRO_REGISTRY_USERNAME / PYRO_REGISTRY_PASSWORD, tied to the registry named by
 * PYRO_REGISTRY_HOST (required: credentials that could go to any registry would go to a hostile one)
 * and optionally a separate token service host, PYRO_REGISTRY_TOKEN_HOST.
 */
export function credentialsFromEnv(env: NodeJS.ProcessEnv = process.env): RegistryCredentials | undefined {
  if (!env.PYRO_REGISTRY_USERNAME) return undefined;
  if (!env.PYRO_REGISTRY_HOST) {
    throw new PyroError(
      "INVALID_ARGUMENT",
      "PYRO_REGISTRY_USERNAME is set without PYRO_REGISTRY_HOST; set PYRO_REGISTRY_HOST to the registry (host[:port]) the credentials belong to",
    );
  }
  return {
    username: env.PYRO_REGISTRY_USERNAME,
    password: env.PYRO_REGISTRY_PASSWORD ?? "",
    registry: env.PYRO_REGISTRY_HOST.toLowerCase(),
    ...(env.PYRO_REGISTRY_TOKEN_HOST ? { tokenHost: env.PYRO_REGISTRY_TOKEN_HOST.toLowerCase() } : {}),
  };
}

/** The largest blob pyro downloads; a descriptor claiming more is refused before any byte is fetched. */
const MAX_BLOB_BYTES = MAX_UNPACKED_BYTES;

function isLoopbackHostname(hostname: string): boolean {
  const name = hostname.replace(/^\[|\]$/g, "");
  return name === "localhost" || name === "::1" || /^127\.\d+\.\d+\.\d+$/.test(name);
}

/** An OCI Distribution API client for one repository: auth challenges, blobs, manifests. */
export class RegistryClient {
  private authorization: string | undefined;

  constructor(
    private readonly ref: ImageReference,
    private readonly credentials?: RegistryCredentials,
    private readonly timeoutMs = 30_000,
  ) {}

  private url(path: string): string {
    return `${this.ref.insecure ? "http" : "https"}://${this.ref.registry}/v2/${this.ref.repository}/${path}`;
  }

  /** The credentials, when they belong to this client's registry (and only then). */
  private ownCredentials(): RegistryCredentials | undefined {
    return this.credentials && this.credentials.registry === this.ref.registry.toLowerCase() ? this.credentials : undefined;
  }

  private basic(credentials: RegistryCredentials): string {
    return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
  }

  /**
   * Whether a token realm may receive the credentials: over https (plain http only on loopback, for
   * tests), and only at the registry's own host or the token host the user named.
   */
  private realmMayReceive(realm: URL, credentials: RegistryCredentials): boolean {
    const secure = realm.protocol === "https:" || (realm.protocol === "http:" && isLoopbackHostname(realm.hostname));
    const host = realm.host.toLowerCase();
    return secure && (host === credentials.registry || host === credentials.tokenHost);
  }

  /** Answers a 401 challenge: Bearer (fetch a token from the realm) or Basic (send credentials). */
  private async authenticate(challenge: string, scope: string): Promise<void> {
    const scheme = challenge.split(" ")[0]?.toLowerCase();
    const credentials = this.ownCredentials();
    if (scheme === "basic") {
      if (!credentials)
        throw this.unauthorized(
          `the registry requires credentials (set PYRO_REGISTRY_HOST=${this.ref.registry}, PYRO_REGISTRY_USERNAME and PYRO_REGISTRY_PASSWORD)`,
        );
      this.authorization = this.basic(credentials);
      return;
    }
    if (scheme !== "bearer") throw this.unauthorized(`unsupported auth challenge '${challenge}'`);
    const params = Object.fromEntries([...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (!params.realm) throw this.unauthorized("the Bearer challenge names no realm");
    let url: URL;
    try {
      url = new URL(params.realm);
    } catch {
      throw this.unauthorized(`the Bearer challenge names an invalid realm '${params.realm.slice(0, 200)}'`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:")
      throw this.unauthorized(`the Bearer realm '${params.realm.slice(0, 200)}' is not an http(s) URL`);
    if (params.service) url.searchParams.set("service", params.service);
    url.searchParams.set("scope", params.scope ?? scope);
    // An anonymous token is asked of any realm; the credentials go only where they belong.
    const basic = credentials && this.realmMayReceive(url, credentials) ? this.basic(credentials) : undefined;
    const res = await fetch(url, { headers: basic ? { authorization: basic } : {}, redirect: "error", signal: AbortSignal.timeout(this.timeoutMs) });
    if (!res.ok) throw this.unauthorized(`the token service refused access (${res.status})`);
    const body = (await res.json()) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw this.unauthorized("the token service returned no token");
    this.authorization = `Bearer ${token}`;
  }

  private unauthorized(why: string): PyroError {
    return new PyroError("REGISTRY_UNAUTHORIZED", `not authorized for ${this.ref.registry}/${this.ref.repository}: ${why}`);
  }

  /** fetch with auth; retries once after answering a challenge. */
  private async request(
    method: string,
    url: string,
    init: { headers?: Record<string, string>; body?: NonNullable<RequestInit["body"]>; scope: "pull" | "push,pull"; duplex?: boolean },
  ): Promise<Response> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const headers = { ...init.headers, ...(this.authorization ? { authorization: this.authorization } : {}) };
      let res: Response;
      try {
        res = await fetch(url, {
          method,
          headers,
          ...(init.body !== undefined ? { body: init.body } : {}),
          ...(init.duplex ? { duplex: "half" } : {}),
          redirect: "follow",
          signal: AbortSignal.timeout(init.body instanceof Readable || init.duplex ? 3_600_000 : this.timeoutMs),
        } as RequestInit);
      } catch (error) {
        throw new PyroError(
          "REGISTRY_UNREACHABLE",
          `cannot reach registry ${this.ref.registry}: ${(error as Error).cause ? String((error as { cause: unknown }).cause) : (error as Error).message}`,
        );
      }
      if (res.status === 401 && attempt === 0 && !(init.body instanceof Readable)) {
        await this.authenticate(res.headers.get("www-authenticate") ?? "", `repository:${this.ref.repository}:${init.scope}`);
        continue;
      }
      if (res.status === 401 || res.status === 403) throw this.unauthorized(`${res.status} ${res.statusText}`);
      return res;
    }
    throw this.unauthorized("authentication did not succeed");
  }

  async getManifest(reference: string): Promise<{ mediaType: string; body: Buffer; digest: string }> {
    const res = await this.request("GET", this.url(`manifests/${reference}`), { headers: { accept: MANIFEST_TYPES.join(", ") }, scope: "pull" });
    if (res.status === 404) throw new PyroError("REGISTRY_NOT_FOUND", `${this.ref.registry}/${this.ref.repository}:${reference} does not exist`);
    if (!res.ok) throw new PyroError("REGISTRY_ERROR", `fetching the manifest failed: ${res.status} ${await res.text()}`);
    const body = Buffer.from(await res.arrayBuffer());
    const digest = `sha256:${createHash("sha256").update(body).digest("hex")}`;
    if (reference.startsWith("sha256:") && reference !== digest) throw new PyroError("DIGEST_MISMATCH", `manifest digest is ${digest}, expected ${reference}`);
    return { mediaType: (res.headers.get("content-type") ?? "").split(";")[0]!, body, digest };
  }

  async putManifest(reference: string, mediaType: string, body: Buffer): Promise<string> {
    const res = await this.request("PUT", this.url(`manifests/${reference}`), {
      headers: { "content-type": mediaType },
      body: new Uint8Array(body),
      scope: "push,pull",
    });
    if (!res.ok) throw new PyroError("REGISTRY_ERROR", `pushing the manifest failed: ${res.status} ${await res.text()}`);
    return `sha256:${createHash("sha256").update(body).digest("hex")}`;
  }

  async hasBlob(digest: string): Promise<boolean> {
    const res = await this.request("HEAD", this.url(`blobs/${digest}`), { scope: "pull" });
    return res.ok;
  }

  /** Uploads a file as a blob (skipped when the registry already has it). */
  async pushBlob(path: string, digest: string, progress?: ProgressFn): Promise<void> {
    const size = (await stat(path)).size;
    if (await this.hasBlob(digest)) {
      progress?.(size, size);
      return;
    }
    const start = await this.request("POST", this.url("blobs/uploads/"), { scope: "push,pull" });
    if (start.status !== 202) throw new PyroError("REGISTRY_ERROR", `starting an upload failed: ${start.status} ${await start.text()}`);
    const location = new URL(start.headers.get("location") ?? "", this.url("blobs/uploads/"));
    location.searchParams.set("digest", digest);
    let sent = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        sent += chunk.length;
        progress?.(sent, size);
        done(null, chunk);
      },
    });
    const body = Readable.toWeb(createReadStream(path).pipe(counter)) as unknown as NonNullable<RequestInit["body"]>;
    const res = await this.request("PUT", location.toString(), {
      headers: { "content-type": "application/octet-stream", "content-length": String(size) },
      body,
      scope: "push,pull",
      duplex: true,
    });
    if (res.status !== 201) throw new PyroError("REGISTRY_ERROR", `uploading ${digest} failed: ${res.status} ${await res.text()}`);
  }

  /**
   * Downloads a blob to `path`, resuming from `path.partial` with a Range request, verifying the
   * digest before the file appears under its final name. A half download is never used.
   */
  async pullBlob(descriptor: Descriptor, path: string, progress?: ProgressFn): Promise<void> {
    requireDigest(descriptor.digest, `${this.ref.registry}/${this.ref.repository}: a blob`);
    if (!Number.isSafeInteger(descriptor.size) || descriptor.size < 0 || descriptor.size > MAX_BLOB_BYTES) {
      throw new PyroError(
        "REGISTRY_ERROR",
        `blob ${descriptor.digest} declares an impossible size ${descriptor.size} (at most ${MAX_BLOB_BYTES} bytes); it was refused`,
      );
    }
    const partial = `${path}.partial`;
    let have = await stat(partial).then(
      (s) => s.size,
      () => 0,
    );
    if (have > descriptor.size) {
      await rm(partial, { force: true });
      have = 0;
    }
    const res = await this.request("GET", this.url(`blobs/${descriptor.digest}`), { headers: have ? { range: `bytes=${have}-` } : {}, scope: "pull" });
    if (res.status === 404) throw new PyroError("REGISTRY_NOT_FOUND", `blob ${descriptor.digest} is missing from the registry`);
    if (!res.ok || !res.body) throw new PyroError("REGISTRY_ERROR", `downloading ${descriptor.digest} failed: ${res.status}`);
    const resumed = res.status === 206;
    if (!resumed) have = 0;
    const hash = createHash("sha256");
    if (resumed) {
      for await (const chunk of createReadStream(partial)) hash.update(chunk as Buffer);
    }
    let done = have;
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        done += chunk.length;
        // Stop at the first byte past the declared size: an endless body never fills the disk.
        if (done > descriptor.size) {
          cb(
            new PyroError(
              "DIGEST_MISMATCH",
              `blob ${descriptor.digest} sent more than its declared ${descriptor.size} bytes; the download was stopped and discarded`,
            ),
          );
          return;
        }
        hash.update(chunk);
        progress?.(done, descriptor.size);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(Readable.fromWeb(res.body as import("node:stream/web").ReadableStream), tap, createWriteStream(partial, { flags: resumed ? "a" : "w" }));
    } catch (error) {
      if (done > descriptor.size) await rm(partial, { force: true });
      throw error;
    }
    const digest = `sha256:${hash.digest("hex")}`;
    if (digest !== descriptor.digest || done !== descriptor.size) {
      await rm(partial, { force: true });
      throw new PyroError("DIGEST_MISMATCH", `blob ${descriptor.digest} arrived as ${digest} (${done} of ${descriptor.size} bytes); it was discarded`);
    }
    await rename(partial, path);
  }
}

export async function fileDigest(path: string): Promise<{ digest: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${hash.digest("hex")}`, size };
}
