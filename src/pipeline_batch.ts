/**
 * The pipeline over a batch of messages, with every record written straight
 * into one buffer of JSON Lines bytes — what the spool stores and the file
 * sink writes — so no record becomes a string on its way. Messages that give
 * more than a record (rejections, dropped readings) are listed apart. Pure:
 * no I/O, no clock; it runs on the pipeline thread or, as a fallback, on the
 * main thread.
 * @module
 */

import { createPipeline, type PipelineOptions, type PipelineResult } from "./pipeline.ts";
import type { Message } from "./record.ts";
import { createAmmpBytes, recordMetaText } from "./stages/ammp_bytes.ts";
import { createRecordMeta } from "./stages/record_meta.ts";
import type { DroppedReading, Rejection } from "./stages/result.ts";

/**
 * One message's pipeline result, and, if a stage broke its contract by
 * throwing, what it threw (the result then rejects the payload as `internal_error`).
 *
 * @example
 * ```ts
 * const outcome: PipelineOutcome = { records: ['{"time":"2021-07-06T12:55:00+00:00","data":{}}'], rejections: [], dropped: [] };
 * ```
 */
export type PipelineOutcome = PipelineResult & { readonly failure?: string };

/**
 * What a message gave besides its records: rejections, readings dropped by
 * policy, or a stage's failure. Only messages with any of these are listed.
 *
 * @example
 * ```ts
 * const exception: BatchException = { index: 3, rejections: [], dropped: [{ index: 0 }] };
 * ```
 */
export interface BatchException {
  /** The message's index in the batch. */
  readonly index: number;
  readonly rejections: readonly Rejection[];
  readonly dropped: readonly DroppedReading[];
  /** Set when a stage threw (it never should): the stack, for the log. */
  readonly failure?: string;
}

/**
 * The records of a batch as JSON Lines, and which message gave which.
 *
 * @example
 * ```ts
 * const outcome: BatchOutcome = {
 *   lines: new TextEncoder().encode('{"time":"2021-07-06T12:55:00+00:00","data":{}}\n'),
 *   ends: Uint32Array.of(48),
 *   firstRecord: Uint32Array.of(0, 1, 1), // message 0 gave record 0; message 1 gave none
 *   exceptions: [{ index: 1, rejections: [], dropped: [] }],
 * };
 * ```
 */
export interface BatchOutcome {
  /** Every record of the batch, in message order, as UTF-8 JSON Lines (each ended by "\n"). */
  readonly lines: Uint8Array;
  /** Per record, the offset in `lines` just past its "\n". */
  readonly ends: Uint32Array;
  /** Per message, the index of its first record; one more entry at the end (the record count). */
  readonly firstRecord: Uint32Array;
  /** The messages that gave rejections, dropped readings or a failure, in message order. */
  readonly exceptions: readonly BatchException[];
}

/**
 * Writes one message's record into the output and says true, or says false
 * (having written nothing) to leave the message to the full pipeline. See
 * `src/stages/ammp_bytes.ts`.
 */
export type RecordWriter = (payload: Uint8Array, metaText: string, out: ByteOutput) => boolean;

/** A growable output buffer: `bytes[0, length)` are written. */
export interface ByteOutput {
  bytes: Uint8Array;
  length: number;
}

/**
 * Runs `pipeline` over one message; a stage that throws (it never should)
 * gives an `internal_error` rejection that keeps the payload, not an exception.
 *
 * @example
 * ```ts
 * const outcome = runGuarded(createPipeline(options), message);
 * if (outcome.failure) console.error(outcome.failure);
 * ```
 */
export function runGuarded(
  pipeline: (message: Message) => PipelineResult,
  message: Message,
): PipelineOutcome {
  try {
    return pipeline(message);
  } catch (error) {
    return {
      records: [],
      rejections: [{
        reason: "internal_error",
        message: `gridrelay could not process this payload (${error}); please report it`,
        payload: message.payload,
      }],
      dropped: [],
      failure: error instanceof Error ? (error.stack ?? String(error)) : String(error),
    };
  }
}

/** Options of {@linkcode createBatchPipeline}. */
export interface BatchPipelineOptions {
  /** A fast way to write a message's record, tried before the full pipeline. */
  readonly writeRecord?: RecordWriter;
  /** Builds the `RECORD_META` text the record writer needs, per message. */
  readonly metaText?: (message: Message) => string;
}

const encoder = new TextEncoder();
const NEWLINE = 0x0a;

/**
 * Builds the batch pipeline for `options`: {@linkcode createPipeline}'s
 * pipeline over each message, its records written as JSON Lines. For the
 * `ammp` transform, the byte-level fast path (src/stages/ammp_bytes.ts)
 * writes the plain cases and the pipeline takes the rest.
 *
 * @example
 * ```ts
 * const run = createBatchPipeline(options);
 * const { lines, ends, firstRecord } = run(messages);
 * ```
 */
export function createBatchPipeline(
  options: PipelineOptions,
): (messages: readonly Message[]) => BatchOutcome {
  const pipeline = createPipeline(options);
  if (options.transform !== "ammp") return batchPipeline(pipeline, {});
  const metaOf = createRecordMeta(options);
  return batchPipeline(pipeline, {
    writeRecord: createAmmpBytes(options),
    metaText: options.recordMeta.length === 0
      ? undefined
      : (message) => recordMetaText(metaOf(message)),
  });
}

/**
 * Runs a per-message pipeline over batches: each message goes through the
 * record writer when one is given and takes it, else through `pipeline`;
 * both must give the same bytes.
 *
 * @example
 * ```ts
 * const run = batchPipeline(createPipeline(options), {});
 * const outcome = run(messages);
 * ```
 */
export function batchPipeline(
  pipeline: (message: Message) => PipelineResult,
  batchOptions: BatchPipelineOptions,
): (messages: readonly Message[]) => BatchOutcome {
  const { writeRecord, metaText } = batchOptions;
  return (messages) => {
    let estimate = 64;
    for (const message of messages) estimate += Math.min(message.payload.byteLength, 2 ** 16) + 256;
    const out: ByteOutput = { bytes: new Uint8Array(estimate), length: 0 };
    const ends: number[] = [];
    const firstRecord = new Uint32Array(messages.length + 1);
    const exceptions: BatchException[] = [];
    for (let index = 0; index < messages.length; index++) {
      const message = messages[index];
      firstRecord[index] = ends.length;
      if (writeRecord?.(message.payload, metaText?.(message) ?? "", out)) {
        appendNewline(out);
        ends.push(out.length);
        continue;
      }
      const outcome = runGuarded(pipeline, message);
      for (const record of outcome.records) {
        appendText(out, record);
        ends.push(out.length);
      }
      if (outcome.rejections.length > 0 || outcome.dropped.length > 0) {
        exceptions.push({
          index,
          // Copied: a payload may be a view into a large batch buffer that must not stay alive.
          rejections: outcome.rejections.map((rejection) =>
            typeof rejection.payload === "string"
              ? rejection
              : { ...rejection, payload: rejection.payload.slice() }
          ),
          dropped: outcome.dropped,
          ...(outcome.failure === undefined ? {} : { failure: outcome.failure }),
        });
      }
    }
    firstRecord[messages.length] = ends.length;
    // A generous estimate is trimmed, so memory kept for the lines is about their size; the
    // untrimmed buffer is released now rather than whenever this thread next collects garbage.
    let lines = out.bytes.subarray(0, out.length);
    if (out.length * 4 < out.bytes.length * 3) {
      lines = lines.slice();
      (out.bytes.buffer as ArrayBuffer).transfer(0);
    }
    return { lines, ends: Uint32Array.from(ends), firstRecord, exceptions };
  };
}

/**
 * The outcome of a batch as per-message pipeline outcomes, record texts
 * decoded (for tests and for callers that want the simple shape).
 *
 * @example
 * ```ts
 * const outcomes = outcomesOf(run(messages)); // outcomes[i].records, .rejections, .dropped
 * ```
 */
export function outcomesOf(batch: BatchOutcome): PipelineOutcome[] {
  const decoder = new TextDecoder();
  const exceptions = new Map(batch.exceptions.map((exception) => [exception.index, exception]));
  const outcomes: PipelineOutcome[] = [];
  for (let index = 0; index + 1 < batch.firstRecord.length; index++) {
    const records: string[] = [];
    for (let record = batch.firstRecord[index]; record < batch.firstRecord[index + 1]; record++) {
      const start = record === 0 ? 0 : batch.ends[record - 1];
      records.push(decoder.decode(batch.lines.subarray(start, batch.ends[record] - 1)));
    }
    const exception = exceptions.get(index);
    outcomes.push({
      records,
      rejections: exception?.rejections ?? [],
      dropped: exception?.dropped ?? [],
      ...(exception?.failure === undefined ? {} : { failure: exception.failure }),
    });
  }
  return outcomes;
}

function ensureRoom(out: ByteOutput, bytes: number): void {
  if (out.bytes.length - out.length >= bytes) return;
  const grown = new Uint8Array(Math.max(out.bytes.length * 2, out.length + bytes));
  grown.set(out.bytes.subarray(0, out.length));
  out.bytes = grown;
}

function appendNewline(out: ByteOutput): void {
  ensureRoom(out, 1);
  out.bytes[out.length++] = NEWLINE;
}

function appendText(out: ByteOutput, text: string): void {
  // A UTF-16 code unit takes at most 3 bytes in UTF-8; plus the newline.
  ensureRoom(out, text.length * 3 + 1);
  out.length += encoder.encodeInto(text, out.bytes.subarray(out.length)).written;
  out.bytes[out.length++] = NEWLINE;
}
