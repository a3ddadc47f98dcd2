/** Whether bytes are text a model or a diff can show: valid UTF-8 and no NUL bytes. */
export function isText(data: Buffer): boolean {
  return !data.includes(0) && Buffer.from(data.toString("utf8"), "utf8").equals(data);
}
