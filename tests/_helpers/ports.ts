/**
 * Loopback ports for integration tests: pick a free one, and wait until a
 * server accepts on it. Waiting polls with a deadline because a child process
 * (mosquitto, the worker) gives us no event when its socket starts listening.
 * @module
 */

import { sleep } from "../../src/retry.ts";

/**
 * The only address tests bind to or connect to.
 *
 * @example
 * ```ts
 * const url = `http://${LOOPBACK}:${freePort()}/hook`;
 * ```
 */
export const LOOPBACK = "127.0.0.1";

/**
 * A TCP port on 127.0.0.1 that was free a moment ago: binds port 0, reads the
 * port the kernel chose, and closes the listener. Another process may take it
 * before the caller binds it; callers that start servers retry on that error.
 *
 * @example
 * ```ts
 * const port = freePort();
 * const server = Deno.serve({ hostname: "127.0.0.1", port }, () => new Response("ok"));
 * await server.shutdown();
 * ```
 */
export function freePort(): number {
  const listener = Deno.listen({ hostname: LOOPBACK, port: 0, transport: "tcp" });
  try {
    return (listener.addr as Deno.NetAddr).port;
  } finally {
    listener.close();
  }
}

/**
 * Options of {@linkcode waitForPort}.
 *
 * @example
 * ```ts
 * await waitForPort(port, { timeoutMs: 2000, signal: AbortSignal.timeout(3000) });
 * ```
 */
export interface WaitForPortOptions {
  /** Give up after this long. Default 10000. */
  timeoutMs?: number;
  /** Stops waiting early (e.g. when the server process exited); rejects with its reason. */
  signal?: AbortSignal;
  /** Time between attempts. Default 20. */
  intervalMs?: number;
}

/**
 * Resolves once a TCP connection to `127.0.0.1:port` succeeds (the probe
 * connection is closed at once); rejects when `timeoutMs` passes or `signal`
 * aborts first.
 *
 * @example
 * ```ts
 * await waitForPort(1883, { timeoutMs: 5000 });
 * ```
 */
export async function waitForPort(port: number, options: WaitForPortOptions = {}): Promise<void> {
  const { timeoutMs = 10_000, intervalMs = 20, signal } = options;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (true) {
    signal?.throwIfAborted();
    try {
      const connection = await Deno.connect({ hostname: LOOPBACK, port });
      connection.close();
      return;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) {
      throw new Error(
        `Nothing accepted connections on ${LOOPBACK}:${port} within ${timeoutMs} ms ` +
          `(last error: ${lastError}); check that the server started and listens on that port.`,
      );
    }
    await sleep(intervalMs, signal);
  }
}
