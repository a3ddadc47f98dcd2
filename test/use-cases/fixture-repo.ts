import { spawnSync } from "node:child_process";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

/** A file of a fixture: its text, or its text and mode (an executable script). */
export type FixtureFile = string | { text: string; mode: number };

/** A small project a recipe works on: committed files, plus what lies around uncommitted. */
export interface FixtureProject {
  /** Committed to the Git history (a .gitignore among them decides what `ignored` is). */
  committed: Record<string, FixtureFile>;
  /** Written after the commit, not ignored: a project-aware seed carries them. */
  untracked?: Record<string, FixtureFile>;
  /** Written after the commit and matched by .gitignore: a project-aware seed leaves them out. */
  ignored?: Record<string, FixtureFile>;
  /** Plain directory instead of a Git checkout (an untrusted download). */
  plainDirectory?: boolean;
}

async function writeFiles(root: string, files: Record<string, FixtureFile>): Promise<void> {
  for (const [path, file] of Object.entries(files)) {
    const target = join(root, path);
    await mkdir(dirname(target), { recursive: true });
    const { text, mode } = typeof file === "string" ? { text: file, mode: 0o644 } : file;
    await writeFile(target, text);
    await chmod(target, mode);
  }
}

/** Runs git for the fixture with no user or system config, so the commit looks the same everywhere. */
function git(cwd: string, args: string[]): void {
  const r = spawnSync(
    "git",
    ["-c", "user.name=pyro", "-c", "user.email=pyro@localhost", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", ...args],
    {
      cwd,
      encoding: "utf8",
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: cwd, GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null" },
    },
  );
  if (r.status !== 0) throw new Error(`git ${args.join(" ")} failed: ${r.stderr}`);
}

/** Makes the project in a fresh temporary directory (a Git checkout unless plainDirectory). */
export async function makeFixtureProject(project: FixtureProject): Promise<{ dir: string; dispose: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "pyro-recipe-"));
  await writeFiles(dir, project.committed);
  if (!project.plainDirectory) {
    git(dir, ["init", "-q"]);
    git(dir, ["add", "-A"]);
    git(dir, ["commit", "-q", "-m", "fixture"]);
  }
  await writeFiles(dir, project.untracked ?? {});
  await writeFiles(dir, project.ignored ?? {});
  return { dir, dispose: () => rm(dir, { recursive: true, force: true }) };
}
