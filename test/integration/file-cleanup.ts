// Clean-up that helpers register for the test file calling them. Vitest silently drops an
// afterAll registered while the file runs (from inside a beforeAll), which is where helpers such
// as useNamespace and startApiServer are called: their clean-up never ran, and an APIService left
// pointing at a stopped API component blocked every later namespace deletion on the shared
// control plane. This module's own afterAll is registered when a test file imports it, on the
// file's root suite, so it runs once the file's tests and describe blocks are done.
import { afterAll } from "vitest";

const cleanups: (() => Promise<unknown> | unknown)[] = [];

async function runCleanups(): Promise<void> {
  const failures: unknown[] = [];
  // Last registered first: what was made later may depend on what was made before.
  for (let cleanup = cleanups.pop(); cleanup; cleanup = cleanups.pop())
    await Promise.resolve()
      .then(cleanup)
      .catch((error: unknown) => failures.push(error));
  if (failures.length > 0) throw new AggregateError(failures, "clean-up after the test file failed");
}

try {
  afterAll(runCleanups, 120_000);
} catch {
  // Imported outside a test file (a lab script using the helpers): no file to clean up after.
}

/** Runs `cleanup` after the calling test file, whether called while collecting or from a hook. */
export function afterThisFile(cleanup: () => Promise<unknown> | unknown): void {
  cleanups.push(cleanup);
}
