/**
 * `deno task bench`: gridrelay's throughput against the bare mqtt.js
 * subscriber, side by side in one run, on a mosquitto it starts itself on
 * loopback. Prints one table (rates, ratio to the bare subscriber, peak RSS,
 * latency at a steady rate); `--help` lists the knobs. Not part of the tests.
 * @module
 */

import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { type Broker, startBroker } from "../tests/_helpers/broker.ts";
import { missingTools } from "../tests/_helpers/require.ts";
import { freePort } from "../tests/_helpers/ports.ts";
import type { BareResult } from "../bench/bare_subscriber.ts";
import {
  createSessions,
  publishBacklog,
  publishSteadily,
  waitForStoredMessages,
} from "../bench/load.ts";
import {
  type GridrelayProcess,
  metricValue,
  processCpuSeconds,
  processMemory,
  readProcFile,
  startGridrelay,
  type ThreadCpu,
} from "../bench/gridrelay_process.ts";
import { startWebhookServer, type WebhookServer } from "../bench/webhook_server.ts";

const REPO_ROOT = new URL("../", import.meta.url);
const MiB = 2 ** 20;

/** The drains a run can make; each is one row of the table per window. */
const ROWS = {
  bare: { label: "mqtt.js bare subscriber", sink: "" },
  file: { label: "gridrelay → file", sink: "file" },
  stdout: { label: "gridrelay → stdout (/dev/null)", sink: "stdout" },
  webhook: { label: "gridrelay → webhook (WEBHOOK_BATCH_SIZE=100)", sink: "webhook" },
  "webhook-single": {
    label: "gridrelay → webhook (WEBHOOK_BATCH_SIZE=1, the default)",
    sink: "webhook",
  },
} as const;
type Row = keyof typeof ROWS;

function rowNames(): string {
  return Object.keys(ROWS).join(",");
}

const HELP = `deno task bench [options]

  --messages N        backlog size (env BENCH_MESSAGES; default 100000)
  --repeat R          drain each backlog R times, interleaved; the table shows medians (default 3)
  --windows A,B       mosquitto max_inflight_messages values to drain under (default 20,1000)
  --rows LIST         which drains: ${rowNames()} (default all)
  --latency-seconds S steady-rate run for the file sink's latency; 0 skips (default 20)
  --rate R            messages per second of the steady runs (default 1000)
  --outage-seconds S  webhook outage at the steady rate, memory sampled; 0 skips (default 60)
  --cpu-prof DIR      run gridrelay under --cpu-prof, profiles in DIR
  --deno-flag FLAG    an extra flag for gridrelay's deno run (repeatable)
  --compare DIR       also drain every gridrelay row with the checkout in DIR (e.g. a git
                      worktree of main), interleaved with this one's: an A/B of a change
  --worker-logs DIR   keep each gridrelay worker's log (its stderr) as DIR/<pid>.log
`;

/** One request per record is slow by nature: that row times its first records only. */
const SINGLE_WEBHOOK_RECORDS = 10_000;

/** Every knob of a run. */
interface BenchOptions {
  readonly messages: number;
  readonly repeat: number;
  readonly windows: readonly number[];
  readonly rows: readonly Row[];
  readonly latencySeconds: number;
  readonly rate: number;
  readonly outageSeconds: number;
  readonly cpuProfileDir?: string;
  readonly denoFlags: readonly string[];
  /** Another checkout whose gridrelay drains beside this one's. */
  readonly compare?: URL;
  readonly workerLogs?: string;
}

/** One row of the drains: which drain, from which checkout. */
interface Lane {
  readonly row: Row;
  readonly root: URL;
  readonly label: string;
}

/** One drain of one backlog. */
interface Drain {
  readonly rate: number;
  readonly peakRss: number;
  readonly cpuSeconds: number;
  /** CPU seconds mosquitto used meanwhile. */
  readonly brokerCpuSeconds: number;
  /** gridrelay's CPU seconds by kind of thread. */
  readonly threads?: ThreadCpu;
  /** How many records were timed, when not the whole backlog. */
  readonly timed?: number;
}

/** One line of the results table. */
interface Result {
  readonly label: string;
  readonly window: number;
  readonly row: Row | "steady";
  readonly drains: readonly Drain[];
  /** Median over the repeats of this row's rate divided by the bare subscriber's in the same repeat. */
  readonly ratio?: number;
  readonly p50?: number;
  readonly p99?: number;
  readonly note?: string;
}

/** Whatever the run started, closed in reverse on the way out, Ctrl-C included. */
const owned: Array<() => Promise<unknown>> = [];

async function main(): Promise<void> {
  const options = readOptions();
  if (!options) {
    console.log(HELP);
    return;
  }
  const missing = missingTools(["mosquitto"]);
  if (missing.length > 0) {
    console.error("deno task bench needs mosquitto on PATH: apt-get install -y mosquitto");
    Deno.exit(1);
  }
  const onInterrupt = async () => {
    console.error("\nInterrupted: stopping the brokers and workers, removing temp files");
    await closeOwned();
    Deno.exit(130);
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  try {
    await warmCache(REPO_ROOT);
    if (options.compare) await warmCache(options.compare);
    const webhookAvailable = await exists(new URL("sinks/webhook.ts", REPO_ROOT));
    const results: Result[] = [];
    for (const window of options.windows) {
      results.push(...await drainBacklogs(options, window, webhookAvailable));
    }
    if (options.latencySeconds > 0) results.push(await steadyLatency(options));
    await printTable(options, results);
    if (options.outageSeconds > 0) {
      if (webhookAvailable) await webhookOutage(options);
      else console.log("\nWebhook outage: skipped, sinks/webhook.ts does not exist yet.");
    }
  } finally {
    await closeOwned();
    Deno.removeSignalListener("SIGINT", onInterrupt);
  }
}

function readOptions(): BenchOptions | undefined {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      messages: { type: "string" },
      repeat: { type: "string" },
      windows: { type: "string" },
      rows: { type: "string" },
      "latency-seconds": { type: "string" },
      rate: { type: "string" },
      "outage-seconds": { type: "string" },
      "cpu-prof": { type: "string" },
      "deno-flag": { type: "string", multiple: true },
      compare: { type: "string" },
      "worker-logs": { type: "string" },
      help: { type: "boolean" },
    },
  });
  if (values.help) return undefined;
  const number = (name: string, text: string | undefined, fallback: number, min: number) => {
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!Number.isInteger(value) || value < min) {
      throw new Error(`--${name}=${text} is invalid: expected a whole number of at least ${min}`);
    }
    return value;
  };
  const rows = [...new Set((values.rows ?? rowNames()).split(",").map((row) => row.trim()))];
  for (const row of rows) {
    if (!(row in ROWS)) throw new Error(`--rows lists "${row}": expected some of ${rowNames()}`);
  }
  return {
    messages: number("messages", values.messages ?? Deno.env.get("BENCH_MESSAGES"), 100_000, 1),
    repeat: number("repeat", values.repeat, 3, 1),
    windows: (values.windows ?? "20,1000").split(",").map((text) => number("windows", text, 0, 0)),
    rows: rows as Row[],
    latencySeconds: number("latency-seconds", values["latency-seconds"], 20, 0),
    rate: number("rate", values.rate, 1000, 1),
    outageSeconds: number("outage-seconds", values["outage-seconds"], 60, 0),
    cpuProfileDir: values["cpu-prof"],
    denoFlags: values["deno-flag"] ?? [],
    compare: values.compare === undefined ? undefined : checkoutUrl(values.compare),
    workerLogs: values["worker-logs"],
  };
}

/** `--compare`'s directory as a URL ending in a slash; it must hold a gridrelay. */
function checkoutUrl(dir: string): URL {
  try {
    const url = pathToFileURL(`${Deno.realPathSync(dir)}/`);
    Deno.statSync(new URL("mod.ts", url));
    return url;
  } catch {
    throw new Error(`--compare=${dir} is invalid: expected a gridrelay checkout, with a mod.ts`);
  }
}

/** Compiles mod.ts and the bare subscriber once, so no run pays for it. */
async function warmCache(root: URL): Promise<void> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "cache",
      "--config",
      new URL("deno.json", root).pathname,
      new URL("mod.ts", root).pathname,
      new URL("src/pipeline_worker.ts", root).pathname,
      new URL("bench/bare_subscriber.ts", REPO_ROOT).pathname,
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!output.success) {
    throw new Error(`deno cache failed:\n${new TextDecoder().decode(output.stderr)}`);
  }
}

/** A broker with unlimited queues and the given in-flight window (0 = unlimited). */
async function benchBroker(window: number): Promise<Broker> {
  const broker = await startBroker({
    logTypes: ["error", "warning"],
    extraConfig: [
      "max_queued_messages 0",
      "max_queued_bytes 0",
      `max_inflight_messages ${window}`,
      "sys_interval 1",
    ].join("\n"),
  });
  owned.push(() => broker.stop());
  return broker;
}

/**
 * Queues the backlog once for every session (each row, each repeat) under one
 * broker, checks the broker holds it all, then drains the sessions in turn:
 * repeat by repeat, every row in each, so the bare subscriber and gridrelay
 * meet the same machine conditions.
 */
async function drainBacklogs(
  options: BenchOptions,
  window: number,
  webhookAvailable: boolean,
): Promise<Result[]> {
  const { messages, repeat } = options;
  const rows = options.rows.filter((row) => ROWS[row].sink !== "webhook" || webhookAvailable);
  const lanes: Lane[] = rows.flatMap((row) => {
    const lane = { row, root: REPO_ROOT, label: ROWS[row].label };
    if (options.compare === undefined || row === "bare") return [lane];
    return [lane, {
      row,
      root: options.compare,
      label: `${lane.label} [${options.compare.pathname}]`,
    }];
  });
  console.error(
    `\n# max_inflight_messages ${window}: queueing ${messages} messages for ${lanes.length} row(s) × ${repeat}`,
  );
  const broker = await benchBroker(window);
  const clientId = (lane: number, round: number) =>
    `bench-${lanes[lane].row}-${lane}-${window}-${round}`;
  await createSessions(
    broker.url,
    lanes.flatMap((_, lane) => Array.from({ length: repeat }, (_, round) => clientId(lane, round))),
  );
  const publishSeconds = await publishBacklog(broker.url, {
    messages,
    publishers: 4,
    window: 100,
  });
  const stored = await waitForStoredMessages(broker.url, messages, 30_000);
  console.error(
    `  published in ${
      publishSeconds.toFixed(1)
    } s with every PUBACK; the broker holds ${stored} messages`,
  );
  const brokerPid = await mosquittoPid(broker);
  const timeoutMs = Math.max(60_000, messages * 5);
  const drains: Drain[][] = lanes.map(() => []);
  for (let round = 0; round < repeat; round++) {
    for (const [index, lane] of lanes.entries()) {
      const { row } = lane;
      const brokerCpu = await processCpuSeconds(brokerPid);
      const drain = row === "bare"
        ? await drainBare(
          broker,
          clientId(index, round),
          messages,
          timeoutMs,
          options.cpuProfileDir,
        )
        : await drainGridrelay(broker, {
          row,
          root: lane.root,
          clientId: clientId(index, round),
          messages,
          timeoutMs,
          options,
        });
      const measured = {
        ...drain,
        brokerCpuSeconds: await processCpuSeconds(brokerPid) - brokerCpu,
      };
      drains[index].push(measured);
      console.error(`  ${round + 1}/${repeat} ${lane.label}: ${describeDrain(measured)}`);
    }
  }
  await broker.stop();
  const bare = drains[lanes.findIndex((lane) => lane.row === "bare")];
  const results: Result[] = lanes.map(({ row, label }, index) => ({
    label,
    window,
    row,
    drains: drains[index],
    ratio: row === "bare" || bare === undefined
      ? undefined
      : median(drains[index].map((drain, round) => drain.rate / bare[round].rate)),
    note: row === "webhook-single"
      ? `first ${Math.min(messages, SINGLE_WEBHOOK_RECORDS)} records`
      : undefined,
  }));
  if (!webhookAvailable) {
    for (const row of options.rows.filter((row) => ROWS[row].sink === "webhook")) {
      results.push({
        label: ROWS[row].label,
        window,
        row,
        drains: [],
        note: "skipped: sinks/webhook.ts does not exist yet",
      });
    }
  }
  return results;
}

async function drainBare(
  broker: Broker,
  clientId: string,
  messages: number,
  timeoutMs: number,
  cpuProfileDir?: string,
): Promise<Omit<Drain, "brokerCpuSeconds">> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--config",
      new URL("deno.json", REPO_ROOT).pathname,
      "--allow-net=127.0.0.1",
      "--allow-env",
      ...(cpuProfileDir ? ["--cpu-prof", `--cpu-prof-dir=${cpuProfileDir}/bare`] : []),
      new URL("bench/bare_subscriber.ts", REPO_ROOT).pathname,
      broker.url,
      clientId,
      String(messages),
      String(timeoutMs),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await lines.read();
    if (done) break;
    text += value;
  }
  // It waits for stdin to close, so its memory and CPU can be read while it is still there.
  let peakRss = 0;
  let cpuSeconds = 0;
  if (text.includes("\n")) {
    peakRss = (await processMemory(child.pid)).peak;
    cpuSeconds = await processCpuSeconds(child.pid);
  }
  await child.stdin.close();
  await lines.cancel();
  const status = await child.status;
  if (!status.success || !text.includes("\n")) {
    throw new Error(`The bare subscriber failed:\n${await stderr}`);
  }
  await stderr;
  const result = JSON.parse(text) as BareResult;
  if (result.count !== messages) {
    throw new Error(`The bare subscriber received ${result.count} messages, not ${messages}`);
  }
  return {
    rate: messages / ((result.doneAt - result.connectedAt) / 1000),
    peakRss,
    cpuSeconds,
  };
}

async function drainGridrelay(
  broker: Broker,
  run: {
    row: Exclude<Row, "bare">;
    root: URL;
    clientId: string;
    messages: number;
    timeoutMs: number;
    options: BenchOptions;
  },
): Promise<Omit<Drain, "brokerCpuSeconds">> {
  const dir = await Deno.makeTempDir({ prefix: "gridrelay-bench-" });
  const sink = ROWS[run.row].sink;
  let webhook: WebhookServer | undefined;
  let worker: GridrelayProcess | undefined;
  const cleanup = async () => {
    await worker?.stop();
    await webhook?.close();
    // Best effort: a temp dir left behind must not hide the error that ended the run.
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  owned.push(cleanup);
  try {
    if (sink === "webhook") webhook = startWebhookServer();
    worker = await startGridrelay({
      env: {
        ...workerEnv(broker, dir, run.clientId),
        SINKS: sink,
        ...(webhook ? { WEBHOOK_URL: webhook.url } : {}),
        ...(run.row === "webhook" ? { WEBHOOK_BATCH_SIZE: "100" } : {}),
      },
      root: run.root,
      cpuProfileDir: run.options.cpuProfileDir,
      denoFlags: run.options.denoFlags,
      logDir: run.options.workerLogs,
    });
    const timed = run.row === "webhook-single"
      ? Math.min(run.messages, SINGLE_WEBHOOK_RECORDS)
      : run.messages;
    const connectedAt = await worker.waitForLog(/Connected to/, 60_000);
    const doneAt = await worker.waitForDelivered(sink, timed, {
      timeoutMs: run.timeoutMs,
      intervalMs: 20,
    });
    const { peak } = await worker.memory();
    const cpuSeconds = await worker.cpuSeconds();
    const threads = await worker.threadCpuSeconds();
    if (timed === run.messages) {
      const delivered = await worker.delivered(sink);
      if (delivered !== run.messages) {
        throw new Error(`gridrelay delivered ${delivered} records, not ${run.messages}`);
      }
    }
    const code = await worker.stop();
    if (code !== 0) throw new Error(`gridrelay exited with ${code}:\n${worker.logTail()}`);
    if (sink === "file") {
      const lines = await countLines(`${dir}/readings.jsonl`);
      if (lines !== run.messages) {
        throw new Error(`The file sink wrote ${lines} lines, not ${run.messages}`);
      }
    }
    return {
      rate: timed / ((doneAt - connectedAt) / 1000),
      peakRss: peak,
      cpuSeconds,
      threads,
      ...(timed === run.messages ? {} : { timed }),
    };
  } finally {
    owned.splice(owned.indexOf(cleanup), 1);
    await cleanup();
  }
}

function workerEnv(broker: Broker, dir: string, clientId: string): Record<string, string> {
  return {
    MQTT_URL: broker.url,
    MQTT_CLIENT_ID: clientId,
    MQTT_TOPICS: "a/+/u/data",
    DATA_DIR: `${dir}/data`,
    FILE_PATH: `${dir}/readings.jsonl`,
    STDOUT_FORMAT: "jsonl",
    LOG_FORMAT: "json",
    LOG_LEVEL: "info",
    HTTP_PORT: String(freePort()),
  };
}

/**
 * The file sink at a steady rate: p50 and p99 of receipt-to-delivery from
 * `gridrelay_delivery_latency_seconds`, counting only what was published
 * after a warm-up second.
 */
async function steadyLatency(options: BenchOptions): Promise<Result> {
  const window = Math.max(...options.windows);
  console.error(`\n# steady ${options.rate} msg/s for ${options.latencySeconds} s, file sink`);
  const broker = await benchBroker(window);
  const dir = await Deno.makeTempDir({ prefix: "gridrelay-bench-" });
  let worker: GridrelayProcess | undefined;
  const cleanup = async () => {
    await worker?.stop();
    // Best effort: a temp dir left behind must not hide the error that ended the run.
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  owned.push(cleanup);
  try {
    worker = await startGridrelay({
      env: { ...workerEnv(broker, dir, "bench-latency"), SINKS: "file" },
      cpuProfileDir: options.cpuProfileDir,
      denoFlags: options.denoFlags,
      logDir: options.workerLogs,
    });
    await worker.waitForLog(/Subscribed to/, 60_000);
    const warmup = await publishSteadily(broker.url, {
      rate: options.rate,
      seconds: 1,
      firstIndex: 0,
    });
    await worker.waitForDelivered("file", warmup, { timeoutMs: 30_000, intervalMs: 20 });
    const before = latencyBuckets(await worker.metrics(), "file");
    const cpuBefore = await worker.cpuSeconds();
    const sent = await publishSteadily(broker.url, {
      rate: options.rate,
      seconds: options.latencySeconds,
      firstIndex: warmup,
    });
    await worker.waitForDelivered("file", warmup + sent, { timeoutMs: 60_000, intervalMs: 20 });
    const after = latencyBuckets(await worker.metrics(), "file");
    const { peak } = await worker.memory();
    const cpuSeconds = await worker.cpuSeconds() - cpuBefore;
    const buckets = after.map(([bound, count], i) => [bound, count - before[i][1]] as const);
    const result: Result = {
      label: `gridrelay → file, steady ${options.rate} msg/s`,
      window,
      row: "steady",
      drains: [{ rate: options.rate, peakRss: peak, cpuSeconds, brokerCpuSeconds: 0 }],
      p50: histogramQuantile(0.5, buckets),
      p99: histogramQuantile(0.99, buckets),
    };
    console.error(
      `  p50 ${ms(result.p50!)} ms, p99 ${ms(result.p99!)} ms, peak RSS ${mib(peak)}, ` +
        `CPU ${(cpuSeconds / options.latencySeconds * 100).toFixed(0)} % of a core`,
    );
    return result;
  } finally {
    owned.splice(owned.indexOf(cleanup), 1);
    await cleanup();
    await broker.stop();
  }
}

/**
 * A webhook outage at the steady rate: the webhook answers 503 while records
 * wait in the spool; resident memory is sampled every 5 s, then the webhook
 * recovers and the backlog drains.
 */
async function webhookOutage(options: BenchOptions): Promise<void> {
  const window = Math.max(...options.windows);
  const seconds = options.outageSeconds;
  console.error(`\n# webhook outage: ${seconds} s at ${options.rate} msg/s`);
  const broker = await benchBroker(window);
  const dir = await Deno.makeTempDir({ prefix: "gridrelay-bench-" });
  const webhook = startWebhookServer();
  let worker: GridrelayProcess | undefined;
  const cleanup = async () => {
    await worker?.stop();
    await webhook.close();
    // Best effort: a temp dir left behind must not hide the error that ended the run.
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  owned.push(cleanup);
  try {
    webhook.failing = true;
    worker = await startGridrelay({
      env: {
        ...workerEnv(broker, dir, "bench-outage"),
        SINKS: "webhook",
        WEBHOOK_URL: webhook.url,
        WEBHOOK_BATCH_SIZE: "100",
      },
      denoFlags: options.denoFlags,
      logDir: options.workerLogs,
    });
    await worker.waitForLog(/Subscribed to/, 60_000);
    const samples: Array<{ at: number; rss: number }> = [];
    const started = performance.now();
    const sample = async () => {
      const { rss } = await worker!.memory();
      samples.push({ at: (performance.now() - started) / 1000, rss });
    };
    await sample();
    const sampler = setInterval(() => void sample(), 5_000);
    let sent: number;
    try {
      sent = await publishSteadily(broker.url, { rate: options.rate, seconds, firstIndex: 0 });
    } finally {
      clearInterval(sampler);
    }
    await sample();
    const pending = metricValue(await worker.metrics(), 'gridrelay_spool_pending{sink="webhook"}');
    webhook.failing = false;
    const recoveredAt = Date.now();
    const doneAt = await worker.waitForDelivered("webhook", sent, {
      timeoutMs: Math.max(60_000, sent * 5),
      intervalMs: 20,
    });
    const { peak } = await worker.memory();
    printOutage({
      seconds,
      sent,
      pending,
      samples,
      peak,
      drainSeconds: (doneAt - recoveredAt) / 1000,
    });
  } finally {
    owned.splice(owned.indexOf(cleanup), 1);
    await cleanup();
    await broker.stop();
  }
}

function printOutage(outage: {
  seconds: number;
  sent: number;
  pending: number;
  samples: Array<{ at: number; rss: number }>;
  peak: number;
  drainSeconds: number;
}): void {
  const { samples } = outage;
  // The first half covers start-up and the heap settling; the trend is what the second half does.
  const later = samples.filter((entry) => entry.at >= outage.seconds / 2);
  const slope = later.length >= 2 ? leastSquaresSlope(later) * 60 / MiB : NaN;
  const laterRss = later.map((entry) => entry.rss);
  console.log(
    `\nWebhook outage: ${outage.seconds} s at ${Math.round(outage.sent / outage.seconds)} msg/s, ` +
      `${outage.pending} records waiting in the spool at its end`,
  );
  console.log(
    `  RSS (MiB) every 5 s: ${samples.map((entry) => (entry.rss / MiB).toFixed(0)).join(" ")}`,
  );
  console.log(
    `  second half: ${mib(Math.min(...laterRss))}–${mib(Math.max(...laterRss))}, trend ${
      slope.toFixed(2)
    } MiB/min; peak ${mib(outage.peak)}; backlog delivered ${
      outage.drainSeconds.toFixed(1)
    } s after the webhook recovered`,
  );
}

function leastSquaresSlope(points: Array<{ at: number; rss: number }>): number {
  const n = points.length;
  const meanX = points.reduce((sum, p) => sum + p.at, 0) / n;
  const meanY = points.reduce((sum, p) => sum + p.rss, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.at - meanX) * (p.rss - meanY);
    den += (p.at - meanX) ** 2;
  }
  return num / den;
}

/** `[upper bound, cumulative count]` of one sink's latency histogram, `+Inf` last. */
function latencyBuckets(metrics: string, sink: string): Array<readonly [number, number]> {
  const buckets: Array<readonly [number, number]> = [];
  const pattern = new RegExp(
    `^gridrelay_delivery_latency_seconds_bucket\\{sink="${sink}",le="([^"]+)"\\} (\\S+)$`,
    "gm",
  );
  for (const match of metrics.matchAll(pattern)) {
    buckets.push([match[1] === "+Inf" ? Infinity : Number(match[1]), Number(match[2])]);
  }
  return buckets;
}

/** Prometheus's histogram_quantile: linear interpolation inside the bucket holding the rank. */
function histogramQuantile(q: number, buckets: ReadonlyArray<readonly [number, number]>): number {
  const total = buckets[buckets.length - 1]?.[1] ?? 0;
  if (total === 0) return NaN;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [bound, count] of buckets) {
    if (count >= rank) {
      if (bound === Infinity) return lower;
      return lower + (bound - lower) * (rank - below) / Math.max(1, count - below);
    }
    lower = bound;
    below = count;
  }
  return lower;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function describeDrain(drain: Drain): string {
  const threads = drain.threads
    ? ` (main thread ${drain.threads.main.toFixed(2)}, pipeline thread ${
      drain.threads.workers.toFixed(2)
    }, V8 helpers ${drain.threads.v8.toFixed(2)}, other ${drain.threads.other.toFixed(2)})`
    : "";
  return `${Math.round(drain.rate)} msg/s, peak RSS ${mib(drain.peakRss)}, ` +
    `CPU ${drain.cpuSeconds.toFixed(2)} s${threads}, mosquitto CPU ${
      drain.brokerCpuSeconds.toFixed(2)
    } s`;
}

function ms(seconds: number): string {
  return (seconds * 1000).toFixed(1);
}

function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(0)} MiB`;
}

async function printTable(options: BenchOptions, results: Result[]): Promise<void> {
  console.log(`\n${new Date().toISOString().slice(0, 10)} · ${await machine()}`);
  console.log(
    `${options.messages} queued QoS 1 messages of about 1 KB, drained ${options.repeat}× ` +
      `(median, min–max); mosquitto ${mosquittoVersion()}, deno ${Deno.version.deno}\n`,
  );
  const rows = results.map((result) => {
    const window = result.window === 0 ? "unlimited" : String(result.window);
    const note = result.note ? ` (${result.note})` : "";
    if (result.drains.length === 0) return [window, result.label, "—", "—", "—", "—", note];
    const rates = result.drains.map((drain) => drain.rate);
    const rate = result.drains.length === 1
      ? grouped(rates[0])
      : `${grouped(median(rates))} (${grouped(Math.min(...rates))}–${grouped(Math.max(...rates))})`;
    const ratio = result.ratio === undefined ? "" : `${result.ratio.toFixed(2)}×`;
    const rss = mib(Math.max(...result.drains.map((drain) => drain.peakRss)));
    const cpu = median(result.drains.map((drain) => drain.cpuSeconds)).toFixed(1);
    const latency = result.p99 !== undefined ? `${ms(result.p50!)} / ${ms(result.p99)} ms` : "";
    return [window, result.label + note, rate, ratio, rss, cpu, latency];
  });
  const header = ["max_inflight_messages", "subscriber", "msg/s", "× bare", "peak RSS", "CPU s"];
  for (const line of markdownTable([...header, "p50 / p99 latency"], rows)) console.log(line);
}

/**
 * A Markdown table with its columns padded to one width, so that it reads as
 * a table in a terminal too; the second column left-aligned, the others right.
 */
function markdownTable(header: readonly string[], rows: readonly string[][]): string[] {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column].length))
  );
  const line = (cells: readonly string[]) =>
    `| ${
      cells.map((cell, column) =>
        column === 1 ? cell.padEnd(widths[column]) : cell.padStart(widths[column])
      ).join(" | ")
    } |`;
  const rule = widths.map((width, column) =>
    column === 1 ? `:${"-".repeat(width - 1)}` : `${"-".repeat(width - 1)}:`
  );
  return [line(header), `| ${rule.join(" | ")} |`, ...rows.map(line)];
}

/** A whole number with its thousands apart, as the README writes them: 106 045. */
function grouped(value: number): string {
  return Math.round(value).toString().replace(/\B(?=(\d{3})+(?!\d))/g, " ");
}

async function machine(): Promise<string> {
  const cpuinfo = await readProcFile("/proc/cpuinfo");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1];
  const memory = Deno.systemMemoryInfo().total / 2 ** 30;
  return `${navigator.hardwareConcurrency} cores${model ? ` (${model})` : ""}, ` +
    `${Math.round(memory)} GiB, ${Deno.build.os} ${Deno.osRelease()}`;
}

function mosquittoVersion(): string {
  const output = new Deno.Command("mosquitto", { args: ["-h"], stdout: "piped", stderr: "piped" })
    .outputSync();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  return /mosquitto version (\S+)/.exec(text)?.[1] ?? "?";
}

/** The broker helper does not expose its process id; its config file names it uniquely. */
async function mosquittoPid(broker: Broker): Promise<number> {
  const output = await new Deno.Command("pgrep", {
    args: ["-f", `mosquitto -c ${broker.configFile}`],
    stdout: "piped",
  }).output();
  const pid = Number(new TextDecoder().decode(output.stdout).trim().split("\n")[0]);
  if (!(pid > 0)) throw new Error(`Cannot find the process of the mosquitto at ${broker.url}`);
  return pid;
}

async function countLines(path: string): Promise<number> {
  const bytes = await Deno.readFile(path);
  let lines = 0;
  for (let at = bytes.indexOf(0x0a); at >= 0; at = bytes.indexOf(0x0a, at + 1)) lines++;
  return lines;
}

async function exists(url: URL): Promise<boolean> {
  try {
    await Deno.stat(url);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

async function closeOwned(): Promise<void> {
  for (const close of owned.splice(0).reverse()) {
    try {
      await close();
    } catch (error) {
      console.error(`Cleaning up failed: ${error}`);
    }
  }
}

if (import.meta.main) await main();
