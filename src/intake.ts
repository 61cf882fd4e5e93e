/**
 * The hand-off from the connector to the spool: runs the pipeline over each
 * message, logs and counts its rejections, and appends what came out to the
 * spool in one transaction per burst of messages. Each message's promise
 * resolves only once its records and dead letters are durable, and that is
 * when the connector acknowledges it. Group commit: while one sync to disk
 * runs, the messages that arrive meanwhile queue up for the next one.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { formatDeadLetter } from "./dead_letter.ts";
import { RateLimiter } from "./logging.ts";
import type { WorkerMetrics } from "./metrics.ts";
import type { PipelineResult } from "./pipeline.ts";
import type { Message } from "./record.ts";
import { backoffDelay, sleep } from "./retry.ts";
import type { Spool, SpoolEntry } from "./spool.ts";

/** Options of {@linkcode Intake}. */
export interface IntakeOptions {
  readonly pipeline: (message: Message) => PipelineResult;
  readonly spool: Spool;
  readonly metrics: WorkerMetrics;
  /** Most messages in one spool transaction; default 1000. */
  readonly maxBatch?: number;
  /** How often the same warning (per topic and reason or device) may be logged; default a minute. */
  readonly warningWindowMs?: number;
}

interface Pending {
  readonly entry: SpoolEntry;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

/**
 * Turns messages into spooled records.
 *
 * @example
 * ```ts
 * const intake = new Intake({ pipeline, spool, metrics });
 * await intake.accept(message); // durable now: acknowledge it
 * await intake.close();
 * ```
 */
export class Intake {
  readonly #options: IntakeOptions;
  readonly #log = getLogger(["gridrelay", "intake"]);
  readonly #warnings: RateLimiter;
  readonly #queue: Pending[] = [];
  readonly #closing = new AbortController();
  #flushing?: Promise<void>;
  #scheduled?: ReturnType<typeof setTimeout>;
  #full = false;

  constructor(options: IntakeOptions) {
    this.#options = options;
    this.#warnings = new RateLimiter(options.warningWindowMs ?? 60_000);
  }

  /** Number of messages accepted but not yet durable. */
  get pending(): number {
    return this.#queue.length;
  }

  /**
   * Runs the pipeline over `message`; resolves when the outcome is durable.
   * Rejects only when the disk failed to sync it: then it must not be acknowledged.
   */
  accept(message: Message): Promise<void> {
    this.#options.metrics.messagesReceived.add();
    const result = this.#run(message);
    this.#report(message, result);
    const entry: SpoolEntry = {
      records: result.records,
      deadLetters: result.rejections.map((rejection) =>
        formatDeadLetter({
          receivedAt: message.receivedAt,
          topic: message.topic,
          reason: rejection.message,
          code: rejection.reason,
          payload: rejection.payload,
          index: rejection.index,
        })
      ),
      receivedAt: message.receivedAt,
      topic: message.topic,
    };
    const durable = new Promise<void>((resolve, reject) =>
      this.#queue.push({ entry, resolve, reject })
    );
    this.#schedule();
    return durable;
  }

  /**
   * Writes what is queued (as far as the spool has room) and stops. Messages
   * still queued after that stay unacknowledged; the broker sends them again.
   */
  async close(): Promise<void> {
    clearTimeout(this.#scheduled);
    this.#scheduled = undefined;
    if (!this.#full) await this.#flush();
    this.#closing.abort();
    await this.#flushing;
  }

  #run(message: Message): PipelineResult {
    try {
      return this.#options.pipeline(message);
    } catch (error) {
      // The stages never throw by contract; if one does, the payload is kept, not lost.
      this.#log.error("The pipeline failed on a message from {topic}: {error}", {
        topic: message.topic,
        error,
      });
      return {
        records: [],
        rejections: [{
          reason: "internal_error",
          message: `gridrelay could not process this payload (${error}); please report it`,
          payload: message.payload,
        }],
        dropped: [],
      };
    }
  }

  #report(message: Message, result: PipelineResult): void {
    const { metrics } = this.#options;
    for (const rejection of result.rejections) {
      metrics.rejected.add(1, rejection.reason);
      const key = `${message.topic}\u0000${rejection.reason}\u0000${rejection.device ?? ""}`;
      const verdict = this.#warnings.check(key);
      if (!verdict.allowed) continue;
      this.#log.warn(
        "Rejected {what} from {topic}: {reason}{suppressed}",
        {
          what: rejection.index === undefined ? "a payload" : "a reading",
          topic: message.topic,
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
          topic: message.topic,
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
    // Appended, not yet synced: one sync at the end covers them all.
    let committed: Pending[] = [];
    while (this.#queue.length > 0) {
      if (spool.full) {
        await this.#settle(committed);
        committed = [];
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
        await this.#settle(committed);
        committed = [];
        if (!await sleep(delay, this.#closing.signal)) return;
        continue;
      }
      failures = 0;
      this.#queue.splice(0, batch.length);
      committed = committed.length === 0 ? batch : committed.concat(batch);
    }
    await this.#settle(committed);
  }

  /** Waits until `committed` is on disk, then lets the connector acknowledge it. */
  async #settle(committed: readonly Pending[]): Promise<void> {
    if (committed.length === 0) return;
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
