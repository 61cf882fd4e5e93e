/**
 * The once-a-minute summary line: what the worker did since the last one —
 * messages in, records out per sink, rejections — and what is still pending
 * per sink. Computed from the metrics' counters, so it never disagrees with
 * `/metrics`; the worker owns the timer and stops it at shutdown.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import type { Counter, WorkerMetrics } from "./metrics.ts";

/**
 * The cumulative counts a summary is the difference of.
 *
 * @example
 * ```ts
 * const snapshot: SummarySnapshot = {
 *   messagesIn: 120, delivered: { stdout: 118 }, rejected: 2, dropped: 0, sinkErrors: { stdout: 0 },
 * };
 * ```
 */
export interface SummarySnapshot {
  readonly messagesIn: number;
  /** Records delivered, by sink. */
  readonly delivered: Readonly<Record<string, number>>;
  /** Rejections of every reason. */
  readonly rejected: number;
  /** Readings dropped on purpose (`MISSING_VID=drop`). */
  readonly dropped: number;
  /** Failed writes, by sink. */
  readonly sinkErrors: Readonly<Record<string, number>>;
}

/**
 * One summary: the line's text and its structured fields (for `LOG_FORMAT=json`).
 *
 * @example
 * ```ts
 * const { message, fields }: Summary = summarize(before, after, { pending: { stdout: 0 }, seconds: 60 });
 * ```
 */
export interface Summary {
  readonly message: string;
  readonly fields: Readonly<Record<string, unknown>>;
}

/**
 * Reads the counters a summary needs from `metrics`, for the sinks named.
 *
 * @example
 * ```ts
 * const metrics = createWorkerMetrics();
 * metrics.messagesReceived.add(3);
 * takeSnapshot(metrics, ["stdout"]).messagesIn; // 3
 * ```
 */
export function takeSnapshot(metrics: WorkerMetrics, sinks: readonly string[]): SummarySnapshot {
  const bySink = (counter: Counter) =>
    Object.fromEntries(sinks.map((sink) => [sink, counter.value(sink)]));
  return {
    messagesIn: metrics.messagesReceived.value(),
    delivered: bySink(metrics.recordsDelivered),
    rejected: total(metrics.rejected),
    dropped: total(metrics.dropped),
    sinkErrors: bySink(metrics.sinkErrors),
  };
}

/**
 * What happened between two snapshots, as one line a person reads at a
 * glance, e.g. `Last 60 s: 120 messages in; delivered stdout 118, file 118;
 * 2 rejected; pending stdout 0, file 3`. Dropped readings and sink errors are
 * named only when there were some.
 *
 * @example
 * ```ts
 * const before = { messagesIn: 0, delivered: { file: 0 }, rejected: 0, dropped: 0, sinkErrors: { file: 0 } };
 * const after = { messagesIn: 5, delivered: { file: 4 }, rejected: 1, dropped: 0, sinkErrors: { file: 0 } };
 * summarize(before, after, { pending: { file: 0 }, seconds: 60 }).message;
 * // "Last 60 s: 5 messages in; delivered file 4; 1 rejected; pending file 0"
 * ```
 */
export function summarize(
  before: SummarySnapshot,
  after: SummarySnapshot,
  options: { pending: Readonly<Record<string, number>>; seconds: number },
): Summary {
  const messagesIn = after.messagesIn - before.messagesIn;
  const delivered = difference(before.delivered, after.delivered);
  const sinkErrors = difference(before.sinkErrors, after.sinkErrors);
  const rejected = after.rejected - before.rejected;
  const dropped = after.dropped - before.dropped;
  const errorCount = Object.values(sinkErrors).reduce((sum, value) => sum + value, 0);
  const parts = [
    `Last ${options.seconds} s: ${messagesIn} messages in`,
    `delivered ${perSink(delivered)}`,
    `${rejected} rejected`,
    ...(dropped > 0 ? [`${dropped} dropped`] : []),
    ...(errorCount > 0 ? [`failed writes ${perSink(sinkErrors)}`] : []),
    `pending ${perSink(options.pending)}`,
  ];
  return {
    message: parts.join("; "),
    fields: {
      periodSeconds: options.seconds,
      messagesIn,
      delivered,
      rejected,
      dropped,
      sinkErrors,
      pending: { ...options.pending },
    },
  };
}

/** Options of {@linkcode startSummary}. */
export interface SummaryOptions {
  readonly metrics: WorkerMetrics;
  /** The sinks' names, in the order the line lists them. */
  readonly sinks: readonly string[];
  /** Records a sink has yet to deliver (the spool's count). */
  readonly pending: (sink: string) => number;
  /** Default 60000: one line a minute. */
  readonly intervalMs?: number;
  /** Where the line goes; default an info line in the `gridrelay.summary` category. */
  readonly log?: (summary: Summary) => void;
}

/**
 * Logs a {@linkcode summarize} line every `intervalMs` until the returned
 * handle is stopped (or disposed). The first line covers the time since this
 * call.
 *
 * @example
 * ```ts
 * using summary = startSummary({ metrics, sinks: ["stdout"], pending: (sink) => spool.pending(sink) });
 * // … on shutdown the timer is cleared
 * ```
 */
export function startSummary(options: SummaryOptions): { stop(): void } & Disposable {
  const intervalMs = options.intervalMs ?? 60_000;
  const log = options.log ?? logSummary;
  let before = takeSnapshot(options.metrics, options.sinks);
  const timer = setInterval(() => {
    const after = takeSnapshot(options.metrics, options.sinks);
    const pending = Object.fromEntries(options.sinks.map((sink) => [sink, options.pending(sink)]));
    log(summarize(before, after, { pending, seconds: intervalMs / 1000 }));
    before = after;
  }, intervalMs);
  const stop = () => clearInterval(timer);
  return { stop, [Symbol.dispose]: stop };
}

function logSummary(summary: Summary): void {
  // The text is already rendered: braces in a sink's name are escaped so they do not read as placeholders.
  const template = summary.message.replaceAll("{", "{{").replaceAll("}", "}}");
  getLogger(["gridrelay", "summary"]).info(template, { ...summary.fields });
}

function total(counter: Counter): number {
  let sum = 0;
  for (const [, value] of counter.entries()) sum += value;
  return sum;
}

function difference(
  before: Readonly<Record<string, number>>,
  after: Readonly<Record<string, number>>,
): Record<string, number> {
  return Object.fromEntries(
    Object.entries(after).map(([sink, value]) => [sink, value - (before[sink] ?? 0)]),
  );
}

function perSink(values: Readonly<Record<string, number>>): string {
  const entries = Object.entries(values);
  return entries.length === 0 ? "none" : entries.map(([sink, n]) => `${sink} ${n}`).join(", ");
}
