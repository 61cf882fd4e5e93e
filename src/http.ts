/**
 * The operator's window: `/healthz` (the process is alive), `/readyz`
 * (connected and subscribed, and able to make messages durable) and
 * `/metrics` (Prometheus text format), served with `Deno.serve` when
 * `HTTP_PORT` is set.
 * @module
 */

import { getLogger, type Logger } from "@logtape/logtape";
import type { Metrics } from "./metrics.ts";

/** Options of {@linkcode serveHttp}. */
export interface HttpOptions {
  readonly port: number;
  readonly hostname?: string;
  readonly metrics: Metrics;
  /** Whether the worker is connected and subscribed. */
  readonly ready: () => boolean;
  /**
   * Why the worker cannot do its job although it is connected, if it cannot
   * (e.g. the spool's disk failed a sync): `/readyz` then answers 503 with it.
   */
  readonly unready?: () => string | undefined;
  /** Called just before each `/metrics` render, to refresh gauges. */
  readonly beforeScrape?: () => void;
}

/**
 * Starts the server; shut it down with the returned server's `shutdown()`.
 * Binds `0.0.0.0` unless `hostname` says otherwise; `port: 0` picks a free
 * port (read it from the server's `addr`).
 *
 * @example
 * ```ts
 * const server = serveHttp({ port: 9464, metrics: registry, ready: () => connector.ready });
 * await server.shutdown();
 * ```
 */
export function serveHttp(options: HttpOptions): Deno.HttpServer<Deno.NetAddr> {
  const log = getLogger(["gridrelay", "http"]);
  return Deno.serve({
    port: options.port,
    hostname: options.hostname ?? "0.0.0.0",
    onListen: ({ hostname, port }) => {
      log.info("Serving /healthz, /readyz and /metrics on http://{hostname}:{port}", {
        hostname,
        port,
      });
    },
  }, (request) => {
    const { pathname } = new URL(request.url);
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    switch (pathname) {
      case "/healthz":
        return new Response("ok\n");
      case "/readyz": {
        if (!options.ready()) {
          return new Response("not connected and subscribed to the broker\n", { status: 503 });
        }
        const reason = options.unready?.();
        return reason === undefined
          ? new Response("ready\n")
          : new Response(`${reason}\n`, { status: 503 });
      }
      case "/metrics":
        return scrape(options, log);
      default:
        return new Response("not found: try /healthz, /readyz or /metrics\n", { status: 404 });
    }
  });
}

function scrape(options: HttpOptions, log: Logger): Response {
  try {
    options.beforeScrape?.();
    return new Response(options.metrics.render(), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  } catch (error) {
    // A failed refresh (e.g. the spool closing at shutdown) is one failed scrape, not a crash.
    log.warn("Could not render /metrics: {error}", { error });
    return new Response(`metrics unavailable: ${(error as Error).message}\n`, { status: 500 });
  }
}
