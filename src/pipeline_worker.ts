/**
 * The worker-thread side of {@linkcode PipelineThread} (src/pipeline_thread.ts),
 * and the messages both sides exchange. On a worker thread it builds the
 * batch pipeline from the options it is sent first, then runs it over each
 * batch and posts the outcome back — records as JSON Lines bytes, the buffers
 * transferred, not copied. No I/O, no logging: failures travel back as
 * values. Its imports are pure modules only, so the thread loads nothing but
 * the pipeline's code.
 * @module
 */

import { type BatchOutcome, createBatchPipeline } from "./pipeline_batch.ts";
import type { PipelineOptions } from "./pipeline.ts";
import type { Message } from "./record.ts";

/** The first message to the worker: how to build the pipeline. */
export interface InitMessage {
  readonly kind: "init";
  readonly options: PipelineOptions;
}

/**
 * A batch for the worker: the payloads back to back in one transferred
 * buffer, and each message's topic and receipt time only when the pipeline
 * uses them (`RECORD_META`): copying them across costs as much as the rest.
 */
export interface BatchMessage {
  readonly kind: "batch";
  readonly id: number;
  /** End offset of each payload in `bytes`; each starts where the previous ended. */
  readonly ends: Uint32Array;
  readonly bytes: ArrayBuffer;
  readonly topics?: readonly string[];
  readonly receivedAt?: readonly number[];
}

/**
 * The messages of a batch again, their payloads views into its buffer.
 *
 * @example
 * ```ts
 * const bytes = new TextEncoder().encode("{}[]");
 * batchMessages({ kind: "batch", id: 0, ends: new Uint32Array([2, 4]), bytes: bytes.buffer, topics: ["a", "b"], receivedAt: [1, 2] });
 * // [{ topic: "a", payload: "{}" as bytes, receivedAt: 1 }, { topic: "b", payload: "[]" as bytes, receivedAt: 2 }]
 * ```
 */
export function batchMessages(batch: BatchMessage): Message[] {
  const payloads = new Uint8Array(batch.bytes);
  const messages: Message[] = [];
  let start = 0;
  for (let i = 0; i < batch.ends.length; i++) {
    const end = batch.ends[i];
    messages.push({
      topic: batch.topics?.[i] ?? "",
      payload: payloads.subarray(start, end),
      receivedAt: batch.receivedAt?.[i] ?? 0,
    });
    start = end;
  }
  return messages;
}

/** The worker's answer to a batch: its outcome, the buffers transferred. */
export interface OutcomesMessage {
  readonly kind: "outcomes";
  readonly id: number;
  readonly outcome: BatchOutcome;
}

// Deno's default TypeScript library describes a window, not a worker's global scope.
const scope = globalThis as unknown as {
  onmessage: ((event: MessageEvent<InitMessage | BatchMessage>) => void) | null;
  postMessage(message: unknown, transfer?: Transferable[]): void;
};

let run: ((messages: readonly Message[]) => BatchOutcome) | undefined;

function onMessage(event: MessageEvent<InitMessage | BatchMessage>): void {
  const data = event.data;
  if (data.kind === "init") {
    run = createBatchPipeline(data.options);
    return;
  }
  const outcome = run!(batchMessages(data));
  // Every payload has been read (what a rejection keeps is a copy): release them now. This
  // thread allocates little, so its garbage collector would otherwise free them only late.
  data.bytes.transfer(0);
  const reply: OutcomesMessage = { kind: "outcomes", id: data.id, outcome };
  scope.postMessage(reply, [
    outcome.lines.buffer as ArrayBuffer,
    outcome.ends.buffer as ArrayBuffer,
    outcome.firstRecord.buffer as ArrayBuffer,
  ]);
}

// Imported by the main thread too, for the shared types and helpers: only a worker listens.
if ("WorkerGlobalScope" in globalThis) scope.onmessage = onMessage;
