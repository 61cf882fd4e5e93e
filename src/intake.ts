/**
 * The hand-off from the connector to the spool: runs the pipeline over each
 * burst of messages (on the pipeline thread), logs and counts rejections, and
 * appends what came out to the spool, a chunk per burst, one transaction per
 * group of bursts. A burst's promise — every message of it gets the same one
 * — resolves only once its records and dead letters are durable, and that is
 * when the connector acknowledges them. Group commit: while one sync to disk
 * runs, the bursts that arrive meanwhile queue up for the next one. Order is
 * kept from arrival to spool.
 * @module
 */

import { clearImmediate, setImmediate } from "node:timers";
import { getLogger } from "@logtape/logtape";
import { formatDeadLetter } from "./dead_letter.ts";
import { RateLimiter } from "./logging.ts";
import type { WorkerMetrics } from "./metrics.ts";
import type { BatchException, BatchOutcome } from "./pipeline_batch.ts";
import type { PipelineResult } from "./pipeline.ts";
import { inlinePipeline, type PipelineRunner } from "./pipeline_thread.ts";
import type { PayloadBatch } from "./payload_batch.ts";
import type { Message } from "./record.ts";
import { backoffDelay, sleep } from "./retry.ts";
import type { Spool, SpoolChunk } from "./spool.ts";

/** Options of {@linkcode Intake}. */
export interface IntakeOptions {
  /** A {@linkcode PipelineThread}, or the pipeline function itself to run it on this thread. */
  readonly pipeline: PipelineRunner | ((message: Message) => PipelineResult);
  readonly spool: Spool;
  readonly metrics: WorkerMetrics;
  /** Most messages in one spool transaction (whole bursts; at least one); default 1000. */
  readonly maxBatch?: number;
  /** How often the same warning (per topic and reason or device) may be logged; default a minute. */
  readonly warningWindowMs?: number;
  /**
   * Messages, and payload bytes, accepted but not yet durable beyond which the
   * intake is {@linkcode Intake.saturated}; default 8000 and 16 MiB.
   */
  readonly maxPending?: { readonly messages: number; readonly bytes: number };
}

const DEFAULT_MAX_PENDING = { messages: 8000, bytes: 16 * 2 ** 20 };

/**
 * Bursts on the pipeline at once. While that many are, the next one keeps
 * growing (up to {@linkcode MAX_BURST_MESSAGES}) instead of following at
 * once: a busy pipeline gets fewer, bigger batches, and each batch's fixed
 * costs (the hand-off to the thread, a spool row, a group of acknowledgements)
 * are paid less often. An idle one gets each burst at once, so latency at a
 * steady rate does not change.
 */
const MAX_BURSTS_IN_PIPELINE = 1;
/**
 * A burst bigger than this goes to the pipeline even while it is busy. Smaller bursts make
 * smaller buffers (500: 5–15 MiB less at a drain's peak) but cost 6–10 % more CPU per message
 * (bench --compare, 2026-12-03), which the file sink's throughput target cannot spare.
 */
const MAX_BURST_MESSAGES = 2000;

/**
 * The messages taken in one turn of the event loop (or several, while the
 * pipeline was busy), and their shared fate.
 */
class Burst {
  /** The messages, packed as they arrive; once on the pipeline, only where each came from. */
  readonly payloads: PayloadBatch;
  readonly durable: Promise<void>;
  resolve!: () => void;
  reject!: (error: Error) => void;
  /** How many messages, and payload bytes, once the burst is closed. */
  size = 0;
  bytes = 0;
  /** What the pipeline made of the messages, once it has. */
  chunk?: SpoolChunk;

  constructor(payloads: PayloadBatch) {
    this.payloads = payloads;
    this.durable = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    // Callers may hold only some messages' promises; a failed burst must not go unhandled.
    this.durable.catch(() => {});
  }
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
  /** Bursts the pipeline has done, waiting for the spool. */
  readonly #queue: Burst[] = [];
  readonly #closing = new AbortController();
  /** The burst taking messages now, if any, and the timer that closes it. */
  #burst?: Burst;
  #handOverTimer?: ReturnType<typeof setImmediate>;
  /** Bursts handed to the pipeline whose outcome has not come back yet. */
  #inPipeline = 0;
  /** Payload bytes of the last burst handed to the pipeline. */
  #lastBurstBytes = 0;
  /** Bursts handed to the pipeline; their outcomes are queued for the spool in this order. */
  #pipelined: Promise<void> = Promise.resolve();
  #pending = 0;
  #pendingBytes = 0;
  /** Saturated, until the backlog is down to half of maxPending. */
  #holding = false;
  #flushing?: Promise<void>;
  /** The last appended group's wait for its sync; earlier ones settle before it. */
  #settled: Promise<void> = Promise.resolve();
  /** Appended, waiting for the sync that #settle starts. */
  #committed: Burst[] = [];
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
    return this.#pending;
  }

  /**
   * True while more is waiting for the pipeline and the disk than they need
   * to keep busy (see `maxPending`): the connector then stops reading from
   * the broker, so a backlog waits there, not in memory. False while the
   * spool is full: the messages then wait unacknowledged, and reading goes
   * on so the connection stays alive.
   */
  get saturated(): boolean {
    if (this.#full) return false;
    const max = this.#options.maxPending ?? DEFAULT_MAX_PENDING;
    if (this.#pending >= max.messages || this.#pendingBytes >= max.bytes) {
      this.#holding = true;
    } else if (this.#pending <= max.messages / 2 && this.#pendingBytes <= max.bytes / 2) {
      // Down to half before reading again: reading resumes with whole socket chunks, which
      // make bursts worth a transaction, not a message at a time.
      this.#holding = false;
    }
    return this.#holding;
  }

  /**
   * Runs the pipeline over `message`; resolves when the outcome is durable.
   * Every message of one burst gets the same promise. Rejects only when the
   * disk failed to sync it or the pipeline thread died with it: then it must
   * not be acknowledged.
   */
  accept(message: Message): Promise<void> {
    let burst = this.#burst;
    if (burst === undefined) {
      // Room for as much as the last burst had: a drain's bursts are alike, and a buffer that
      // has to grow is copied.
      burst = this.#burst = new Burst(this.#pipeline.batch(this.#lastBurstBytes));
    }
    // mqtt.js handles the packets of a socket chunk one process.nextTick after the other; in
    // Deno, microtasks can run between the first and the second, so a microtask would split off
    // the chunk's first message. An immediate runs once they are all done, and, unlike a timer,
    // without waiting a millisecond. A burst kept open while the pipeline is busy gets another
    // immediate with its next message, so it never outgrows MAX_BURST_MESSAGES by more than a
    // socket chunk.
    this.#handOverTimer ??= setImmediate(() => {
      this.#handOverTimer = undefined;
      this.#handOver(false);
    });
    burst.payloads.add(message);
    burst.bytes += message.payload.byteLength;
    this.#pending++;
    this.#pendingBytes += message.payload.byteLength;
    return burst.durable;
  }

  /**
   * Writes what is queued (as far as the spool has room) and stops. Messages
   * still queued after that stay unacknowledged; the broker sends them again.
   */
  async close(): Promise<void> {
    this.#handOver(true);
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

  /**
   * Sends the burst to the pipeline, unless the pipeline is busy and the
   * burst may still grow (see {@linkcode MAX_BURSTS_IN_PIPELINE}) and `now`
   * is false; its outcome joins the spool queue in order.
   */
  #handOver(now: boolean): void {
    const burst = this.#burst;
    if (burst === undefined || burst.payloads.length === 0) return;
    if (
      !now && this.#inPipeline >= MAX_BURSTS_IN_PIPELINE &&
      burst.payloads.length < MAX_BURST_MESSAGES
    ) {
      return;
    }
    clearImmediate(this.#handOverTimer);
    this.#handOverTimer = undefined;
    this.#burst = undefined;
    const count = (burst.size = burst.payloads.length);
    this.#lastBurstBytes = burst.bytes;
    this.#options.metrics.messagesReceived.add(count);
    // Started now, so the thread works while earlier outcomes are still being spooled.
    const outcome = this.#pipeline.run(burst.payloads);
    this.#inPipeline++;
    const returned = () => {
      this.#inPipeline--;
      // The burst that waited for the pipeline goes now.
      this.#handOver(false);
    };
    outcome.then(returned, returned);
    this.#pipelined = this.#pipelined.then(() => outcome).then(
      (outcome) => {
        burst.chunk = this.#chunkOf(burst, outcome);
        this.#queue.push(burst);
        // Straight on to the spool: a burst is already a batch, and a commit is cheap (the sync
        // is what takes time, and it covers every commit made while the last one ran).
        this.#flush();
      },
      (error) => {
        // The pipeline thread died with these on it: none is acknowledged, the broker resends.
        this.#pending -= count;
        this.#pendingBytes -= burst.bytes;
        this.#log.error("The pipeline failed on {count} message(s): {error}", { count, error });
        burst.reject(error);
      },
    );
  }

  #chunkOf(burst: Burst, outcome: BatchOutcome): SpoolChunk {
    const { firstRecord } = outcome;
    const { topics, receivedAt: receivedAtOf } = burst.payloads;
    const records = firstRecord[burst.size];
    const receivedAt = new Float64Array(records);
    const recordTopics: string[] = new Array(records);
    for (let index = 0; index < burst.size; index++) {
      for (let record = firstRecord[index]; record < firstRecord[index + 1]; record++) {
        receivedAt[record] = receivedAtOf[index];
        recordTopics[record] = topics[index];
      }
    }
    const deadLetters: string[] = [];
    for (const exception of outcome.exceptions) {
      const topic = topics[exception.index];
      this.#report(topic, exception);
      for (const rejection of exception.rejections) {
        deadLetters.push(formatDeadLetter({
          receivedAt: receivedAtOf[exception.index],
          topic,
          reason: rejection.message,
          code: rejection.reason,
          payload: rejection.payload,
          index: rejection.index,
        }));
      }
    }
    return {
      lines: outcome.lines,
      ends: outcome.ends,
      receivedAt,
      topics: recordTopics,
      deadLetters,
    };
  }

  #report(topic: string, exception: BatchException): void {
    const { metrics } = this.#options;
    if (exception.failure !== undefined) {
      // The stages never throw by contract; if one did, the payload is kept, not lost.
      this.#log.error("The pipeline failed on a message from {topic}: {error}", {
        topic,
        error: exception.failure,
      });
    }
    for (const rejection of exception.rejections) {
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
    for (const drop of exception.dropped) {
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
      let taken = 0;
      let messages = 0;
      while (taken < this.#queue.length) {
        const size = this.#queue[taken].size;
        if (taken > 0 && messages + size > maxBatch) break;
        messages += size;
        taken++;
      }
      const group = this.#queue.slice(0, taken);
      try {
        spool.appendChunks(group.map((burst) => burst.chunk!));
      } catch (error) {
        // Disk full, I/O error: keep the messages (unacknowledged) and try again.
        const delay = backoffDelay(failures++, { minMs: 500, maxMs: 30_000 });
        this.#log.error(
          "Could not write {count} burst(s) of messages to the spool: {error}; trying again in {seconds} s",
          { count: group.length, error, seconds: (delay / 1000).toFixed(1) },
        );
        if (!await sleep(delay, this.#closing.signal)) return;
        continue;
      }
      failures = 0;
      this.#queue.splice(0, taken);
      for (const burst of group) burst.chunk = undefined;
      // More than maxBatch waiting: the rest goes in further transactions under the same sync.
      this.#committed.push(...group);
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
    let failure: Error | undefined;
    try {
      await this.#options.spool.sync();
    } catch (error) {
      failure = error instanceof Error ? error : new Error(String(error));
    } finally {
      this.#syncing = false;
      if (this.#queue.length > 0) this.#flush();
    }
    for (const burst of committed) {
      this.#pending -= burst.size;
      this.#pendingBytes -= burst.bytes;
      if (failure) burst.reject(failure);
      else burst.resolve();
    }
    if (failure) {
      this.#log.error(
        "Could not make {count} burst(s) of messages durable: syncing the spool to disk failed ({error}); they stay unacknowledged and the broker sends them again",
        { count: committed.length, error: failure },
      );
    }
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
