import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A small repo with a failing test: add() subtracts. */
export async function makeSeedRepo(): Promise<{ dir: string; dispose: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "pyro-seed-"));
  await mkdir(join(dir, "src"));
  await writeFile(join(dir, "src", "calc.py"), "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n");
  await writeFile(
    join(dir, "test.sh"),
    '#!/bin/sh\npython3 -c \'import sys; sys.path.insert(0, "src"); from calc import add; assert add(2, 3) == 5, add(2, 3); print("tests pass")\'\n',
    { mode: 0o755 },
  );
  await writeFile(join(dir, "README.md"), "demo\n");
  await writeFile(join(dir, "logo.bin"), Buffer.from([0, 1, 2, 3, 255]));
  return { dir, dispose: () => rm(dir, { recursive: true, force: true }) };
}

export const FIX_PATCH = `--- a/src/calc.py
+++ b/src/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
`;
