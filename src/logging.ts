/**
 * Logging set-up: every log line goes to stderr (stdout carries records only),
 * as JSON Lines or readable text, with every configured secret masked in the
 * rendered line as a last line of defence. With Deno's OpenTelemetry export on,
 * lines also go through `console`, which is what Deno exports. Also a small
 * rate limiter for warnings that repeat with every message.
 * @module
 */

import {
  configureSync,
  getAnsiColorFormatter,
  getTextFormatter,
  type LogRecord,
  resetSync,
  type Sink,
  type TextFormatter,
} from "@logtape/logtape";
import type { LogFormat, LogLevel } from "./config.ts";

/** Options of {@linkcode setupLogging}. */
export interface LoggingOptions {
  readonly level: LogLevel;
  readonly format: LogFormat;
  /** Values that must never appear in a log line (passwords, keys, secrets). */
  readonly secrets?: readonly (string | undefined)[];
  /** Where lines go; default stderr. */
  readonly write?: (line: string) => void;
  /** Whether stderr is a terminal, for `auto`; default asks Deno. */
  readonly isTerminal?: boolean;
  /**
   * Set when Deno's OpenTelemetry export is on: how it treats `console` (see
   * {@linkcode telemetryConsole}). Default: off, lines are written to stderr only.
   */
  readonly telemetry?: TelemetryConsole;
  /** The console lines go through when `telemetry` is set; default the global one. */
  readonly console?: Pick<Console, "debug" | "info" | "warn" | "error">;
}

/**
 * How Deno's OpenTelemetry export treats `console` (`OTEL_DENO_CONSOLE`):
 * `capture` prints and exports, `replace` only exports.
 */
export type TelemetryConsole = "capture" | "replace";

/**
 * Whether Deno exports `console` output over OTLP, and how: `undefined` unless
 * `OTEL_DENO=true` and `OTEL_DENO_CONSOLE` is not `ignore`.
 *
 * @example
 * ```ts
 * telemetryConsole({ OTEL_DENO: "true" }); // "capture"
 * telemetryConsole({ OTEL_DENO: "true", OTEL_DENO_CONSOLE: "replace" }); // "replace"
 * telemetryConsole({}); // undefined
 * ```
 */
export function telemetryConsole(
  env: { readonly OTEL_DENO?: string; readonly OTEL_DENO_CONSOLE?: string },
): TelemetryConsole | undefined {
  // Deno turns the export on for exactly "true".
  if (env.OTEL_DENO !== "true") return undefined;
  if (env.OTEL_DENO_CONSOLE === "ignore") return undefined;
  return env.OTEL_DENO_CONSOLE === "replace" ? "replace" : "capture";
}

/**
 * {@linkcode telemetryConsole} of this process's environment. A variable the
 * worker may not read counts as unset.
 *
 * @example
 * ```ts
 * setupLogging({ level: "info", format: "json", telemetry: telemetryFromEnvironment() });
 * ```
 */
export function telemetryFromEnvironment(): TelemetryConsole | undefined {
  const read = (name: string) => {
    try {
      return Deno.env.get(name);
    } catch (error) {
      if (error instanceof Deno.errors.NotCapable) return undefined;
      throw error;
    }
  };
  return telemetryConsole({
    OTEL_DENO: read("OTEL_DENO"),
    OTEL_DENO_CONSOLE: read("OTEL_DENO_CONSOLE"),
  });
}

/**
 * Configures `@logtape/logtape` for the `gridrelay` category. Call once at
 * start-up; {@linkcode resetLogging} undoes it.
 *
 * @example
 * ```ts
 * setupLogging({ level: "info", format: "json", secrets: ["hunter2"] });
 * ```
 */
export function setupLogging(options: LoggingOptions): void {
  const terminal = options.isTerminal ?? Deno.stderr.isTerminal();
  const json = options.format === "json" || (options.format === "auto" && !terminal);
  // Exported lines keep no colour codes.
  const formatter = json
    ? jsonFormatter()
    : unicodeLineBreaksEscaped(textFormatter(terminal && !options.telemetry));
  const emit = emitter(options.write ?? writeStderr, options);
  const mask = masker(options.secrets ?? []);
  const sink: Sink = (record: LogRecord) => emit(record.level, mask(formatter(record)));
  configureSync({
    reset: true,
    sinks: { stderr: sink },
    loggers: [
      { category: ["gridrelay"], lowestLevel: options.level, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

/** Removes the configuration made by {@linkcode setupLogging}. */
export function resetLogging(): void {
  resetSync();
}

/** Field names a log pipeline (Loki, CloudWatch) can rely on; properties follow them. */
function jsonFormatter(): TextFormatter {
  return (record) => {
    const entry: Record<string, unknown> = {
      timestamp: new Date(record.timestamp).toISOString(),
      level: record.level,
      category: record.category.join("."),
      message: renderMessage(record.message),
    };
    for (const [key, value] of Object.entries(record.properties)) {
      if (!(key in entry)) entry[key] = value;
    }
    return JSON.stringify(entry, jsonValue) + "\n";
  };
}

function renderMessage(parts: readonly unknown[]): string {
  let message = "";
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    message += i % 2 === 0 ? String(part) : describe(part);
  }
  return message;
}

function describe(value: unknown): string {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.message;
  if (typeof value === "object" && value !== null) return JSON.stringify(value, jsonValue);
  return String(value);
}

function jsonValue(_key: string, value: unknown): unknown {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  if (typeof value === "bigint") return value.toString();
  return value;
}

/**
 * The text formatter escapes control characters in values, so a topic with a
 * newline cannot forge a log line; these Unicode line breaks it leaves as they
 * are, and many log viewers break lines at them too.
 */
function unicodeLineBreaksEscaped(format: TextFormatter): TextFormatter {
  return (record) =>
    format(record).replace(
      /[\u0085\u2028\u2029]/g,
      (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
    );
}

function textFormatter(colors: boolean): TextFormatter {
  const options = {
    timestamp: "date-time-timezone" as const,
    category: ".",
    value: "bare" as const,
  };
  return colors ? getAnsiColorFormatter(options) : getTextFormatter(options);
}

/**
 * Deno exports what goes through `console`, not what is written to stderr
 * directly. Under `replace` the line is written as usual and handed to the
 * console method of its level, which only exports it. Under `capture` the
 * console also prints, and Deno prints `console.info` and `console.debug` on
 * stdout, which carries records only: so every line goes through
 * `console.warn` (or `console.error` for errors), and is exported with
 * severity WARN; its own level stays in the line.
 */
function emitter(
  write: (line: string) => void,
  options: LoggingOptions,
): (level: LogLevelName, line: string) => void {
  const telemetry = options.telemetry;
  if (telemetry === undefined) return (_level, line) => write(line);
  const output = options.console ?? console;
  const severe = (level: LogLevelName) => level === "error" || level === "fatal";
  if (telemetry === "capture") {
    return (level, line) => {
      if (severe(level)) output.error(withoutNewline(line));
      else output.warn(withoutNewline(line));
    };
  }
  return (level, line) => {
    write(line);
    const text = withoutNewline(line);
    if (severe(level)) output.error(text);
    else if (level === "warning") output.warn(text);
    else if (level === "info") output.info(text);
    else output.debug(text);
  };
}

type LogLevelName = LogRecord["level"];

function withoutNewline(line: string): string {
  return line.endsWith("\n") ? line.slice(0, -1) : line;
}

const encoder = new TextEncoder();

function writeStderr(line: string): void {
  // Synchronous, so the last lines before a crash or exit are not lost.
  const bytes = encoder.encode(line.endsWith("\n") ? line : line + "\n");
  let written = 0;
  while (written < bytes.length) written += Deno.stderr.writeSync(bytes.subarray(written));
}

function masker(secrets: readonly (string | undefined)[]): (line: string) => string {
  // Very short values would mask ordinary words; config rejects none, so mask from 3 characters.
  const values = secrets.filter((secret): secret is string => !!secret && secret.length >= 3);
  if (values.length === 0) return (line) => line;
  const escaped = values.flatMap((value) => [value, JSON.stringify(value).slice(1, -1)]);
  return (line) => {
    for (const value of escaped) if (line.includes(value)) line = line.replaceAll(value, "***");
    return line;
  };
}

/**
 * Lets one event per key through per window and counts the rest, so a
 * datalogger that sends the same bad reading every interval costs one log
 * line per window, not one per message.
 *
 * @example
 * ```ts
 * const limiter = new RateLimiter(60_000);
 * const verdict = limiter.check("a/x/u/data|calc");
 * if (verdict.allowed) console.warn(`… (${verdict.suppressed} similar suppressed)`);
 * ```
 */
export class RateLimiter {
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #maxKeys: number;
  readonly #windows = new Map<string, { start: number; suppressed: number }>();

  constructor(windowMs: number, options: { now?: () => number; maxKeys?: number } = {}) {
    this.#windowMs = windowMs;
    this.#now = options.now ?? Date.now;
    this.#maxKeys = options.maxKeys ?? 10_000;
  }

  /** Whether an event with `key` may be logged now, and how many were held back before it. */
  check(key: string): { allowed: boolean; suppressed: number } {
    const now = this.#now();
    const window = this.#windows.get(key);
    if (window && now - window.start < this.#windowMs) {
      window.suppressed++;
      return { allowed: false, suppressed: window.suppressed };
    }
    const suppressed = window?.suppressed ?? 0;
    this.#windows.delete(key);
    if (this.#windows.size >= this.#maxKeys) {
      // Forget the oldest key (Map keeps insertion order) so memory stays bounded.
      this.#windows.delete(this.#windows.keys().next().value!);
    }
    this.#windows.set(key, { start: now, suppressed: 0 });
    return { allowed: true, suppressed };
  }
}
