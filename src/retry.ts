/**
 * Exponential back-off with full jitter, and an abortable sleep. Shared by the
 * connector's reconnects and the sinks' retries so both behave the same way.
 * @module
 */

/** Bounds of an exponential back-off, in milliseconds. */
export interface BackoffOptions {
  /** The ceiling of the first delay. */
  readonly minMs: number;
  /** No delay is longer than this. */
  readonly maxMs: number;
}

/**
 * The delay before retry number `attempt` (0 for the first retry): a random
 * value between `minMs / 2` and `min(maxMs, minMs * 2^attempt)`, so that a
 * fleet of workers that failed together does not retry together.
 *
 * @example
 * ```ts
 * const ms = backoffDelay(3, { minMs: 1000, maxMs: 60000 }); // between 500 and 8000
 * ```
 */
export function backoffDelay(attempt: number, options: BackoffOptions): number {
  const ceiling = Math.min(options.maxMs, options.minMs * 2 ** Math.min(attempt, 52));
  const floor = Math.min(options.minMs / 2, ceiling);
  return Math.round(floor + Math.random() * (ceiling - floor));
}

/**
 * Resolves after `ms` milliseconds, or at once when `signal` aborts; it never
 * rejects. Returns `true` when the whole delay elapsed.
 *
 * @example
 * ```ts
 * const elapsed = await sleep(10, AbortSignal.timeout(1000)); // true
 * ```
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
