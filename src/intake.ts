/**
 * The hand-off from the connector to the spool: runs the pipeline over each
 * burst of messages (on the pipeline thread), logs and counts rejections, and
 * appends what came out to the spool in one transaction per burst. Each
 * message's promise resolves only once its records and dead letters are
 * durable, and that is when the connector acknowledges it. Group commit:
 * while one sync to disk runs, the messages that arrive meanwhile queue up
 * for the next one. Order is kept from arrival to spool.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { formatDeadLetter } from "./dead_letter.ts";
import { RateLimiter } from "./logging.ts";
import type { WorkerMetrics } from "./metrics.ts";
import type { PipelineResult } from "./pipeline.ts";
import { inlinePipeline, type PipelineOutcome, type PipelineRunner } from "./pipeline_thread.ts";
import type { Message } from "./record.ts";
import { backoffDelay, sleep } from "./retry.ts";
import type { Spool, SpoolEntry } from "./spool.ts";

/** Options of {@linkcode Intake}. */
export interface IntakeOptions {
  /** A {@linkcode PipelineThread}, or the pipeline function itself to run it on this thread. */
  readonly pipeline: PipelineRunner | ((message: Message) => PipelineResult);
  readonly spool: Spool;
  readonly metrics: WorkerMetrics;
  /** Most messages in one spool transaction; default 1000. */
  readonly maxBatch?: number;
  /** How often the same warning (per topic and reason or device) may be logged; default a minute. */
  readonly warningWindowMs?: number;
}

const NO_LINES: readonly string[] = Object.freeze([]);

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

interface Pending extends Waiter {
  readonly entry: SpoolEntry;
}

/**
 * Turns messages into spooled records.
 *
 * @example
 * ```ts
 * const intake = new Intake({ pipeline: new PipelineThread(config.pipeline), spool, metrics });
 * await intake.accept(message); // durable now: acknowledge it
 * await intake.close();
 * ```
 */
export class Intake {
  readonly #options: IntakeOptions;
  readonly #pipeline: PipelineRunner;
  readonly #log = getLogger(["gridrelay", "intake"]);
  readonly #warnings: RateLimiter;
  readonly #queue: Pending[] = [];
  readonly #closing = new AbortController();
  /** Messages taken since the last hand-over to the pipeline, and who waits on each. */
  #burst: Message[] = [];
  #burstWaiters: Waiter[] = [];
  #burstScheduled = false;
  /** Bursts handed to the pipeline; their outcomes are queued for the spool in this order. */
  #pipelined: Promise<void> = Promise.resolve();
  #inPipeline = 0;
  #flushing?: Promise<void>;
  /** The last appended batch's wait for its sync; earlier ones settle before it. */
  #settled: Promise<void> = Promise.resolve();
  /** Appended, waiting for the sync that #settle starts. */
  #committed: Pending[] = [];
  #syncing = false;
  #scheduled?: ReturnType<typeof setTimeout>;
  #full = false;

  constructor(options: IntakeOptions) {
    this.#options = options;
    this.#pipeline = typeof options.pipeline === "function"
      ? inlinePipeline(options.pipeline)
      : options.pipeline;
    this.#warnings = new RateLimiter(options.warningWindowMs ?? 60_000);
  }

  /** Number of messages accepted but not yet durable. */
  get pending(): number {
    return this.#burst.length + this.#inPipeline + this.#queue.length;
  }

  /**
   * Runs the pipeline over `message`; resolves when the outcome is durable.
   * Rejects only when the disk failed to sync it: then it must not be acknowledged.
   */
  accept(message: Message): Promise<void> {
    this.#options.metrics.messagesReceived.add();
    this.#burst.push(message);
    const durable = new Promise<void>((resolve, reject) =>
      this.#burstWaiters.push({ resolve, reject })
    );
    // mqtt.js handles the packets of a socket chunk one process.nextTick after the other, and
    // microtasks run only once that queue is empty: the whole chunk joins this burst.
    if (!this.#burstScheduled) {
      this.#burstScheduled = true;
      queueMicrotask(() => this.#handOver());
    }
    return durable;
  }

  /**
   * Writes what is queued (as far as the spool has room) and stops. Messages
   * still queued after that stay unacknowledged; the broker sends them again.
   */
  async close(): Promise<void> {
    this.#handOver();
    await this.#pipelined;
    clearTimeout(this.#scheduled);
    this.#scheduled = undefined;
    if (!this.#full) await this.#flush();
    this.#closing.abort();
    await this.#flushing;
    // A sync that ends appends what waited for it and starts another: wait for the last one.
    let waited: Promise<void> | undefined;
    while (waited !== this.#settled) {
      waited = this.#settled;
      await waited;
      await this.#flushing;
    }
  }

  /** Sends the burst to the pipeline now; its outcomes join the spool queue in order. */
  #handOver(): void {
    this.#burstScheduled = false;
    const messages = this.#burst;
    if (messages.length === 0) return;
    const waiters = this.#burstWaiters;
    this.#burst = [];
    this.#burstWaiters = [];
    const count = messages.length;
    this.#inPipeline += count;
    // Only where each message came from is kept: the payloads (and the socket buffers they
    // point into) can go as soon as the pipeline has them.
    const topics: string[] = [];
    const receivedAts: number[] = [];
    for (let i = 0; i < count; i++) {
      topics.push(messages[i].topic);
      receivedAts.push(messages[i].receivedAt);
    }
    // Started now, so the thread works while earlier outcomes are still being spooled.
    const outcomes = this.#pipeline.run(messages);
    this.#pipelined = this.#pipelined.then(() => outcomes).then(
      (outcomes) => {
        this.#inPipeline -= count;
        for (let i = 0; i < count; i++) {
          this.#enqueue(topics[i], receivedAts[i], outcomes[i], waiters[i]);
        }
        // Straight on to the spool: a burst is already a batch, and a commit is cheap (the sync
        // is what takes time, and it covers every commit made while the last one ran).
        this.#flush();
      },
      (error) => {
        // The pipeline thread died with these on it: none is acknowledged, the broker resends.
        this.#inPipeline -= count;
        this.#log.error("The pipeline failed on {count} message(s): {error}", { count, error });
        for (const waiter of waiters) waiter.reject(error);
      },
    );
  }

  #enqueue(topic: string, receivedAt: number, outcome: PipelineOutcome, waiter: Waiter): void {
    if (outcome.failure !== undefined) {
      // The stages never throw by contract; if one did, the payload is kept, not lost.
      this.#log.error("The pipeline failed on a message from {topic}: {error}", {
        topic,
        error: outcome.failure,
      });
    }
    if (outcome.rejections.length > 0 || outcome.dropped.length > 0) this.#report(topic, outcome);
    const entry: SpoolEntry = {
      records: outcome.records,
      deadLetters: outcome.rejections.length === 0
        ? NO_LINES
        : outcome.rejections.map((rejection) =>
          formatDeadLetter({
            receivedAt,
            topic,
            reason: rejection.message,
            code: rejection.reason,
            payload: rejection.payload,
            index: rejection.index,
          })
        ),
      receivedAt,
      topic,
    };
    this.#queue.push({ entry, resolve: waiter.resolve, reject: waiter.reject });
  }

  #report(topic: string, result: PipelineOutcome): void {
    const { metrics } = this.#options;
    for (const rejection of result.rejections) {
      metrics.rejected.add(1, rejection.reason);
      const key = `${topic}\u0000${rejection.reason}\u0000${rejection.device ?? ""}`;
      const verdict = this.#warnings.check(key);
      if (!verdict.allowed) continue;
      this.#log.warn(
        "Rejected {what} from {topic}: {reason}{suppressed}",
        {
          what: rejection.index === undefined ? "a payload" : "a reading",
          topic,
          reason: rejection.message,
          code: rejection.reason,
          suppressed: verdict.suppressed > 0
            ? ` (${verdict.suppressed} more like it in the last minute were not logged)`
            : "",
        },
      );
    }
    for (const drop of result.dropped) {
      metrics.dropped.add(1, "missing_vid");
      this.#log.debug(
        "Dropped reading r[{index}] from {topic}: it has no _vid (MISSING_VID=drop)",
        {
          index: drop.index,
          topic,
          device: drop.device,
        },
      );
    }
  }

  #schedule(): void {
    if (this.#scheduled !== undefined || this.#flushing || this.#closing.signal.aborted) return;
    // A macrotask, so that every message in the socket chunk being parsed joins this transaction.
    this.#scheduled = setTimeout(() => {
      this.#scheduled = undefined;
      this.#flush();
    }, 0);
  }

  #flush(): Promise<void> {
    this.#flushing ??= this.#drain().finally(() => {
      this.#flushing = undefined;
      if (this.#queue.length > 0) this.#schedule();
    });
    return this.#flushing;
  }

  async #drain(): Promise<void> {
    const { spool } = this.#options;
    const maxBatch = this.#options.maxBatch ?? 1000;
    let failures = 0;
    // While a sync runs, what arrives waits for it to end: appended then, it is covered by the
    // next sync just the same, and many bursts make one transaction instead of many.
    while (this.#queue.length > 0 && !this.#syncing) {
      if (spool.full) {
        if (this.#closing.signal.aborted) return;
        this.#reportFull(true);
        await spool.changed(this.#closing.signal);
        continue;
      }
      this.#reportFull(false);
      const batch = this.#queue.slice(0, maxBatch);
      try {
        spool.append(batch.map((pending) => pending.entry));
      } catch (error) {
        // Disk full, I/O error: keep the messages (unacknowledged) and try again.
        const delay = backoffDelay(failures++, { minMs: 500, maxMs: 30_000 });
        this.#log.error(
          "Could not write {count} message(s) to the spool: {error}; trying again in {seconds} s",
          { count: batch.length, error, seconds: (delay / 1000).toFixed(1) },
        );
        if (!await sleep(delay, this.#closing.signal)) return;
        continue;
      }
      failures = 0;
      this.#queue.splice(0, batch.length);
      // More than maxBatch waiting: the rest goes in further transactions under the same sync.
      this.#committed = this.#committed.length === 0 ? batch : this.#committed.concat(batch);
      if (this.#queue.length === 0 || spool.full) this.#settled = this.#settle();
    }
  }

  /**
   * Waits until what was committed is on disk, then lets the connector
   * acknowledge it; when the sync ends, what queued meanwhile is appended.
   * Syncs run one at a time, so acknowledgements keep the order of the messages.
   */
  async #settle(): Promise<void> {
    const committed = this.#committed;
    this.#committed = [];
    this.#syncing = true;
    try {
      await this.#options.spool.sync();
    } catch (error) {
      this.#log.error(
        "Could not make {count} message(s) durable: syncing the spool to disk failed ({error}); they stay unacknowledged and the broker sends them again",
        { count: committed.length, error },
      );
      const failure = error instanceof Error ? error : new Error(String(error));
      for (const pending of committed) pending.reject(failure);
      return;
    } finally {
      this.#syncing = false;
      if (this.#queue.length > 0) this.#flush();
    }
    for (const pending of committed) pending.resolve();
  }

  #reportFull(full: boolean): void {
    if (full === this.#full) return;
    this.#full = full;
    const { spool } = this.#options;
    if (full) {
      this.#log.warn(
        "The spool is full ({bytes} bytes, SPOOL_MAX_BYTES): holding back acknowledgements so the broker pauses delivery until the sinks catch up",
        { bytes: spool.bytes },
      );
    } else {
      this.#log.info("The spool has room again ({bytes} bytes); taking messages", {
        bytes: spool.bytes,
      });
    }
  }
}
