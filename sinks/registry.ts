/**
 * Turns the `SINKS` list into sinks: the built-ins by name, and custom sinks
 * from modules (a path relative to the working directory, or a URL) whose
 * default export is a sink or a function returning one.
 * @module
 */

import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { createFileSink, DEFAULT_FILE_MAX_BYTES, DEFAULT_FILE_MAX_FILES } from "./file.ts";
import type { Sink } from "./sink.ts";
import { createStdoutSink, type StdoutFormat, type StdoutOutput } from "./stdout.ts";
import { createWebhookSink } from "./webhook.ts";

/**
 * Thrown when a configured sink cannot be set up; the message names the
 * sink (the module path or URL for a custom one) and what is wrong.
 *
 * @example
 * ```ts
 * try {
 *   await createSinks(["./sinks/missing.ts"], {});
 * } catch (error) {
 *   if (error instanceof SinkConfigError) console.error(error.message);
 * }
 * ```
 */
export class SinkConfigError extends Error {
  /** The `SINKS` entry at fault. */
  readonly sink: string;

  constructor(sink: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SinkConfigError";
    this.sink = sink;
  }
}

/**
 * What the built-in sinks need; every field has a default.
 *
 * @example
 * ```ts
 * const settings: SinkSettings = { stdoutFormat: "jsonl", filePath: "./data/readings.jsonl" };
 * ```
 */
export interface SinkSettings {
  /** `STDOUT_FORMAT` (default `auto`). */
  readonly stdoutFormat?: StdoutFormat;
  /** Where the stdout sink writes (default `Deno.stdout`); for tests. */
  readonly stdoutOutput?: StdoutOutput;
  /** `FILE_PATH` (default `./data/readings.jsonl`). */
  readonly filePath?: string;
  /** Size at which the file sink rotates (default 100 MiB). */
  readonly fileMaxBytes?: number;
  /** Rotated files the file sink keeps (default 5). */
  readonly fileMaxFiles?: number;
  /** `WEBHOOK_URL`. */
  readonly webhookUrl?: string;
  /** `WEBHOOK_SECRET`. */
  readonly webhookSecret?: string;
  /** `WEBHOOK_HEADERS`: extra request headers; their values are secrets. */
  readonly webhookHeaders?: Readonly<Record<string, string>>;
  /** `WEBHOOK_BATCH_SIZE` (default 1). */
  readonly webhookBatchSize?: number;
  /** `WEBHOOK_TIMEOUT_MS` (default 10000). */
  readonly webhookTimeoutMs?: number;
  /** Where relative module paths start (default the working directory). */
  readonly cwd?: string;
}

const BUILTINS = ["stdout", "file", "webhook"];

/**
 * Creates the sinks `names` lists, in order. On any failure the sinks
 * already created are closed and a {@linkcode SinkConfigError} is thrown.
 *
 * @example
 * ```ts
 * const sinks = await createSinks(["stdout", "./sinks/my_sink.ts"], { stdoutFormat: "jsonl" });
 * ```
 */
export async function createSinks(
  names: readonly string[],
  settings: SinkSettings = {},
): Promise<Sink[]> {
  const sinks: Sink[] = [];
  const sources = new Map<string, string>();
  try {
    for (const entry of names) {
      const sink = await createSink(entry, settings);
      sinks.push(sink);
      const clash = sources.get(sink.name);
      if (clash !== undefined) {
        throw new SinkConfigError(
          entry,
          `Sinks ${clash} and ${entry} are both named "${sink.name}"; sink names must be unique because they key spool cursors and metrics. Rename one of them.`,
        );
      }
      sources.set(sink.name, entry);
    }
    return sinks;
  } catch (error) {
    await Promise.allSettled(sinks.map((sink) => sink.close?.()));
    throw error;
  }
}

async function createSink(entry: string, settings: SinkSettings): Promise<Sink> {
  switch (entry) {
    case "stdout":
      return createStdoutSink({
        format: settings.stdoutFormat ?? "auto",
        output: settings.stdoutOutput,
      });
    case "file":
      try {
        return await createFileSink({
          path: settings.filePath ?? "./data/readings.jsonl",
          maxBytes: settings.fileMaxBytes ?? DEFAULT_FILE_MAX_BYTES,
          maxFiles: settings.fileMaxFiles ?? DEFAULT_FILE_MAX_FILES,
        });
      } catch (error) {
        throw new SinkConfigError(entry, `The file sink cannot start: ${message(error)}.`, {
          cause: error,
        });
      }
    case "webhook":
      if (settings.webhookUrl === undefined) {
        throw new SinkConfigError(
          entry,
          "WEBHOOK_URL is missing: SINKS includes webhook; set it to an http:// or https:// URL.",
        );
      }
      try {
        return await createWebhookSink({
          url: settings.webhookUrl,
          secret: settings.webhookSecret,
          headers: settings.webhookHeaders,
          batchSize: settings.webhookBatchSize,
          timeoutMs: settings.webhookTimeoutMs,
        });
      } catch (error) {
        throw new SinkConfigError(entry, `The webhook sink cannot start: ${message(error)}.`, {
          cause: error,
        });
      }
  }
  return await loadSinkModule(entry, settings.cwd ?? Deno.cwd());
}

async function loadSinkModule(entry: string, cwd: string): Promise<Sink> {
  const url = moduleUrl(entry, cwd);
  if (url === undefined) {
    throw new SinkConfigError(
      entry,
      `Unknown sink "${entry}": expected ${
        BUILTINS.join(", ")
      }, or the path (./my_sink.ts) or URL of a sink module.`,
    );
  }
  const where = url === entry ? entry : `${entry} (${url})`;
  let module: { default?: unknown };
  try {
    module = await import(url);
  } catch (error) {
    const reason = withoutColours(message(error));
    // Only when the module itself is out of reach is the path the thing to check; a syntax
    // error, a missing import of its own or a throw at load time are for its author to fix.
    const unreachable = reason.startsWith(`Module not found "${url}"`) ||
      error instanceof Deno.errors.NotCapable || /Requires \w+ access/.test(reason);
    const advice = !unreachable
      ? "Fix the module (or what it imports) so that it loads."
      : url.startsWith("file:")
      ? `Check the path in SINKS (relative to ${cwd}) and that the worker may read it (--allow-read).`
      : "Check the URL in SINKS and that the worker may import it (--allow-import).";
    throw new SinkConfigError(entry, `Cannot load the sink module ${where}: ${reason}. ${advice}`, {
      cause: error,
    });
  }
  if (!("default" in module) || module.default === undefined) {
    throw new SinkConfigError(
      entry,
      `The sink module ${where} has no default export; export default a sink ({ name, write }) or a function that returns one.`,
    );
  }
  let sink: unknown = module.default;
  if (typeof sink === "function") {
    try {
      sink = await sink();
    } catch (error) {
      throw new SinkConfigError(
        entry,
        `The sink module ${where} failed to create its sink: ${message(error)}.`,
        { cause: error },
      );
    }
  }
  return checkSink(sink, entry, where);
}

function checkSink(candidate: unknown, entry: string, where: string): Sink {
  const expected =
    "export default { name: string, write(records, signal): Promise<void>, close?(): Promise<void> } or a function returning one";
  if (typeof candidate !== "object" || candidate === null) {
    throw new SinkConfigError(
      entry,
      `The sink module ${where} gave ${describe(candidate)} instead of a sink; ${expected}.`,
    );
  }
  const sink = candidate as Partial<Sink>;
  if (typeof sink.write !== "function") {
    throw new SinkConfigError(
      entry,
      `The sink from ${where} has no write function; ${expected}.`,
    );
  }
  if (typeof sink.name !== "string" || sink.name.trim() === "") {
    throw new SinkConfigError(
      entry,
      `The sink from ${where} has no name (a non-empty string naming it in logs, metrics and its spool cursor); ${expected}.`,
    );
  }
  if (
    sink.batchSize !== undefined &&
    (typeof sink.batchSize !== "number" || !Number.isSafeInteger(sink.batchSize) ||
      sink.batchSize < 1)
  ) {
    throw new SinkConfigError(
      entry,
      `The sink from ${where} has a batchSize that is not a whole number from 1; leave it out or set it to the most records one write takes.`,
    );
  }
  for (const method of ["close", "writeTexts", "writeLines"] as const) {
    if (sink[method] !== undefined && typeof sink[method] !== "function") {
      throw new SinkConfigError(
        entry,
        `The sink from ${where} has a ${method} that is not a function; ${expected}.`,
      );
    }
  }
  return sink as Sink;
}

// A URL as given, a path resolved against `cwd`, or undefined for a bare word.
function moduleUrl(entry: string, cwd: string): string | undefined {
  // Two letters or more, so a Windows drive letter (C:\x.ts) reads as a path.
  if (/^[a-z][a-z0-9+.-]+:/i.test(entry)) return entry;
  const looksLikePath = /^\.{1,2}[\\/]/.test(entry) || isAbsolute(entry) ||
    /\.[mc]?[jt]sx?$/.test(entry);
  return looksLikePath ? pathToFileURL(resolve(cwd, entry)).href : undefined;
}

function describe(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`;
}

// Deno colours the locations in some import errors; a log line wants plain text.
function withoutColours(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

// An error's message without its final period, to be embedded in a sentence.
function message(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).replace(/\.$/, "");
}
