/**
 * The webhook the benchmark delivers to: a loopback HTTP server that reads
 * each POST and answers 200 at once, or 503 while an outage is simulated.
 * @module
 */

/**
 * A running loopback webhook. `await using` shuts it down.
 *
 * @example
 * ```ts
 * await using webhook = startWebhookServer();
 * webhook.failing = true; // an outage: every POST gets 503
 * ```
 */
export interface WebhookServer extends AsyncDisposable {
  /** `http://127.0.0.1:<port>/ingest`. */
  readonly url: string;
  /** While true, every POST is answered 503 Service Unavailable. */
  failing: boolean;
  /** POSTs answered 200 so far. */
  readonly accepted: number;
  /** POSTs answered 503 so far. */
  readonly refused: number;
  /** Stops listening and closes open connections. */
  close(): Promise<void>;
}

/**
 * Starts the server on a free loopback port.
 *
 * @example
 * ```ts
 * const webhook = startWebhookServer();
 * // WEBHOOK_URL=webhook.url
 * await webhook.close();
 * ```
 */
export function startWebhookServer(): WebhookServer {
  let accepted = 0;
  let refused = 0;
  const state = { failing: false };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      // Read the body whatever the answer, as a real endpoint would, so the connection stays reusable.
      await request.arrayBuffer();
      if (state.failing) {
        refused++;
        return new Response("simulated outage\n", { status: 503 });
      }
      accepted++;
      return new Response(null, { status: 200 });
    },
  );
  const url = `http://127.0.0.1:${server.addr.port}/ingest`;
  const close = () => server.shutdown();
  return {
    url,
    get failing() {
      return state.failing;
    },
    set failing(value: boolean) {
      state.failing = value;
    },
    get accepted() {
      return accepted;
    },
    get refused() {
      return refused;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
