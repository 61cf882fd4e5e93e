/**
 * The library ceiling: a bare mqtt.js subscriber (QoS 1, persistent session)
 * that only counts while it drains its backlog. Run by `scripts/bench.ts` as a
 * subprocess, so its memory is its own; prints one JSON line with its timing,
 * then waits for its stdin to close so the benchmark can read its peak memory.
 *
 * `deno run --allow-net=127.0.0.1 --allow-env bench/bare_subscriber.ts <url> <client id> <count> [<timeout ms>]`
 * @module
 */

import mqtt from "mqtt";

/**
 * What the subscriber prints on stdout when done.
 *
 * @example
 * ```ts
 * const result: BareResult = JSON.parse(line);
 * const rate = result.count / ((result.doneAt - result.connectedAt) / 1000);
 * ```
 */
export interface BareResult {
  /** `Date.now()` at CONNACK: the broker starts sending the backlog then. */
  readonly connectedAt: number;
  /** `Date.now()` when the last expected message arrived. */
  readonly doneAt: number;
  /** Messages received, including any past the expected count. */
  readonly count: number;
}

/**
 * Connects, counts `expected` messages, and resolves with the timing.
 * Rejects after `timeoutMs` when fewer arrived.
 *
 * @example
 * ```ts
 * const result = await drain("mqtt://127.0.0.1:1883", "bench-bare", { expected: 100_000, timeoutMs: 120_000 });
 * ```
 */
export function drain(
  url: string,
  clientId: string,
  options: { expected: number; timeoutMs: number },
): Promise<BareResult> {
  const client = mqtt.connect(url, { clientId, clean: false, reconnectPeriod: 0 });
  let connectedAt = 0;
  let count = 0;
  return new Promise<BareResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      client.end(true);
      reject(new Error(`Received ${count} of ${options.expected} messages in time`));
    }, options.timeoutMs);
    client.on("connect", () => {
      connectedAt = Date.now();
    });
    client.on("error", (error) => {
      clearTimeout(timer);
      client.end(true);
      reject(error);
    });
    client.on("message", () => {
      if (++count !== options.expected) return;
      const doneAt = Date.now();
      clearTimeout(timer);
      // A short grace lets a duplicate or an extra message show in the count.
      setTimeout(() => {
        client.end(false, {}, () => {
          resolve({ connectedAt, doneAt, count });
        });
      }, 200);
    });
  });
}

if (import.meta.main) {
  const [url, clientId, expected, timeoutMs] = Deno.args;
  const result = await drain(url, clientId, {
    expected: Number(expected),
    timeoutMs: Number(timeoutMs ?? 600_000),
  });
  console.log(JSON.stringify(result));
  // Stay alive (and resident) until the benchmark has read /proc/<pid>/status and closes stdin.
  for await (const _ of Deno.stdin.readable) { /* discard */ }
}
