/**
 * The worker-thread side of {@linkcode PipelineThread} (src/pipeline_thread.ts),
 * and the messages both sides exchange. On a worker thread it builds the
 * pipeline from the options it is sent first, then runs it over each batch
 * and posts the outcomes back, in order. No I/O, no logging: failures travel
 * back as values. Its imports are pure modules only, so the thread loads
 * nothing but the pipeline's code.
 * @module
 */

import { createPipeline, type PipelineOptions, type PipelineResult } from "./pipeline.ts";
import type { Message } from "./record.ts";

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

/** The first message to the worker: how to build the pipeline. */
export interface InitMessage {
  readonly kind: "init";
  readonly options: PipelineOptions;
}

/** A batch for the worker: the payloads back to back in one transferred buffer. */
export interface BatchMessage {
  readonly kind: "batch";
  readonly id: number;
  readonly topics: readonly string[];
  readonly receivedAt: readonly number[];
  /** End offset of each payload in `bytes`; each starts where the previous ended. */
  readonly ends: Uint32Array;
  readonly bytes: ArrayBuffer;
}

/**
 * The messages of a batch again, their payloads views into its buffer.
 *
 * @example
 * ```ts
 * const bytes = new TextEncoder().encode("{}[]");
 * batchMessages({ kind: "batch", id: 0, topics: ["a", "b"], receivedAt: [1, 2], ends: new Uint32Array([2, 4]), bytes: bytes.buffer });
 * // [{ topic: "a", payload: "{}" as bytes, receivedAt: 1 }, { topic: "b", payload: "[]" as bytes, receivedAt: 2 }]
 * ```
 */
export function batchMessages(batch: BatchMessage): Message[] {
  const payloads = new Uint8Array(batch.bytes);
  const messages: Message[] = [];
  let start = 0;
  for (let i = 0; i < batch.topics.length; i++) {
    const end = batch.ends[i];
    messages.push({
      topic: batch.topics[i],
      payload: payloads.subarray(start, end),
      receivedAt: batch.receivedAt[i],
    });
    start = end;
  }
  return messages;
}

/** The worker's answer to a batch. */
export interface OutcomesMessage {
  readonly kind: "outcomes";
  readonly id: number;
  readonly outcomes: readonly WireOutcome[];
}

/** An outcome as it crosses threads: the common case, one record and nothing else, as its text. */
export type WireOutcome = string | PipelineOutcome;

/**
 * Outcomes as the worker posts them: a lone record as its bare text (cheaper
 * to copy than an object), and rejected payloads copied out of the batch
 * buffer so only their own bytes cross back.
 *
 * @example
 * ```ts
 * encodeOutcomes([{ records: ["{}"], rejections: [], dropped: [] }]); // ["{}"]
 * ```
 */
export function encodeOutcomes(outcomes: readonly PipelineOutcome[]): WireOutcome[] {
  return outcomes.map((outcome) => {
    const { records, rejections, dropped } = outcome;
    if (records.length === 1 && rejections.length === 0 && dropped.length === 0) {
      return records[0];
    }
    if (rejections.length === 0) return outcome;
    return {
      ...outcome,
      rejections: rejections.map((rejection) =>
        typeof rejection.payload === "string"
          ? rejection
          : { ...rejection, payload: rejection.payload.slice() }
      ),
    };
  });
}

/**
 * The other half of {@linkcode encodeOutcomes}.
 *
 * @example
 * ```ts
 * decodeOutcome("{}"); // { records: ["{}"], rejections: [], dropped: [] }
 * ```
 */
export function decodeOutcome(wire: WireOutcome): PipelineOutcome {
  return typeof wire === "string" ? { records: [wire], rejections: NONE, dropped: NONE } : wire;
}

const NONE: readonly never[] = Object.freeze([]);

// Deno's default TypeScript library describes a window, not a worker's global scope.
const scope = globalThis as unknown as {
  onmessage: ((event: MessageEvent<InitMessage | BatchMessage>) => void) | null;
  postMessage(message: unknown, transfer?: Transferable[]): void;
};

let pipeline: ReturnType<typeof createPipeline> | undefined;

function onMessage(event: MessageEvent<InitMessage | BatchMessage>): void {
  const data = event.data;
  if (data.kind === "init") {
    pipeline = createPipeline(data.options);
    return;
  }
  const outcomes = batchMessages(data).map((message) => runGuarded(pipeline!, message));
  scope.postMessage({ kind: "outcomes", id: data.id, outcomes: encodeOutcomes(outcomes) });
}

// Imported by the main thread too, for the shared types and helpers: only a worker listens.
if ("WorkerGlobalScope" in globalThis) scope.onmessage = onMessage;
