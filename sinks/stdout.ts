/**
 * The stdout sink: records on standard output, as JSON Lines or indented
 * JSON. Stdout carries records only; logs go to stderr.
 * @module
 */

import { type OutputRecord, recordText } from "../src/record.ts";
import type { Sink } from "./sink.ts";

/**
 * How records are printed: `jsonl` one per line, `pretty` indented, `auto`
 * pretty when the output is a terminal and JSON Lines otherwise.
 *
 * @example
 * ```ts
 * const format: StdoutFormat = "jsonl";
 * ```
 */
export type StdoutFormat = "jsonl" | "pretty" | "auto";

/**
 * Where the stdout sink writes: `Deno.stdout`, or anything shaped like it.
 *
 * @example
 * ```ts
 * const chunks: Uint8Array[] = [];
 * const output: StdoutOutput = { write: (bytes) => (chunks.push(bytes), Promise.resolve(bytes.length)) };
 * ```
 */
export interface StdoutOutput {
  /** Writes some of `bytes`; resolves with how many were written. */
  write(bytes: Uint8Array): Promise<number>;
  /** Whether the output is a terminal; consulted by `auto`. */
  isTerminal?(): boolean;
}

/**
 * Options of {@linkcode createStdoutSink}.
 *
 * @example
 * ```ts
 * const options: StdoutSinkOptions = { format: "pretty" };
 * ```
 */
export interface StdoutSinkOptions {
  /** `STDOUT_FORMAT`. */
  readonly format: StdoutFormat;
  /** Where to write (default `Deno.stdout`). */
  readonly output?: StdoutOutput;
}

const encoder = new TextEncoder();

/**
 * Creates the stdout sink. A batch is written as one buffer, and `write`
 * resolves once the output took all of it.
 *
 * @example
 * ```ts
 * const sink = createStdoutSink({ format: "jsonl" });
 * await sink.write([{ time: "2021-07-06T12:55:00+00:00", data: {} }], AbortSignal.timeout(5000));
 * ```
 */
export function createStdoutSink(options: StdoutSinkOptions): Sink {
  const output = options.output ?? Deno.stdout;
  const pretty = options.format === "pretty" ||
    (options.format === "auto" && (output.isTerminal?.() ?? false));
  // jsonl reuses the spooled text (exact digits, no re-serialisation); JSON.stringify keeps
  // rawJSON digits too when indenting.
  const format = pretty
    ? (record: OutputRecord) => JSON.stringify(record, null, 2) + "\n"
    : (record: OutputRecord) => recordText(record) + "\n";
  const writeAll = async (bytes: Uint8Array) => {
    let written = 0;
    while (written < bytes.length) written += await output.write(bytes.subarray(written));
  };
  const sink: Sink = {
    name: "stdout",
    async write(records: OutputRecord[], signal: AbortSignal): Promise<void> {
      signal.throwIfAborted();
      await writeAll(encoder.encode(records.map(format).join("")));
    },
  };
  if (pretty) return sink;
  return {
    ...sink,
    // What the sink runner calls for jsonl: the spooled lines as they are, nothing to parse.
    async writeLines(lines: Uint8Array, signal: AbortSignal): Promise<void> {
      signal.throwIfAborted();
      await writeAll(lines);
    },
    async writeTexts(texts: string[], signal: AbortSignal): Promise<void> {
      signal.throwIfAborted();
      if (texts.length > 0) await writeAll(encoder.encode(texts.join("\n") + "\n"));
    },
  };
}
