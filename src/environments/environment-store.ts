import { open, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { PyroError } from "../errors.js";
import type { PyroPaths } from "../paths.js";
import { processAlive } from "../process/process-alive.js";
import { readJsonIfValid, writeJsonAtomic } from "../storage/atomic-file.js";
import { CATALOG, environmentSlug, findEnvironment, type EnvironmentSpec } from "./catalog.js";
import { buildRootfsImage, IMAGE_SIZE_BYTES } from "./rootfs-build.js";

const InstallManifest = z.object({
  name: z.string(),
  version: z.string(),
  packages: z.array(z.string()),
  suite: z.string(),
  imageFile: z.string(),
  imageSizeBytes: z.number(),
  builtAt: z.string(),
  buildSeconds: z.number(),
  /** Where the image came from: a local build, a registry artifact, or an imported container image. */
  source: z.object({ kind: z.enum(["build", "registry", "import"]), ref: z.string().optional(), digest: z.string().optional() }).optional(),
  /** Set for environments outside the catalog (imported images, pulled custom artifacts). */
  description: z.string().optional(),
});
export type InstallManifest = z.infer<typeof InstallManifest>;

export interface InstalledEnvironment {
  readonly spec: EnvironmentSpec;
  readonly dir: string;
  readonly imagePath: string;
  readonly manifest: InstallManifest;
}

export interface EnvironmentStatus {
  name: string;
  version: string;
  description: string;
  installed: boolean;
  /** Set when files exist but are unusable, with the reason. */
  problem?: string;
  dir: string;
  // snake_case like every other result pyro prints as JSON (`env list/inspect --json`, the SDK).
  image_path?: string;
  image_size_bytes?: number;
  disk_usage_bytes?: number;
  built_at?: string;
  packages: string[];
}

const EXT4_MAGIC_OFFSET = 1080;
const EXT4_MAGIC = 0xef53;

/** Installed environments under <cache>/environments/<slug>/{manifest.json, rootfs.ext4}. */
export class EnvironmentStore {
  constructor(private readonly paths: PyroPaths) {}

  get rootDir(): string {
    return join(this.paths.cacheDir, "environments");
  }

  dirFor(name: string): string {
    return join(this.rootDir, environmentSlug(name));
  }

  /** Checks an install without trusting it: manifest, version, image size and ext4 superblock. */
  async check(spec: EnvironmentSpec): Promise<{ installed?: InstalledEnvironment; problem?: string }> {
    const dir = this.dirFor(spec.name);
    const manifest = await readJsonIfValid(join(dir, "manifest.json"), InstallManifest);
    if (!manifest) {
      const leftovers = await readdir(dir).catch(() => []);
      return leftovers.length ? { problem: "incomplete install (no valid manifest)" } : {};
    }
    if (manifest.version !== spec.version) return { problem: `stale install (version ${manifest.version}, catalog ${spec.version})` };
    const imagePath = join(dir, manifest.imageFile);
    let size: number;
    try {
      size = (await stat(imagePath)).size;
    } catch {
      return { problem: `image ${imagePath} is missing` };
    }
    if (size !== manifest.imageSizeBytes) return { problem: `image ${imagePath} has size ${size}, expected ${manifest.imageSizeBytes}` };
    if (!(await hasExt4Superblock(imagePath))) return { problem: `image ${imagePath} is corrupt (no ext4 superblock)` };
    return { installed: { spec, dir, imagePath, manifest } };
  }

  async status(spec: EnvironmentSpec): Promise<EnvironmentStatus> {
    const { installed, problem } = await this.check(spec);
    const base: EnvironmentStatus = {
      name: spec.name,
      version: spec.version,
      description: spec.description,
      installed: Boolean(installed),
      dir: this.dirFor(spec.name),
      packages: [...spec.packages],
    };
    if (problem) base.problem = problem;
    if (installed) {
      const st = await stat(installed.imagePath);
      Object.assign(base, {
        image_path: installed.imagePath,
        image_size_bytes: st.size,
        disk_usage_bytes: st.blocks * 512,
        built_at: installed.manifest.builtAt,
      });
    }
    return base;
  }

  async list(): Promise<EnvironmentStatus[]> {
    const catalogSlugs = new Set(CATALOG.map((e) => environmentSlug(e.name)));
    const custom: EnvironmentSpec[] = [];
    for (const entry of await readdir(this.rootDir).catch(() => [] as string[])) {
      if (catalogSlugs.has(entry) || entry.includes(".")) continue;
      const manifest = await readJsonIfValid(join(this.rootDir, entry, "manifest.json"), InstallManifest);
      const spec = manifest ? await this.customSpec(manifest.name) : undefined;
      if (spec) custom.push(spec);
    }
    return Promise.all([...CATALOG, ...custom].map((spec) => this.status(spec)));
  }

  /**
   * Moves a fully prepared install directory into place (old install removed after), so a VM
   * never sees a half-written environment.
   */
  async install(name: string, staged: string, manifest: InstallManifest): Promise<InstalledEnvironment> {
    await writeJsonAtomic(join(staged, "manifest.json"), manifest);
    const dir = this.dirFor(name);
    const old = `${dir}.old-${process.pid}`;
    await rename(dir, old).catch(() => undefined);
    await rename(staged, dir);
    await rm(old, { recursive: true, force: true });
    const spec = await this.spec(name);
    const result = await this.check(spec);
    if (!result.installed) throw new PyroError("ENVIRONMENT_CORRUPT", `environment ${name} failed validation after install: ${result.problem}`);
    return result.installed;
  }

  /** A non-catalog environment's spec, read from its install manifest. */
  async customSpec(name: string): Promise<EnvironmentSpec | undefined> {
    if (CATALOG.some((e) => e.name === name)) return undefined;
    const manifest = await readJsonIfValid(join(this.dirFor(name), "manifest.json"), InstallManifest);
    if (!manifest || manifest.name !== name) return undefined;
    return {
      name,
      version: manifest.version,
      description: manifest.description ?? `${manifest.source?.kind ?? "custom"} environment`,
      suite: manifest.suite,
      packages: manifest.packages,
    };
  }

  /** Catalog entry or installed custom environment; unknown names are a clear error. */
  async spec(name: string): Promise<EnvironmentSpec> {
    return (await this.customSpec(name)) ?? findEnvironment(name);
  }

  /** The installed environment, or a clear error saying how to install or repair it. */
  async require(name: string): Promise<InstalledEnvironment> {
    const spec = await this.spec(name);
    const { installed, problem } = await this.check(spec);
    if (installed) return installed;
    if (problem) {
      throw new PyroError("ENVIRONMENT_CORRUPT", `environment ${name} is unusable: ${problem}; repair it with 'pyro env pull ${name}'`, { environment: name });
    }
    throw new PyroError("ENVIRONMENT_NOT_INSTALLED", `environment ${name} is not installed; install it with 'pyro env pull ${name}'`, { environment: name });
  }

  /** Installs (or repairs) an environment. A valid install is kept unless `force`. */
  async pull(name: string, options: { force?: boolean; onProgress?: (m: string) => void } = {}): Promise<InstalledEnvironment> {
    const spec = findEnvironment(name);
    const progress = options.onProgress ?? (() => undefined);
    const current = await this.check(spec);
    if (current.installed && !options.force) {
      progress(`[pull] phase=ready environment=${name} cached=yes`);
      return current.installed;
    }
    const started = Date.now();
    // Build beside the live install and swap at the end: a failed or interrupted build never leaves
    // a half-written environment where a VM could use it.
    const work = `${this.dirFor(name)}.build-${process.pid}`;
    const imageFile = "rootfs.ext4";
    await rm(work, { recursive: true, force: true });
    try {
      await buildRootfsImage(spec, join(work, "tmp"), join(work, imageFile), progress);
      await rm(join(work, "tmp"), { recursive: true, force: true });
      const manifest: InstallManifest = {
        name,
        version: spec.version,
        packages: [...spec.packages],
        suite: spec.suite,
        imageFile,
        imageSizeBytes: IMAGE_SIZE_BYTES,
        builtAt: new Date().toISOString(),
        buildSeconds: Math.round((Date.now() - started) / 100) / 10,
        source: { kind: "build" },
      };
      const installed = await this.install(name, work, manifest);
      progress(`[pull] phase=ready environment=${name} seconds=${installed.manifest.buildSeconds}`);
      return installed;
    } catch (error) {
      await rm(work, { recursive: true, force: true });
      throw error;
    }
  }

  /** Removes installs that are not usable (stale, corrupt, interrupted builds) and unknown directories. */
  async prune(options: { all?: boolean } = {}): Promise<{ removed: string[] }> {
    const removed: string[] = [];
    const entries = await readdir(this.rootDir).catch(() => [] as string[]);
    const known = new Map(CATALOG.map((s) => [environmentSlug(s.name), s]));
    for (const entry of entries) {
      // A build in progress belongs to a live pyro process; leave it alone.
      const builder = /\.build-(\d+)$/.exec(entry)?.[1];
      if (builder && processAlive(Number(builder))) continue;
      const spec = known.get(entry);
      const keep = spec && !options.all && (await this.check(spec)).installed;
      if (!keep) {
        await rm(join(this.rootDir, entry), { recursive: true, force: true });
        removed.push(entry);
      }
    }
    return { removed };
  }
}

async function hasExt4Superblock(path: string): Promise<boolean> {
  const handle = await open(path, "r");
  try {
    const buf = Buffer.alloc(2);
    const { bytesRead } = await handle.read(buf, 0, 2, EXT4_MAGIC_OFFSET);
    return bytesRead === 2 && buf.readUInt16LE(0) === EXT4_MAGIC;
  } catch {
    return false;
  } finally {
    await handle.close();
  }
}
