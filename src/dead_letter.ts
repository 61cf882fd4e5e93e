/**
 * The dead-letter line format (SPEC §4): one JSON object per rejected payload,
 * rejected reading or record a sink refused for good. Formatting only; writing
 * the JSON Lines file is the caller's job.
 * @module
 */

export { formatTimestamp } from "./stages/time.ts";
import { formatTimestamp } from "./stages/time.ts";

/**
 * What went wrong with what, and when.
 *
 * @example
 * ```ts
 * const deadLetter: DeadLetter = {
 *   receivedAt: 1625576100123,
 *   topic: "a/b827eb2bb2a9/u/data",
 *   reason: 'payload is not valid JSON: unexpected "}" at byte 17; expected a key',
 *   code: "invalid_json",
 *   payload: new TextEncoder().encode('{"t":1625576100,}'),
 * };
 * ```
 */
export interface DeadLetter {
  /** When the worker took the message, in milliseconds since the Unix epoch. */
  readonly receivedAt: number;
  readonly topic: string;
  /** Human-readable reason (a rejection's message, or a sink's refusal). */
  readonly reason: string;
  /** A rejection's reason code, or e.g. `"sink_refused"`. */
  readonly code?: string;
  /** The original payload bytes, a reading's JSON text, or a refused record's text. */
  readonly payload: Uint8Array | string;
  /** The sink's name, for a record a sink refused. */
  readonly sink?: string;
  /** For a reading: its index in `r`. */
  readonly index?: number;
}

// Keeps a byte order mark as U+FEFF: the dead letter holds the payload exactly.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * One JSON Lines line, without the trailing newline, with keys in this order:
 * `received_at`, `topic`, `reason`, `code`, `sink`, `index`, `payload`, then
 * `payload_encoding: "base64"` when the payload bytes are not valid UTF-8
 * (and so are stored base64-encoded).
 *
 * @example
 * ```ts
 * formatDeadLetter({
 *   receivedAt: 1625576100123,
 *   topic: "a/b827eb2bb2a9/u/data",
 *   reason: "payload is not valid UTF-8",
 *   code: "invalid_utf8",
 *   payload: new Uint8Array([0xff]),
 * });
 * // '{"received_at":"2021-07-06T12:55:00.123+00:00","topic":"a/b827eb2bb2a9/u/data",
 * //   "reason":"payload is not valid UTF-8","code":"invalid_utf8","payload":"/w==","payload_encoding":"base64"}'
 * ```
 */
export function formatDeadLetter(deadLetter: DeadLetter): string {
  const line: Record<string, string | number> = {
    received_at: formatTimestamp(deadLetter.receivedAt),
    topic: deadLetter.topic,
    reason: deadLetter.reason,
  };
  if (deadLetter.code !== undefined) line.code = deadLetter.code;
  if (deadLetter.sink !== undefined) line.sink = deadLetter.sink;
  if (deadLetter.index !== undefined) line.index = deadLetter.index;
  const payload = deadLetter.payload;
  if (typeof payload === "string") {
    line.payload = payload;
    return JSON.stringify(line);
  }
  try {
    line.payload = utf8.decode(payload);
  } catch (error) {
    // TextDecoder signals invalid UTF-8 only by throwing a TypeError.
    if (!(error instanceof TypeError)) throw error;
    line.payload = toBase64(payload);
    line.payload_encoding = "base64";
  }
  return JSON.stringify(line);
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  // Chunks keep String.fromCharCode's argument count far below engine limits.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
