/**
 * Small file-system helpers for tests that read what a worker wrote: a temp
 * dir that removes itself, a file's lines, and a deadline-bounded poll for
 * conditions that have no event to await (a file's contents, an HTTP answer).
 * @module
 */

/**
 * A fresh temp dir; `await using` removes it with everything in it.
 *
 * @example
 * ```ts
 * await using dir = await tempDir();
 * await Deno.writeTextFile(`${dir}/x`, "y");
 * ```
 */
export async function tempDir(prefix = "gridrelay-test-"): Promise<string & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix });
  return Object.assign(path, {
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  }) as unknown as string & AsyncDisposable;
}

/**
 * The non-empty lines of a file, or none when it does not exist yet.
 *
 * @example
 * ```ts
 * const records = (await readLines("./data/readings.jsonl")).map((line) => JSON.parse(line));
 * ```
 */
export async function readLines(path: string): Promise<string[]> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter((line) => line !== "");
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

/** Options of {@linkcode eventually}. */
export interface EventuallyOptions {
  /** Default 20000. */
  readonly timeoutMs?: number;
  /** Appended to the timeout error, to say how far it got. */
  readonly progress?: () => string;
}

/**
 * Polls `check` every 50 ms until it returns something other than
 * `undefined`, and returns that; throws naming `what` after the deadline.
 *
 * @example
 * ```ts
 * const lines = await eventually("3 records", async () => {
 *   const lines = await readLines(path);
 *   return lines.length >= 3 ? lines : undefined;
 * });
 * ```
 */
export async function eventually<T>(
  what: string,
  check: () => T | undefined | Promise<T | undefined>,
  options: EventuallyOptions = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  while (true) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      const progress = options.progress?.();
      throw new Error(`timed out waiting for ${what}${progress ? ` (${progress})` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
