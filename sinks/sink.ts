/**
 * The one small interface every sink implements, built-in or user-written,
 * and the errors a sink throws to refuse some records for good or to ask
 * for a later retry.
 * @module
 */

import type { OutputRecord } from "../src/record.ts";

export type { OutputRecord };

/**
 * A destination for records. The sink runner calls `write` with one batch at
 * a time, never two at once, and retries a batch whose `write` throws.
 *
 * @example
 * ```ts
 * const sink: Sink = {
 *   name: "console",
 *   async write(records) {
 *     for (const record of records) console.log(JSON.stringify(record));
 *   },
 * };
 * ```
 */
export interface Sink {
  /** Names the sink in logs, metrics labels and its spool cursor; unique among configured sinks. */
  readonly name: string;
  /**
   * The most records the sink takes in one `write` (a whole number from 1);
   * the runner never passes more. Unset: the runner's own batch size.
   */
  readonly batchSize?: number;
  /**
   * Resolve when the records are accepted (written and flushed, or answered
   * 2xx); throw to have the batch retried. Abort work in flight when `signal`
   * aborts: the batch then stays in the spool for the next start.
   */
  write(records: OutputRecord[], signal: AbortSignal): Promise<void>;
  /**
   * Optional, for sinks that only serialise records: takes the batch as
   * record texts (each one JSON object on one line, numbers digit for digit
   * as received) and is called instead of `write`, which spares parsing every
   * record. The same contract as `write` otherwise; refusals index `texts`.
   */
  writeTexts?(texts: string[], signal: AbortSignal): Promise<void>;
  /**
   * Optional, for sinks that write JSON Lines: takes the batch as the UTF-8
   * bytes the spool holds — each record one line ended by "\n", numbers digit
   * for digit as received — and is called instead of `write` and
   * `writeTexts`. The same contract otherwise; refusals index the lines. The
   * bytes are lent for the call: do not keep them once the returned promise
   * has settled (copy what must outlive it).
   */
  writeLines?(lines: Uint8Array, signal: AbortSignal): Promise<void>;
  /** Flushes and releases resources on shutdown. */
  close?(): Promise<void>;
}

/**
 * One record a sink refuses for good, by its index in the batch.
 *
 * @example
 * ```ts
 * const refusal: RecordRefusal = { index: 3, reason: "HTTP 400: field E must be a number" };
 * ```
 */
export interface RecordRefusal {
  /** Index of the record in the batch passed to `write`. */
  readonly index: number;
  /** Why, in words a person can act on; it goes into the dead letter. */
  readonly reason: string;
}

/**
 * Thrown by a sink that refuses some records for good (e.g. an HTTP 400):
 * those go to the dead letters, the rest of the batch counts as delivered.
 *
 * @example
 * ```ts
 * throw new RecordsRefusedError("the webhook answered 400", {
 *   refused: records.map((_, index) => ({ index, reason: "HTTP 400 Bad Request" })),
 * });
 * ```
 */
export class RecordsRefusedError extends Error {
  /** The refused records, by index in the batch. */
  readonly refused: readonly RecordRefusal[];

  constructor(message: string, options: { refused: readonly RecordRefusal[]; cause?: unknown }) {
    super(message, { cause: options.cause });
    this.name = "RecordsRefusedError";
    this.refused = options.refused;
  }
}

/** The longest wait a {@linkcode RetryLaterError} can ask for: 5 minutes. */
export const MAX_RETRY_AFTER_MS = 5 * 60 * 1000;

/**
 * Thrown by a sink whose destination asked to be left alone for a while
 * (e.g. HTTP 429 with `Retry-After`): the runner retries the same batch, no
 * sooner than `retryAfterMs` from now and no sooner than its back-off would.
 * The wait is capped at {@linkcode MAX_RETRY_AFTER_MS}, so a bad header
 * cannot park a sink for days.
 *
 * @example
 * ```ts
 * throw new RetryLaterError("the webhook answered 429 Too Many Requests", { retryAfterMs: 2000 });
 * ```
 */
export class RetryLaterError extends Error {
  /** How long to wait before the next attempt, from 0 to {@linkcode MAX_RETRY_AFTER_MS}. */
  readonly retryAfterMs: number;

  constructor(message: string, options: { retryAfterMs: number; cause?: unknown }) {
    super(message, { cause: options.cause });
    this.name = "RetryLaterError";
    const wait = Number.isNaN(options.retryAfterMs) ? 0 : options.retryAfterMs;
    this.retryAfterMs = Math.min(MAX_RETRY_AFTER_MS, Math.max(0, Math.ceil(wait)));
  }
}
