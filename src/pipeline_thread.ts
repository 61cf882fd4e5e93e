/**
 * Runs the pure pipeline on a worker thread (src/pipeline_worker.ts), so the
 * JSON work of a burst does not hold up the thread that talks MQTT, commits
 * the spool and feeds the sinks. Batches go over in order and their outcomes
 * come back in order; a burst of a few payloads runs here instead, since the
 * trip to the thread would cost it more. If the thread cannot start or dies,
 * the pipeline runs on the calling thread instead; what was on it stays
 * unacknowledged, so the broker sends it again and nothing is lost.
 * @module
 */

import { fileURLToPath } from "node:url";
import { getLogger } from "@logtape/logtape";
import type { PipelineOptions } from "./pipeline.ts";
import {
  type BatchException,
  type BatchOutcome,
  batchPipeline,
  createBatchPipeline,
} from "./pipeline_batch.ts";
import { PayloadBatch } from "./payload_batch.ts";
import type { BatchMessage, InitMessage, OutcomesMessage } from "./pipeline_worker.ts";
import type { Message } from "./record.ts";
import type { PipelineResult } from "./stages/result.ts";

/**
 * Runs the pipeline over batches of messages; the records come back as JSON
 * Lines in the order of the messages. A batch comes from `batch` (its
 * payloads are copied in as they arrive, so the caller may let them go), and
 * `run` takes its payloads; `run` rejects only when the messages could not
 * be run at all (they must then not be acknowledged).
 *
 * @example
 * ```ts
 * const runner: PipelineRunner = inlinePipeline(createPipeline(options));
 * const batch = runner.batch();
 * batch.add(message);
 * const outcome = await runner.run(batch);
 * ```
 */
export interface PipelineRunner {
  /** A new, empty batch; room for `capacity` bytes of payload at first (see {@linkcode PayloadBatch}). */
  batch(capacity?: number): PayloadBatch;
  run(batch: PayloadBatch): Promise<BatchOutcome>;
  close(): void;
}

/**
 * A per-message pipeline on the calling thread, behind the same interface.
 *
 * @example
 * ```ts
 * const runner = inlinePipeline(createPipeline(options));
 * ```
 */
export function inlinePipeline(pipeline: (message: Message) => PipelineResult): PipelineRunner {
  const run = batchPipeline(pipeline, {});
  return {
    batch: (capacity) => new PayloadBatch({ capacity }),
    run: (batch) => Promise.resolve(run(batch.messages())),
    close: () => {},
  };
}

/**
 * Bursts of at most this many bytes of payload run on the calling thread:
 * the round trip to the thread (two messages, two thread wake-ups) costs more
 * than the pipeline does on a few payloads. At a steady rate most bursts are
 * one message, so this is the common case; a drain's bursts are far larger.
 *
 * @example
 * ```ts
 * batch.byteLength <= INLINE_MAX_BYTES; // true: this batch runs on the calling thread
 * ```
 */
export const INLINE_MAX_BYTES = 16 * 1024;

/**
 * Options of {@linkcode PipelineThread}.
 *
 * @example
 * ```ts
 * const thread = new PipelineThread(config.pipeline, { inlineMaxBytes: 0 }); // every batch crosses
 * ```
 */
export interface PipelineThreadOptions {
  /** Batches of at most this many payload bytes run on the calling thread (default {@linkcode INLINE_MAX_BYTES}). */
  readonly inlineMaxBytes?: number;
}

interface InFlight {
  readonly resolve: (outcome: BatchOutcome) => void;
  readonly reject: (error: Error) => void;
  /** Messages of the batch on the thread. */
  readonly count: number;
}

/**
 * The pipeline on its own worker thread.
 *
 * @example
 * ```ts
 * const pipeline = new PipelineThread(config.pipeline);
 * const batch = pipeline.batch();
 * for (const message of messages) batch.add(message);
 * const outcome = await pipeline.run(batch);
 * pipeline.close();
 * ```
 */
export class PipelineThread implements PipelineRunner {
  readonly #log = getLogger(["gridrelay", "pipeline"]);
  /** Also the fallback: builds (and so checks) the options on this thread. */
  readonly #inline: (messages: readonly Message[]) => BatchOutcome;
  readonly #inFlight = new Map<number, InFlight>();
  readonly #maxPayloadBytes: number;
  readonly #inlineMaxBytes: number;
  /** Whether the pipeline reads topics and receipt times (for RECORD_META). */
  readonly #sendsMeta: boolean;
  #worker?: Worker;
  #nextId = 0;

  /**
   * Starts the thread; throws a `RangeError` for bad options, as
   * {@linkcode createPipeline} does. `threadOptions` say which batches stay
   * on the calling thread.
   */
  constructor(options: PipelineOptions, threadOptions: PipelineThreadOptions = {}) {
    this.#inline = createBatchPipeline(options);
    this.#maxPayloadBytes = options.maxPayloadBytes;
    this.#inlineMaxBytes = threadOptions.inlineMaxBytes ?? INLINE_MAX_BYTES;
    this.#sendsMeta = options.recordMeta.length > 0;
    const module = new URL("./pipeline_worker.ts", import.meta.url);
    const missing = missingReadAccess(module);
    if (missing !== undefined) {
      this.#log.info(
        "Running the pipeline on the main thread: its own thread needs read access to {folder} (--allow-read={folder})",
        { folder: missing },
      );
      return;
    }
    try {
      const worker = new Worker(module, {
        type: "module",
        name: "gridrelay-pipeline",
      });
      worker.onmessage = (event: MessageEvent<OutcomesMessage>) => this.#settle(event.data);
      worker.onerror = (event) => {
        event.preventDefault();
        this.#fallBack(event.message);
      };
      worker.onmessageerror = () => this.#fallBack("a message from it could not be read");
      worker.postMessage({ kind: "init", options } satisfies InitMessage);
      this.#worker = worker;
    } catch (error) {
      this.#fallBack(String(error));
    }
  }

  /** A new, empty batch; payloads over `MAX_PAYLOAD_BYTES` will not cross to the thread. */
  batch(capacity?: number): PayloadBatch {
    return new PayloadBatch({ maxPayloadBytes: this.#maxPayloadBytes, capacity });
  }

  /**
   * Runs the pipeline over `batch` on the thread, or here when it is small
   * (see {@linkcode INLINE_MAX_BYTES}); the outcomes are the same either way.
   * So a small batch may settle before a larger one sent earlier: a caller
   * that needs their order awaits them in turn, as the intake does. Rejects
   * only if the thread dies while it has them: they must then stay
   * unacknowledged (the broker sends them again), since their payloads went
   * to the thread.
   */
  run(batch: PayloadBatch): Promise<BatchOutcome> {
    const worker = this.#worker;
    if (worker === undefined || batch.length === 0 || batch.byteLength <= this.#inlineMaxBytes) {
      return Promise.resolve(this.#inline(batch.messages()));
    }
    const count = batch.length;
    const { bytes, ends, packed, kept } = batch.take();
    // Payloads over the limit are rejected unread, here: no need to send them over for that.
    if (ends.length === 0) return Promise.resolve(this.#inline(kept));
    const id = this.#nextId++;
    const message: BatchMessage = this.#sendsMeta
      ? {
        kind: "batch",
        id,
        ends,
        bytes,
        topics: packed === undefined ? batch.topics : packed.map((index) => batch.topics[index]),
        receivedAt: packed === undefined
          ? batch.receivedAt
          : packed.map((index) => batch.receivedAt[index]),
      }
      : { kind: "batch", id, ends, bytes };
    const here = kept.length > 0 ? this.#inline(kept) : undefined;
    return new Promise((resolve, reject) => {
      this.#inFlight.set(id, {
        resolve: (outcome) =>
          resolve(
            here === undefined || packed === undefined
              ? outcome
              : withRecordless(outcome, packed, here, count),
          ),
        reject,
        count: ends.length,
      });
      // Transferred, not copied.
      worker.postMessage(message, [bytes, ends.buffer as ArrayBuffer]);
    });
  }

  /** Stops the thread; batches still on it reject (see {@linkcode PipelineThread.run}). */
  close(): void {
    const worker = this.#worker;
    this.#worker = undefined;
    worker?.terminate();
    this.#abandonInFlight("the pipeline thread was stopped");
  }

  #settle(data: OutcomesMessage): void {
    const inFlight = this.#inFlight.get(data.id);
    if (inFlight === undefined) return;
    this.#inFlight.delete(data.id);
    inFlight.resolve(data.outcome);
  }

  #fallBack(reason: string): void {
    this.#log.error(
      "The pipeline thread stopped ({reason}); running the pipeline on the main thread from now on",
      { reason },
    );
    this.close();
  }

  #abandonInFlight(reason: string): void {
    for (const [id, { reject, count }] of [...this.#inFlight].sort(([a], [b]) => a - b)) {
      this.#inFlight.delete(id);
      reject(
        new Error(
          `${reason} with ${count} message(s) on it; they stay unacknowledged and the broker sends them again`,
        ),
      );
    }
  }
}

/**
 * The outcome of a whole batch from the outcome of the messages at indexes
 * `sent` and that of the others, which gave no records (payloads rejected
 * unread): the records stay as they are, only the bookkeeping is merged.
 */
function withRecordless(
  outcome: BatchOutcome,
  sent: readonly number[],
  others: BatchOutcome,
  count: number,
): BatchOutcome {
  const firstRecord = new Uint32Array(count + 1);
  const exceptions: BatchException[] = [];
  let next = 0;
  let other = 0;
  const fromThread = new Map(outcome.exceptions.map((exception) => [exception.index, exception]));
  for (let index = 0; index < count; index++) {
    if (next < sent.length && sent[next] === index) {
      firstRecord[index] = outcome.firstRecord[next];
      const exception = fromThread.get(next);
      if (exception !== undefined) exceptions.push({ ...exception, index });
      next++;
    } else {
      firstRecord[index] = outcome.firstRecord[next];
      const exception = others.exceptions.find((candidate) => candidate.index === other);
      if (exception !== undefined) exceptions.push({ ...exception, index });
      other++;
    }
  }
  firstRecord[count] = outcome.firstRecord[sent.length];
  return { lines: outcome.lines, ends: outcome.ends, firstRecord, exceptions };
}

/**
 * The folder a worker thread loading `module` needs read access to (its own
 * and its imports', all beside it), when this process lacks it; asking first
 * spares a failed start that Deno would report as an uncaught error.
 */
function missingReadAccess(module: URL): string | undefined {
  if (module.protocol !== "file:") return undefined;
  const folder = fileURLToPath(new URL(".", module));
  return Deno.permissions.querySync({ name: "read", path: folder }).state === "granted"
    ? undefined
    : folder;
}
