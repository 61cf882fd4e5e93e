/**
 * gridrelay: takes energy-site readings off an MQTT broker, reshapes them
 * through pure stages, spools them durably and delivers them at least once to
 * every configured sink.
 *
 * Run it as a program (`deno task start`), or compose a worker from code:
 *
 * ```ts
 * import { parseConfig, runWorker } from "./mod.ts";
 *
 * const config = parseConfig({ MQTT_URL: "mqtt://127.0.0.1:1883", SINKS: "stdout" });
 * const exitCode = await runWorker(config, { signal: AbortSignal.timeout(60_000) });
 * ```
 * @module
 */

import { getLogger } from "@logtape/logtape";
import {
  type Config,
  CONFIG_VARIABLES,
  ConfigError,
  type Environment,
  parseConfig,
} from "./src/config.ts";
import { resolveClientId } from "./src/client_id.ts";
import { ConnectError, Connector } from "./src/connector.ts";
import { runDeadLetterWriter, runSink } from "./src/delivery.ts";
import { serveHttp } from "./src/http.ts";
import { Intake } from "./src/intake.ts";
import { setupLogging, telemetryFromEnvironment } from "./src/logging.ts";
import { handleShutdownSignals } from "./src/signals.ts";
import { createWorkerMetrics, type WorkerMetrics } from "./src/metrics.ts";
import { PipelineThread } from "./src/pipeline_thread.ts";
import { Spool } from "./src/spool.ts";
import { startSummary } from "./src/summary.ts";
import { explain, loadTls } from "./src/tls.ts";
import { createSinks, SinkConfigError } from "./sinks/registry.ts";
import type { Sink } from "./sinks/sink.ts";

export type { Sink } from "./sinks/sink.ts";
export { RecordsRefusedError, RetryLaterError } from "./sinks/sink.ts";
export type { Message, OutputRecord } from "./src/record.ts";
export { parseRecord, recordText } from "./src/record.ts";
export { type Config, CONFIG_VARIABLES, ConfigError, parseConfig } from "./src/config.ts";
export { createPipeline, type PipelineResult, type Rejection } from "./src/pipeline.ts";
export { Spool } from "./src/spool.ts";
export { Connector } from "./src/connector.ts";
export { createWorkerMetrics, Metrics, type WorkerMetrics } from "./src/metrics.ts";

/** Exit codes of the worker. */
export const EXIT = {
  /** Shut down cleanly. */
  ok: 0,
  /** Something unexpected; see the log. */
  failure: 1,
  /** Missing or invalid configuration. */
  config: 2,
  /** Could not connect to the broker at start-up. */
  connect: 3,
} as const;

/** Options of {@linkcode runWorker}. */
export interface WorkerOptions {
  /** Aborting it starts a graceful shutdown. */
  readonly signal: AbortSignal;
  /** Sinks to use instead of those `SINKS` names (for composing a worker from code). */
  readonly sinks?: readonly Sink[];
  readonly metrics?: WorkerMetrics;
  /** How often the summary line is logged; default 60000 (tests shorten it). */
  readonly summaryIntervalMs?: number;
}

/** Records handed to a sink in one `write`. */
const SINK_BATCH_SIZE = 500;
/** Dead-letter files rotate like the file sink's. */
const DEAD_LETTER_MAX_BYTES = 100 * 1024 * 1024;
const DEAD_LETTER_MAX_FILES = 5;

/**
 * Runs one worker until `options.signal` aborts, then shuts down gracefully
 * within `SHUTDOWN_TIMEOUT_MS`. Resolves to the process exit code: `0` after a
 * clean shutdown, `2` for a configuration problem found while starting, `3`
 * when the broker could not be reached at start-up.
 *
 * @example
 * ```ts
 * const controller = new AbortController();
 * Deno.addSignalListener("SIGTERM", () => controller.abort());
 * Deno.exit(await runWorker(parseConfig(readEnvironment()), { signal: controller.signal }));
 * ```
 */
export async function runWorker(config: Config, options: WorkerOptions): Promise<number> {
  const log = getLogger(["gridrelay"]);
  const metrics = options.metrics ?? createWorkerMetrics();
  metrics.startTime.set(Math.floor(performance.timeOrigin) / 1000);
  const owned: Array<() => Promise<void> | void> = [];
  const closeAll = async () => {
    for (const close of owned.reverse()) {
      try {
        await close();
      } catch (error) {
        log.error("Error while shutting down: {error}", { error });
      }
    }
  };
  try {
    await ensureDirectory("DATA_DIR", config.dataDir);
    const tls = await loadTls(config.mqtt, { dataDir: config.dataDir });
    const clientId = await resolveClientId(config.mqtt.clientId, config.dataDir);
    const sinks = options.sinks ? [...options.sinks] : await createSinks(config.sinks.names, {
      stdoutFormat: config.sinks.stdoutFormat,
      filePath: config.sinks.filePath,
      fileMaxBytes: config.sinks.fileMaxBytes,
      fileMaxFiles: config.sinks.fileMaxFiles,
      webhookUrl: config.sinks.webhookUrl,
      webhookSecret: config.sinks.webhookSecret,
      webhookHeaders: config.sinks.webhookHeaders,
      webhookBatchSize: config.sinks.webhookBatchSize,
      webhookTimeoutMs: config.sinks.webhookTimeoutMs,
    });
    owned.push(async () => {
      for (const sink of sinks) await sink.close?.();
    });
    const spool = Spool.open({
      path: `${config.dataDir}/spool.db`,
      sinks: sinks.map((sink) => sink.name),
      maxBytes: config.spoolMaxBytes,
    });
    owned.push(() => spool.close());
    for (const sink of sinks) {
      // Every sink's series exists from the start, so rate() and alerts see 0, not "no data".
      metrics.recordsDelivered.add(0, sink.name);
      metrics.sinkErrors.add(0, sink.name);
    }
    const summary = startSummary({
      metrics,
      sinks: sinks.map((sink) => sink.name),
      pending: (sink) => spool.pending(sink),
      intervalMs: options.summaryIntervalMs,
    });
    owned.push(() => summary.stop());
    // The JSON work runs on its own thread, beside the one that talks MQTT and feeds the sinks.
    const pipeline = new PipelineThread(config.pipeline);
    owned.push(() => pipeline.close());
    const intake = new Intake({ pipeline, spool, metrics });

    const stopSinks = new AbortController();
    const abortSinks = new AbortController();
    const backoff = { minMs: 500, maxMs: 30_000 };
    const deliveries = [
      ...sinks.map((sink) =>
        runSink(sink, spool, {
          batchSize: SINK_BATCH_SIZE,
          backoff,
          metrics,
          stop: stopSinks.signal,
          abort: abortSinks.signal,
        })
      ),
      runDeadLetterWriter(spool, {
        path: config.deadLetterPath,
        maxBytes: DEAD_LETTER_MAX_BYTES,
        maxFiles: DEAD_LETTER_MAX_FILES,
        backoff,
        metrics,
        stop: stopSinks.signal,
        abort: abortSinks.signal,
      }),
    ];
    const finishDeliveries = async (deadline: AbortSignal) => {
      stopSinks.abort();
      const onDeadline = () => abortSinks.abort();
      deadline.addEventListener("abort", onDeadline, { once: true });
      if (deadline.aborted) onDeadline();
      await Promise.all(deliveries);
      deadline.removeEventListener("abort", onDeadline);
    };

    const connector = new Connector({
      ...config.mqtt,
      ...tls,
      clientId,
      metrics,
      busy: () => intake.saturated,
    }, (message) => intake.accept(message));

    if (config.httpPort !== undefined) {
      const server = serveHttp({
        port: config.httpPort,
        metrics: metrics.registry,
        ready: () => connector.ready,
        unready: () => spool.syncFailure?.message,
        beforeScrape: () => {
          metrics.residentMemory.set(Deno.memoryUsage().rss);
          metrics.spoolBytes.set(spool.bytes);
          for (const sink of sinks) metrics.spoolPending.set(spool.pending(sink.name), sink.name);
        },
      });
      owned.push(() => server.shutdown());
    }

    const started = connector.start();
    const outcome = await Promise.race([
      started.then(() => "started" as const, (error: Error) => error),
      aborted(options.signal).then(() => "aborted" as const),
    ]);
    if (outcome instanceof Error) {
      const connectError = outcome instanceof ConnectError;
      log.error("{message}", { message: connectError ? outcome.message : String(outcome) });
      await intake.close();
      await finishDeliveries(AbortSignal.timeout(config.shutdownTimeoutMs));
      await closeAll();
      return connectError ? EXIT.connect : EXIT.failure;
    }
    if (outcome === "started") {
      log.info("gridrelay is running: {topics} → {sinks}", {
        topics: config.mqtt.topics.join(", "),
        sinks: sinks.map((sink) => sink.name).join(", "),
      });
      await aborted(options.signal);
    }

    log.info("Shutting down: finishing in-flight messages and draining sinks (at most {ms} ms)", {
      ms: config.shutdownTimeoutMs,
    });
    const deadline = AbortSignal.timeout(config.shutdownTimeoutMs);
    await connector.stop(deadline);
    await intake.close();
    await finishDeliveries(deadline);
    const left = sinks
      .map((sink) => ({ sink: sink.name, pending: spool.pending(sink.name) }))
      .filter((entry) => entry.pending > 0);
    if (left.length > 0) {
      log.warn("Undelivered records stay in the spool for the next start: {left}", {
        left: left.map((entry) => `${entry.sink}: ${entry.pending}`).join(", "),
      });
    }
    await closeAll();
    log.info("Stopped cleanly");
    return EXIT.ok;
  } catch (error) {
    await closeAll();
    if (error instanceof ConfigError || error instanceof SinkConfigError) {
      log.error("{message}", { message: error.message });
      return EXIT.config;
    }
    throw error;
  }
}

/** Reads every variable in {@linkcode CONFIG_VARIABLES} from the process environment. */
export function readEnvironment(): Environment {
  const env: Environment = {};
  for (const name of CONFIG_VARIABLES) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}

async function ensureDirectory(variable: string, path: string): Promise<void> {
  try {
    await Deno.mkdir(path, { recursive: true });
  } catch (error) {
    throw new ConfigError(
      variable,
      `${variable}="${path}" cannot be created: ${explain(error, path, "write")}`,
    );
  }
}

function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) =>
    signal.addEventListener("abort", () => resolve(), { once: true })
  );
}

/** The program: configuration from the environment, signals, exit code. */
async function main(): Promise<never> {
  let config: Config;
  try {
    config = parseConfig(readEnvironment());
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`gridrelay: ${error.message}`);
    Deno.exit(EXIT.config);
  }
  setupLogging({
    level: config.logLevel,
    format: config.logFormat,
    telemetry: telemetryFromEnvironment(),
    secrets: [
      config.mqtt.password,
      config.sinks.webhookSecret,
      ...Object.values(config.sinks.webhookHeaders),
    ],
  });
  const log = getLogger(["gridrelay"]);
  const signal = handleShutdownSignals({
    onFirst: (name) => log.info("{signal} received", { signal: name }),
    onSecond: (name) => log.warn("Second {signal}: exiting at once", { signal: name }),
  });
  let code: number;
  try {
    code = await runWorker(config, { signal });
  } catch (error) {
    log.fatal("gridrelay stopped on an unexpected error: {error}", { error });
    code = EXIT.failure;
  }
  Deno.exit(code);
}

if (import.meta.main) await main();
