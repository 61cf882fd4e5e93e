/**
 * The unit that flows through gridrelay: a message as the broker delivered it,
 * and the record every sink receives. Both are plain data; nothing here does I/O.
 * @module
 */

import { rawJSON } from "./raw_json.ts";

/**
 * One MQTT message as the connector took it off the broker.
 *
 * @example
 * ```ts
 * const message: Message = {
 *   topic: "a/b827eb2bb2a9/u/data",
 *   payload: new TextEncoder().encode('{"t":1625576100,"r":[]}'),
 *   receivedAt: Date.now(),
 * };
 * ```
 */
export interface Message {
  /** The topic the message was published on. */
  readonly topic: string;
  /** The payload bytes, exactly as published. */
  readonly payload: Uint8Array;
  /** When the worker took the message, in milliseconds since the Unix epoch. */
  readonly receivedAt: number;
}

/**
 * A record as every sink receives it: one JSON object. Numbers that a
 * JavaScript number cannot hold digit for digit (a 64-bit energy counter, say)
 * are `JSON.rawJSON` values, so `JSON.stringify(record)` writes them exactly
 * as the datalogger sent them.
 *
 * @example
 * ```ts
 * const record: OutputRecord = { time: "2021-07-06T12:55:00+00:00", data: { "dse-1": { P: 15983 } } };
 * ```
 */
export type OutputRecord = { readonly [key: string]: unknown };

const recordTexts = new WeakMap<object, string>();

/**
 * Parses one spooled record's JSON text into an {@linkcode OutputRecord},
 * keeping every number digit for digit: a number whose source text a plain
 * `JSON.parse` would change comes back as a `JSON.rawJSON` value. The text is
 * remembered, so {@linkcode recordText} gives it back without serialising.
 *
 * @example
 * ```ts
 * const record = parseRecord('{"data":{"m":{"E":18446744073709551615}}}');
 * JSON.stringify(record); // '{"data":{"m":{"E":18446744073709551615}}}'
 * ```
 */
export function parseRecord(text: string): OutputRecord {
  // A reviver with source access costs several times a plain parse; most records need none.
  const record =
    (numbersRoundTrip(text) ? JSON.parse(text) : JSON.parse(text, keepNumberText)) as OutputRecord;
  recordTexts.set(record, text);
  return record;
}

/**
 * The JSON text of a record, on one line: the spooled text when the record
 * came from {@linkcode parseRecord}, otherwise `JSON.stringify(record)`.
 *
 * @example
 * ```ts
 * recordText({ time: "2021-07-06T12:55:00+00:00", data: {} }); // '{"time":"2021-07-06T12:55:00+00:00","data":{}}'
 * ```
 */
export function recordText(record: OutputRecord): string {
  return recordTexts.get(record) ?? JSON.stringify(record);
}

/**
 * Whether every number in `text` (JSON that `JSON.parse` is about to check)
 * comes back from a plain parse as the same text, e.g. `15983` or
 * `0.5670797228813171`, but not `1.50` or `18446744073709551615`.
 */
function numbersRoundTrip(text: string): boolean {
  const length = text.length;
  let i = 0;
  while (i < length) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      // Jump to the closing quote: one not escaped by an odd run of backslashes.
      let end = text.indexOf('"', i + 1);
      while (end > 0 && escapedAt(text, end)) end = text.indexOf('"', end + 1);
      if (end < 0) return true; // not JSON: JSON.parse will say so
      i = end + 1;
    } else if (c === MINUS || (c >= DIGIT_0 && c <= DIGIT_9)) {
      const start = i;
      // Up to 15 digits without a leading zero, sign, fraction or exponent always round-trip.
      let plain = c !== MINUS && (c !== DIGIT_0 || !isNumberChar(text.charCodeAt(i + 1)));
      for (i++; i < length; i++) {
        const d = text.charCodeAt(i);
        if (d >= DIGIT_0 && d <= DIGIT_9) continue;
        if (!isNumberChar(d)) break;
        plain = false;
      }
      if (plain && i - start <= 15) continue;
      const token = text.slice(start, i);
      if (String(Number(token)) !== token) return false;
    } else {
      i++;
    }
  }
  return true;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const MINUS = 0x2d;
const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;

function isNumberChar(c: number): boolean {
  return (c >= DIGIT_0 && c <= DIGIT_9) || c === 0x2e || c === 0x65 || c === 0x45 || c === 0x2b ||
    c === MINUS;
}

function escapedAt(text: string, quote: number): boolean {
  let backslashes = 0;
  while (text.charCodeAt(quote - 1 - backslashes) === BACKSLASH) backslashes++;
  return backslashes % 2 === 1;
}

function keepNumberText(_key: string, value: unknown, context?: { source?: string }): unknown {
  if (typeof value !== "number" || context?.source === undefined) return value;
  return String(value) === context.source ? value : rawJSON(context.source);
}
