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
  const record = JSON.parse(text, keepNumberText) as OutputRecord;
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

function keepNumberText(_key: string, value: unknown, context?: { source?: string }): unknown {
  if (typeof value !== "number" || context?.source === undefined) return value;
  return String(value) === context.source ? value : rawJSON(context.source);
}
