import { readFile } from "node:fs/promises";
import { PyroError } from "../errors.js";

/** Text a command reads from a host file named by an option ('-' is stdin where allowed). */
export async function readHostText(path: string, option: string): Promise<string> {
  if (path === "-") return readStdin();
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === "ENOENT" ? "no such file" : code === "EISDIR" ? "it is a directory" : code === "EACCES" ? "permission denied" : (error as Error).message;
    throw new PyroError("INVALID_ARGUMENT", `cannot read ${option} ${path}: ${why}`);
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
