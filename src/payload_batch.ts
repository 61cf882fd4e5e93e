/**
 * Messages packed for the pipeline as they arrive. Each payload is copied at
 * once into one buffer per batch, so the socket buffer it came in dies young
 * instead of waiting, with every message in it, for the batch's turn; the
 * buffer then crosses to the pipeline thread whole, transferred, not copied.
 * Payloads over the size limit stay apart, as they came: they are rejected
 * unread, and not worth a copy.
 * @module
 */

import type { Message } from "./record.ts";

/** Smallest and largest starting room for the payloads; the buffer grows past it as needed. */
const MIN_CAPACITY = 16 * 1024;
const MAX_CAPACITY = 8 * 2 ** 20;

/** Options of {@linkcode PayloadBatch}. */
export interface PayloadBatchOptions {
  /** Payloads over this many bytes are kept apart (see {@linkcode PackedPayloads.kept}). */
  readonly maxPayloadBytes?: number;
  /** Bytes of payload to make room for at first, e.g. the size of the last batch. */
  readonly capacity?: number;
}

/**
 * What {@linkcode PayloadBatch.take} hands over.
 *
 * @example
 * ```ts
 * const { bytes, ends } = batch.take(); // payload i is bytes[ends[i - 1] ?? 0, ends[i])
 * ```
 */
export interface PackedPayloads {
  /** The packed payloads back to back, from offset 0; the buffer may be larger. */
  readonly bytes: ArrayBuffer;
  /** Per packed payload, the offset where it ends; each starts where the previous ended. */
  readonly ends: Uint32Array;
  /** The batch indexes of the packed payloads, when some were kept apart (else: all, in order). */
  readonly packed?: readonly number[];
  /** The messages kept apart, in batch order. */
  readonly kept: readonly Message[];
}

/**
 * A batch of messages: payload bytes packed in one buffer, and each
 * message's topic and receipt time.
 *
 * @example
 * ```ts
 * const batch = new PayloadBatch({ maxPayloadBytes: 262144 });
 * batch.add(message); // the payload is copied: the caller may let it go
 * const messages = batch.messages(); // views into the batch's buffer
 * ```
 */
export class PayloadBatch {
  /** Per message, its topic and when it was taken. */
  readonly topics: string[] = [];
  readonly receivedAt: number[] = [];
  readonly #maxPayloadBytes: number;
  #buffer: ArrayBuffer;
  #bytes: Uint8Array;
  #used = 0;
  /** Per packed payload, where it ends in the buffer. */
  #ends: number[] = [];
  /** Set once a payload is kept apart: the batch indexes of those packed. */
  #packed?: number[];
  #kept?: Map<number, Message>;

  constructor(options: PayloadBatchOptions = {}) {
    this.#maxPayloadBytes = options.maxPayloadBytes ?? Infinity;
    const capacity = Math.min(MAX_CAPACITY, Math.max(MIN_CAPACITY, options.capacity ?? 0));
    this.#buffer = new ArrayBuffer(capacity);
    this.#bytes = new Uint8Array(this.#buffer);
  }

  /**
   * A batch of `messages`, in order.
   *
   * @example
   * ```ts
   * const batch = PayloadBatch.of([message], { maxPayloadBytes: 262144 });
   * ```
   */
  static of(messages: Iterable<Message>, options?: PayloadBatchOptions): PayloadBatch {
    const batch = new PayloadBatch(options);
    for (const message of messages) batch.add(message);
    return batch;
  }

  /** How many messages. */
  get length(): number {
    return this.topics.length;
  }

  /** How many bytes of payload are packed (those kept apart not counted). */
  get byteLength(): number {
    return this.#used;
  }

  /** Adds `message`, its payload copied (or, over the limit, kept as it is). */
  add(message: Message): void {
    const index = this.topics.length;
    this.topics.push(message.topic);
    this.receivedAt.push(message.receivedAt);
    const payload = message.payload;
    if (payload.byteLength > this.#maxPayloadBytes) {
      if (this.#packed === undefined) this.#packed = this.#ends.map((_, at) => at);
      (this.#kept ??= new Map()).set(index, message);
      return;
    }
    const end = this.#used + payload.byteLength;
    if (end > this.#buffer.byteLength) {
      // Moved, not copied twice: the old buffer is detached and its memory freed now.
      this.#buffer = this.#buffer.transfer(Math.max(end, this.#buffer.byteLength * 2));
      this.#bytes = new Uint8Array(this.#buffer);
    }
    this.#bytes.set(payload, this.#used);
    this.#used = end;
    this.#ends.push(end);
    this.#packed?.push(index);
  }

  /**
   * The messages, in order: packed payloads as views into the batch's buffer.
   * Not after {@linkcode PayloadBatch.take}.
   */
  messages(): Message[] {
    const messages: Message[] = [];
    let packed = 0;
    for (let index = 0; index < this.topics.length; index++) {
      const kept = this.#kept?.get(index);
      if (kept !== undefined) {
        messages.push(kept);
        continue;
      }
      const start = packed === 0 ? 0 : this.#ends[packed - 1];
      messages.push({
        topic: this.topics[index],
        payload: this.#bytes.subarray(start, this.#ends[packed]),
        receivedAt: this.receivedAt[index],
      });
      packed++;
    }
    return messages;
  }

  /**
   * Hands the payloads over, the buffer to be transferred; the batch keeps
   * only topics and receipt times.
   */
  take(): PackedPayloads {
    const taken: PackedPayloads = {
      bytes: this.#buffer,
      ends: Uint32Array.from(this.#ends),
      ...(this.#packed === undefined ? {} : { packed: this.#packed }),
      kept: this.#kept === undefined ? [] : [...this.#kept.values()],
    };
    this.#buffer = new ArrayBuffer(0);
    this.#bytes = new Uint8Array(0);
    this.#used = 0;
    this.#ends = [];
    this.#packed = undefined;
    this.#kept = undefined;
    return taken;
  }
}
