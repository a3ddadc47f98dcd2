import xtermHeadless from "@xterm/headless";

const { Terminal } = xtermHeadless;

/**
 * Renders raw terminal output as the plain text a screen would show: escape sequences, cursor
 * movement, carriage-return overwrites and backspaces are interpreted by a terminal emulator.
 */
export async function renderPlain(raw: string, cols: number): Promise<string> {
  // logLevel off: guest output is arbitrary bytes, and the emulator would print every parse error to stderr.
  const term = new Terminal({ cols, rows: 50, scrollback: 100_000, allowProposedApi: true, convertEol: false, logLevel: "off" });
  await new Promise<void>((resolve) => term.write(raw, resolve));
  const buffer = term.buffer.active;
  const lines: string[] = [];
  for (let i = 0; i < buffer.length; i++) {
    const line = buffer.getLine(i);
    if (!line) continue;
    const text = line.translateToString(true);
    if (line.isWrapped && lines.length) lines[lines.length - 1] += text;
    else lines.push(text);
  }
  term.dispose();
  while (lines.length && lines[lines.length - 1] === "") lines.pop();
  return lines.join("\n");
}
