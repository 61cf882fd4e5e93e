/**
 * Runs the pure pipeline on a worker thread (src/pipeline_worker.ts), so the
 * JSON work of a burst does not hold up the thread that talks MQTT, commits
 * the spool and feeds the sinks. Batches go over in order and their outcomes
 * come back in order. If the thread cannot start or dies, the pipeline runs
 * on the calling thread instead, and nothing is lost.
 * @module
 */

import { fileURLToPath } from "node:url";
import { getLogger } from "@logtape/logtape";
import { createPipeline, type PipelineOptions, type PipelineResult } from "./pipeline.ts";
import {
  type BatchMessage,
  batchMessages,
  decodeOutcome,
  type InitMessage,
  type OutcomesMessage,
  type PipelineOutcome,
  runGuarded,
} from "./pipeline_worker.ts";
import type { Message } from "./record.ts";

export type { PipelineOutcome } from "./pipeline_worker.ts";

/**
 * Runs the pipeline over batches of messages; the outcomes come back in the
 * order of the messages. `run` never rejects.
 *
 * @example
 * ```ts
 * const runner: PipelineRunner = inlinePipeline(createPipeline(options));
 * const [outcome] = await runner.run([message]);
 * ```
 */
export interface PipelineRunner {
  run(messages: readonly Message[]): Promise<readonly PipelineOutcome[]>;
  close(): void;
}

/**
 * The pipeline on the calling thread, behind the same interface.
 *
 * @example
 * ```ts
 * const runner = inlinePipeline(createPipeline(options));
 * ```
 */
export function inlinePipeline(pipeline: (message: Message) => PipelineResult): PipelineRunner {
  return {
    run: (messages) => Promise.resolve(messages.map((message) => runGuarded(pipeline, message))),
    close: () => {},
  };
}

interface InFlight {
  /** The batch as posted, kept to run it here should the thread die. */
  readonly batch: BatchMessage;
  readonly resolve: (outcomes: readonly PipelineOutcome[]) => void;
}

/**
 * The pipeline on its own worker thread.
 *
 * @example
 * ```ts
 * const pipeline = new PipelineThread(config.pipeline);
 * const outcomes = await pipeline.run(messages);
 * pipeline.close();
 * ```
 */
export class PipelineThread implements PipelineRunner {
  readonly #log = getLogger(["gridrelay", "pipeline"]);
  /** Also the fallback: builds (and so checks) the options on this thread. */
  readonly #inline: (message: Message) => PipelineResult;
  readonly #inFlight = new Map<number, InFlight>();
  #worker?: Worker;
  #nextId = 0;

  /** Starts the thread; throws a `RangeError` for bad options, as {@linkcode createPipeline} does. */
  constructor(options: PipelineOptions) {
    this.#inline = createPipeline(options);
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

  /** Runs the pipeline over `messages` on the thread; never rejects. */
  run(messages: readonly Message[]): Promise<readonly PipelineOutcome[]> {
    const worker = this.#worker;
    if (worker === undefined || messages.length === 0) {
      return Promise.resolve(messages.map((message) => runGuarded(this.#inline, message)));
    }
    let size = 0;
    for (const message of messages) size += message.payload.byteLength;
    const bytes = new Uint8Array(size);
    const ends = new Uint32Array(messages.length);
    const topics: string[] = [];
    const receivedAt: number[] = [];
    let end = 0;
    for (let i = 0; i < messages.length; i++) {
      const message = messages[i];
      bytes.set(message.payload, end);
      end += message.payload.byteLength;
      ends[i] = end;
      topics.push(message.topic);
      receivedAt.push(message.receivedAt);
    }
    const id = this.#nextId++;
    const batch: BatchMessage = {
      kind: "batch",
      id,
      topics,
      receivedAt,
      ends,
      bytes: bytes.buffer,
    };
    return new Promise((resolve) => {
      this.#inFlight.set(id, { batch, resolve });
      // Copied, not transferred: the copy here is the fallback, and the messages, with the
      // socket buffers their payloads point into, can be collected at once.
      worker.postMessage(batch);
    });
  }

  /** Stops the thread; batches still on it are run on this thread. */
  close(): void {
    const worker = this.#worker;
    this.#worker = undefined;
    worker?.terminate();
    this.#runInFlightHere();
  }

  #settle(data: OutcomesMessage): void {
    const inFlight = this.#inFlight.get(data.id);
    if (inFlight === undefined) return;
    this.#inFlight.delete(data.id);
    inFlight.resolve(data.outcomes.map(decodeOutcome));
  }

  #fallBack(reason: string): void {
    this.#log.warn(
      "The pipeline thread stopped ({reason}); running the pipeline on the main thread from now on",
      { reason },
    );
    this.close();
  }

  // In id order, so outcomes still come back in the order of the messages.
  #runInFlightHere(): void {
    const ids = [...this.#inFlight.keys()].sort((a, b) => a - b);
    for (const id of ids) {
      const { batch, resolve } = this.#inFlight.get(id)!;
      this.#inFlight.delete(id);
      resolve(batchMessages(batch).map((message) => runGuarded(this.#inline, message)));
    }
  }
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
