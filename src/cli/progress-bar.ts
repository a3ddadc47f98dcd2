/** A transfer progress line on stderr: label, bytes done / total, rate. Redrawn at most 10x a second. */
export function progressBar(label: string): (done: number, total: number) => void {
  const started = Date.now();
  let last = 0;
  const mib = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return (done, total) => {
    const now = Date.now();
    if (now - last < 100 && done < total) return;
    last = now;
    const rate = done / Math.max(0.001, (now - started) / 1000);
    const pct = total ? Math.floor((done / total) * 100) : 0;
    const width = 24;
    const filled = Math.round((pct / 100) * width);
    process.stderr.write(
      `\r[${"#".repeat(filled)}${".".repeat(width - filled)}] ${String(pct).padStart(3)}% ${label} ${mib(done)} / ${mib(total)} ${mib(rate)}/s   `,
    );
    if (done >= total) process.stderr.write("\n");
  };
}
