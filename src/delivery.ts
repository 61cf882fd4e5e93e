/**
 * Moves records from the spool to the sinks, and dead letters from the spool
 * to the dead-letter file: one loop per destination, batch by batch, behind
 * its own cursor, retrying failures with back-off forever. A batch leaves the
 * spool only after its destination accepted it, so delivery is at least once.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { JsonLinesFile } from "../sinks/file.ts";
import { RecordsRefusedError, RetryLaterError, type Sink } from "../sinks/sink.ts";
import { formatDeadLetter } from "./dead_letter.ts";
import type { WorkerMetrics } from "./metrics.ts";
import { type OutputRecord, parseRecord } from "./record.ts";
import { backoffDelay, type BackoffOptions, sleep } from "./retry.ts";
import type { RecordBatch, Spool } from "./spool.ts";

const logger = getLogger(["gridrelay", "delivery"]);

// While a destination keeps failing, one warning per this interval (plus the first one).
const FAILURE_LOG_INTERVAL_MS = 60_000;

/** Default batch size of the dead-letter writer. */
const DEAD_LETTER_BATCH_SIZE = 500;

/**
 * How a sink runner batches, retries and reports.
 *
 * @example
 * ```ts
 * const options: SinkRunnerOptions = {
 *   batchSize: 500,
 *   backoff: { minMs: 500, maxMs: 30_000 },
 *   metrics: createWorkerMetrics(),
 * };
 * ```
 */
export interface SinkRunnerOptions {
  /** Most records per `write`, for sinks that do not set their own `batchSize`. */
  readonly batchSize: number;
  /** Delays between retries of a failed batch. */
  readonly backoff: BackoffOptions;
  /** Where `recordsDelivered`, `sinkErrors`, `spoolPending`, `deliveryLatency` and `rejected` go. */
  readonly metrics: WorkerMetrics;
  /** The clock for delivery latency; default `Date.now`. */
  readonly now?: () => number;
}

/**
 * The two shutdown signals every delivery loop obeys.
 *
 * @example
 * ```ts
 * const stop = new AbortController();  // drain: finish what is spooled, then return
 * const abort = new AbortController(); // give up now: in-flight work is abandoned, stays spooled
 * const control: DeliveryControl = { stop: stop.signal, abort: abort.signal };
 * ```
 */
export interface DeliveryControl {
  /** Return once everything spooled is delivered. */
  readonly stop: AbortSignal;
  /** Return at once; the in-flight batch stays in the spool for the next start. */
  readonly abort: AbortSignal;
}

/**
 * Delivers from `spool` to `sink` until `stop` aborts and the sink has caught
 * up with the spool, or `abort` aborts (then the in-flight write's signal
 * aborts and the batch stays in the spool for the next start). Never throws:
 * failures are counted, logged (rate-limited) and retried with back-off.
 * Records the sink refuses with {@linkcode RecordsRefusedError} become dead
 * letters in the same spool transaction that acknowledges the batch. A
 * {@linkcode RetryLaterError} makes the next attempt wait at least as long
 * as it asks. A failed batch is retried as the very same records, even when
 * more have arrived since, so a sink that derives an idempotency key from
 * its batch sends the same key again.
 *
 * @example
 * ```ts
 * const done = runSink(sink, spool, {
 *   batchSize: 500,
 *   backoff: { minMs: 500, maxMs: 30_000 },
 *   metrics,
 *   stop: stop.signal,
 *   abort: abort.signal,
 * });
 * stop.abort(); // drain and finish
 * await done;
 * ```
 */
export function runSink(
  sink: Sink,
  spool: Spool,
  options: SinkRunnerOptions & DeliveryControl,
): Promise<void> {
  const { metrics } = options;
  const name = sink.name;
  const batchSize = isBatchSize(sink.batchSize) ? sink.batchSize : options.batchSize;
  const now = options.now ?? Date.now;
  const refusals = new RateLimitedWarning();
  // The size of the batch in flight until it is acknowledged: its records are the first ones
  // after the cursor, so reading that many again gives the same batch.
  let unacknowledged: number | undefined;
  return deliveryLoop<RecordBatch>({
    target: `sink ${name}`,
    properties: { sink: name },
    spool,
    read: () => {
      const batch = spool.readBatch(name, unacknowledged ?? batchSize);
      metrics.spoolPending.set(spool.pending(name), name);
      return batch;
    },
    deliver: async (batch, signal) => {
      unacknowledged = batch.length;
      const refused = await untilAborted(() => writeBatch(sink, batch, signal), signal);
      const deadLetters = refused.map(({ index, reason, code }) =>
        formatDeadLetter({
          receivedAt: batch.receivedAt(index),
          topic: batch.topic(index),
          reason,
          code,
          payload: batch.text(index),
          sink: name,
        })
      );
      spool.acknowledge(name, batch.lastId, { deadLetters });
      unacknowledged = undefined;

      const refusedIndexes = new Set(refused.map((entry) => entry.index));
      const deliveredAt = now();
      for (let index = 0; index < batch.length; index++) {
        if (refusedIndexes.has(index)) continue;
        const latency = Math.max(0, deliveredAt - batch.receivedAt(index)) / 1000;
        metrics.deliveryLatency.observe(latency, name);
      }
      metrics.recordsDelivered.add(batch.length - refused.length, name);
      metrics.spoolPending.set(spool.pending(name), name);
      for (const { code } of refused) metrics.rejected.add(1, code);
      if (refused.length > 0) {
        refusals.warn(
          "Sink {sink} refused {count} record(s) for good, e.g. {reason}; they are in the dead letters",
          { sink: name, count: refused.length, reason: refused[0].reason },
        );
      }
    },
    onFailure: () => metrics.sinkErrors.add(1, name),
  }, options);
}

/**
 * Hands a batch to a sink in the form it takes best: JSON Lines bytes, record
 * texts, or parsed records. Returns the records that did not get through for
 * good, indexed in the batch: those the sink refused, and spooled texts that
 * do not parse (no retry could deliver them). Throws what else the sink throws.
 */
async function writeBatch(
  sink: Sink,
  batch: RecordBatch,
  signal: AbortSignal,
): Promise<RefusedEntry[]> {
  // The batch index of each record the sink was given, when that is not all of them in order.
  let offered: number[] | undefined;
  const invalid: RefusedEntry[] = [];
  try {
    if (sink.writeLines !== undefined) {
      const lines = batch.lines();
      try {
        await sink.writeLines(lines, signal);
      } finally {
        // A batch spanning chunks was copied into a buffer of its own: the sink is done with it
        // (see Sink.writeLines), so it goes now rather than at the next full collection.
        if (batch.linesCopied) (lines.buffer as ArrayBuffer).transfer(0);
      }
    } else if (sink.writeTexts !== undefined) {
      await sink.writeTexts(batch.texts(), signal);
    } else {
      const records: OutputRecord[] = [];
      offered = [];
      for (const [index, text] of batch.texts().entries()) {
        try {
          records.push(parseRecord(text));
          offered.push(index);
        } catch (error) {
          const message = error instanceof Error ? error.message : String(error);
          invalid.push({
            index,
            reason: `the spooled record is not valid JSON (${message}); it was not sent`,
            code: "invalid_record",
          });
        }
      }
      if (records.length > 0) await sink.write(records, signal);
    }
  } catch (error) {
    if (!(error instanceof RecordsRefusedError) || signal.aborted) throw error;
    return [...invalid, ...refusedEntries(error, offered ?? batch.length, sink.name)];
  }
  return invalid;
}

/**
 * Options of {@linkcode runDeadLetterWriter}.
 *
 * @example
 * ```ts
 * const options: DeadLetterWriterOptions = {
 *   path: "./data/dead-letter.jsonl",
 *   maxBytes: 100 * 2 ** 20,
 *   maxFiles: 5,
 *   backoff: { minMs: 500, maxMs: 30_000 },
 *   metrics,
 *   stop: stop.signal,
 *   abort: abort.signal,
 * };
 * ```
 */
export interface DeadLetterWriterOptions extends DeliveryControl {
  /** `DEAD_LETTER_PATH`. */
  readonly path: string;
  /** Size at which the dead-letter file rotates. */
  readonly maxBytes: number;
  /** Rotated dead-letter files kept. */
  readonly maxFiles: number;
  /** `deadLetters` counts the lines written. */
  readonly metrics: WorkerMetrics;
  /** Delays between retries of a failed batch. */
  readonly backoff: BackoffOptions;
  /** Most lines per write; default 500. */
  readonly batchSize?: number;
}

/**
 * The same loop for the dead-letter queue: appends lines to the dead-letter
 * JSON Lines file (fdatasync per batch, rotation as the file sink's), then
 * removes them from the spool. Never throws; returns like {@linkcode runSink}.
 *
 * @example
 * ```ts
 * const done = runDeadLetterWriter(spool, {
 *   path: "./data/dead-letter.jsonl",
 *   maxBytes: 100 * 2 ** 20,
 *   maxFiles: 5,
 *   backoff: { minMs: 500, maxMs: 30_000 },
 *   metrics,
 *   stop: stop.signal,
 *   abort: abort.signal,
 * });
 * ```
 */
export async function runDeadLetterWriter(
  spool: Spool,
  options: DeadLetterWriterOptions,
): Promise<void> {
  const { path, metrics } = options;
  const batchSize = options.batchSize ?? DEAD_LETTER_BATCH_SIZE;
  let file: JsonLinesFile;
  try {
    file = new JsonLinesFile(path, { maxBytes: options.maxBytes, maxFiles: options.maxFiles });
  } catch (error) {
    // Bad limits are a composition bug; the loop's contract is to never throw, so say it loudly.
    logger.error("The dead-letter writer cannot start: {error}", { error });
    return;
  }
  try {
    await deliveryLoop({
      target: `the dead-letter file ${path}`,
      properties: { path },
      spool,
      read: () => spool.readDeadLetters(batchSize),
      deliver: async (batch) => {
        // Not raced against abort: an append is short, and finishing it (and removing the lines)
        // spares a duplicate at the next start.
        await file.append(batch.map((letter) => letter.line));
        spool.removeDeadLetters(batch[batch.length - 1].id);
        metrics.deadLetters.add(batch.length);
      },
    }, options);
  } finally {
    await file.close();
  }
}

/** A batch as a delivery loop sees it: empty when the destination has caught up. */
interface Batch {
  readonly length: number;
}

interface DeliveryTarget<B extends Batch> {
  /** Names the destination in log messages. */
  readonly target: string;
  /** Structured log properties naming the destination. */
  readonly properties: Record<string, unknown>;
  readonly spool: Spool;
  /** The next batch from the spool, oldest first; empty when caught up. */
  read(): B;
  /** Hands the batch over and commits it in the spool; throws to have it retried. */
  deliver(batch: B, signal: AbortSignal): Promise<void>;
  onFailure?(): void;
}

async function deliveryLoop<B extends Batch>(
  destination: DeliveryTarget<B>,
  options: DeliveryControl & { readonly backoff: BackoffOptions },
): Promise<void> {
  const { stop, abort, backoff } = options;
  const idle = AbortSignal.any([stop, abort]);
  const failures = new FailureLog(destination);
  let attempt = 0;
  while (!abort.aborted) {
    try {
      const batch = destination.read();
      if (batch.length === 0) {
        if (stop.aborted) return;
        await destination.spool.changed(idle);
        continue;
      }
      await destination.deliver(batch, abort);
      if (attempt > 0) failures.recovered(attempt);
      attempt = 0;
    } catch (error) {
      if (abort.aborted) return;
      destination.onFailure?.();
      const delayMs = Math.max(
        backoffDelay(attempt, backoff),
        error instanceof RetryLaterError ? error.retryAfterMs : 0,
      );
      attempt++;
      failures.failed(error, { attempt, delayMs });
      await sleep(delayMs, abort);
    }
  }
}

// Warns at the first failure and then once per interval, with how many went unlogged.
class FailureLog {
  readonly #destination: DeliveryTarget<Batch>;
  #lastLoggedAt = -Infinity;
  #unlogged = 0;

  constructor(destination: DeliveryTarget<Batch>) {
    this.#destination = destination;
  }

  failed(error: unknown, context: { attempt: number; delayMs: number }): void {
    const now = performance.now();
    if (now - this.#lastLoggedAt < FAILURE_LOG_INTERVAL_MS) {
      this.#unlogged++;
      return;
    }
    logger.warn(
      "Delivery to {target} failed (attempt {attempt}, {unlogged} failure(s) since the last warning): {error}; retrying in {delayMs} ms",
      {
        ...this.#destination.properties,
        target: this.#destination.target,
        attempt: context.attempt,
        unlogged: this.#unlogged,
        delayMs: context.delayMs,
        error,
      },
    );
    this.#lastLoggedAt = now;
    this.#unlogged = 0;
  }

  recovered(attempts: number): void {
    logger.info("Delivery to {target} recovered after {attempts} failed attempt(s)", {
      ...this.#destination.properties,
      target: this.#destination.target,
      attempts,
    });
    this.#lastLoggedAt = -Infinity;
    this.#unlogged = 0;
  }
}

class RateLimitedWarning {
  #lastLoggedAt = -Infinity;

  warn(message: string, properties: Record<string, unknown>): void {
    const now = performance.now();
    if (now - this.#lastLoggedAt < FAILURE_LOG_INTERVAL_MS) return;
    this.#lastLoggedAt = now;
    logger.warn(message, properties);
  }
}

function isBatchSize(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 1;
}

interface RefusedEntry {
  /** The record's index in its batch. */
  readonly index: number;
  readonly reason: string;
  readonly code: string;
}

// `offered`: the batch indexes of the records the sink got, or how many it got (all, in order).
function refusedEntries(
  error: RecordsRefusedError,
  offered: readonly number[] | number,
  sink: string,
): RefusedEntry[] {
  const size = typeof offered === "number" ? offered : offered.length;
  const byIndex = new Map<number, string>();
  for (const { index, reason } of error.refused) {
    if (Number.isInteger(index) && index >= 0 && index < size) {
      if (!byIndex.has(index)) byIndex.set(index, String(reason));
    } else {
      logger.warn("Sink {sink} refused record index {index}, outside its batch of {size}", {
        sink,
        index,
        size,
      });
    }
  }
  return [...byIndex].sort(([a], [b]) => a - b).map(([index, reason]) => ({
    index: typeof offered === "number" ? index : offered[index],
    reason,
    code: "sink_refused",
  }));
}

// Runs `work`, but settles as soon as `signal` aborts: a sink that ignores its signal must not
// hold up shutdown. A late rejection of the abandoned work is observed, not left unhandled.
function untilAborted<T>(work: () => Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted();
  let pending: Promise<T>;
  try {
    pending = Promise.resolve(work());
  } catch (error) {
    return Promise.reject(error);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    pending.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
