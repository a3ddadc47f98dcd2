/**
 * `make`, run once and its result shared by every later call, unless it fails: a failure is not
 * kept, so the next call runs `make` again (a module that could not load, a directory that could
 * not be checked yet).
 */
export function memoizeUntilFailure<T>(make: () => Promise<T>): () => Promise<T> {
  let made: Promise<T> | undefined;
  return () => {
    made ??= make().catch((error: unknown) => {
      made = undefined;
      throw error;
    });
    return made;
  };
}
