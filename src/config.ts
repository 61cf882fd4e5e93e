/**
 * Environment → one typed, validated, frozen {@linkcode Config}. Every variable
 * is listed in {@linkcode CONFIG_VARIABLES}; a missing or invalid value is a
 * {@linkcode ConfigError} that names the variable, the value (secrets masked)
 * and what is expected. Reading the environment is the caller's job.
 * @module
 */

import type { PipelineOptions } from "./pipeline.ts";

/** How records are printed by the stdout sink. */
export type StdoutFormat = "jsonl" | "pretty" | "auto";
/** How log lines are printed on stderr. */
export type LogFormat = "json" | "pretty" | "auto";
/** The lowest level that is logged. */
export type LogLevel = "debug" | "info" | "warning" | "error";

/** The MQTT session: where to connect, as whom, and what to subscribe to. */
export interface MqttConfig {
  /** The broker URL, e.g. `mqtts://broker.example.com:8883`. */
  readonly url: string;
  readonly topics: readonly string[];
  readonly username?: string;
  readonly password?: string;
  /** A PEM file, or an `https://` URL fetched once and cached in `DATA_DIR`. */
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
  /** When absent, a stable id is kept in `DATA_DIR` (see `src/client_id.ts`). */
  readonly clientId?: string;
  readonly qos: 0 | 1 | 2;
  readonly protocolVersion: 4 | 5;
  readonly cleanSession: boolean;
  readonly shareGroup?: string;
  /** `0` retries forever. */
  readonly connectAttempts: number;
  readonly reconnectMinMs: number;
  readonly reconnectMaxMs: number;
  readonly keepaliveSeconds: number;
}

/** What the worker does with each payload: exactly the pipeline's options. */
export type PipelineConfig = PipelineOptions;

/** Where records go. */
export interface SinksConfig {
  /** `stdout`, `file`, `webhook`, or the path or URL of a custom sink module. */
  readonly names: readonly string[];
  readonly stdoutFormat: StdoutFormat;
  readonly filePath: string;
  readonly fileMaxBytes: number;
  readonly fileMaxFiles: number;
  readonly webhookUrl?: string;
  readonly webhookSecret?: string;
  /** Extra request headers, e.g. `Authorization`; their values are secrets. */
  readonly webhookHeaders: Readonly<Record<string, string>>;
  /** Records per request: 1 sends one JSON object, more send a JSON array. */
  readonly webhookBatchSize: number;
  readonly webhookTimeoutMs: number;
}

/**
 * The whole configuration of a worker, validated and frozen.
 *
 * @example
 * ```ts
 * const config = parseConfig({ MQTT_URL: "mqtt://127.0.0.1:1883" });
 * config.mqtt.topics; // ["a/+/u/data"]
 * ```
 */
export interface Config {
  readonly mqtt: MqttConfig;
  readonly pipeline: PipelineConfig;
  readonly sinks: SinksConfig;
  readonly dataDir: string;
  readonly deadLetterPath: string;
  readonly spoolMaxBytes: number;
  readonly shutdownTimeoutMs: number;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  readonly httpPort?: number;
}

/**
 * Every environment variable the worker reads. `.env.example` documents each
 * of them; a test keeps the two in step.
 */
export const CONFIG_VARIABLES = [
  "MQTT_URL",
  "MQTT_TOPICS",
  "MQTT_USERNAME",
  "MQTT_PASSWORD",
  "MQTT_CA_FILE",
  "MQTT_CERT_FILE",
  "MQTT_KEY_FILE",
  "MQTT_CLIENT_ID",
  "MQTT_QOS",
  "MQTT_PROTOCOL_VERSION",
  "MQTT_CLEAN_SESSION",
  "MQTT_SHARE_GROUP",
  "MQTT_CONNECT_ATTEMPTS",
  "MQTT_RECONNECT_MIN_MS",
  "MQTT_RECONNECT_MAX_MS",
  "MQTT_KEEPALIVE_S",
  "TRANSFORM",
  "MISSING_VID",
  "MAX_PAYLOAD_BYTES",
  "MAX_NESTING_DEPTH",
  "MAX_READINGS",
  "RECORD_META",
  "TOPIC_NODE_LEVEL",
  "SINKS",
  "STDOUT_FORMAT",
  "FILE_PATH",
  "FILE_MAX_BYTES",
  "FILE_MAX_FILES",
  "WEBHOOK_URL",
  "WEBHOOK_SECRET",
  "WEBHOOK_HEADERS",
  "WEBHOOK_BATCH_SIZE",
  "WEBHOOK_TIMEOUT_MS",
  "DATA_DIR",
  "DEAD_LETTER_PATH",
  "SPOOL_MAX_BYTES",
  "SHUTDOWN_TIMEOUT_MS",
  "LOG_LEVEL",
  "LOG_FORMAT",
  "HTTP_PORT",
] as const;

/** The name of one configuration variable. */
export type ConfigVariable = typeof CONFIG_VARIABLES[number];

/** Variables whose values are never shown, in errors or logs. */
export const SECRET_VARIABLES: ReadonlySet<ConfigVariable> = new Set([
  "MQTT_PASSWORD",
  "WEBHOOK_SECRET",
  "WEBHOOK_HEADERS",
]);

/** The environment as the config sees it: variable name → value. */
export type Environment = Partial<Record<ConfigVariable, string>>;

/**
 * A configuration value that is missing or invalid. The message is one line a
 * person can act on; the worker prints it and exits with code 2.
 *
 * @example
 * ```ts
 * try {
 *   parseConfig({ MQTT_URL: "mqtt://h", MQTT_QOS: "3" });
 * } catch (error) {
 *   if (error instanceof ConfigError) console.error(error.message);
 *   // MQTT_QOS="3" is invalid: expected 0, 1 or 2
 * }
 * ```
 */
export class ConfigError extends Error {
  /** The variable at fault. */
  readonly variable: string;
  constructor(variable: string, message: string) {
    super(message);
    this.name = "ConfigError";
    this.variable = variable;
  }
}

/** Options of {@linkcode parseConfig}. */
export interface ParseConfigOptions {
  /** Whether `MQTT_URL` must be set (it must for `start`). Default `true`. */
  readonly requireBroker?: boolean;
}

/**
 * Validates `env` into a frozen {@linkcode Config}, or throws the first
 * {@linkcode ConfigError} found. Empty values count as unset.
 *
 * @example
 * ```ts
 * const config = parseConfig({ MQTT_URL: "mqtts://broker:8883", SINKS: "stdout,file" });
 * config.sinks.names; // ["stdout", "file"]
 * ```
 */
export function parseConfig(env: Environment, options: ParseConfigOptions = {}): Config {
  const read = new Reader(env);
  const dataDir = read.string("DATA_DIR") ?? "./data";
  const mqtt: MqttConfig = {
    url: read.brokerUrl(options.requireBroker ?? true),
    topics: read.topics(),
    username: read.string("MQTT_USERNAME"),
    password: read.string("MQTT_PASSWORD"),
    caFile: read.string("MQTT_CA_FILE"),
    certFile: read.string("MQTT_CERT_FILE"),
    keyFile: read.string("MQTT_KEY_FILE"),
    clientId: read.clientId(),
    qos: read.choice("MQTT_QOS", ["0", "1", "2"] as const, "1", Number) as 0 | 1 | 2,
    protocolVersion: read.choice("MQTT_PROTOCOL_VERSION", ["4", "5"] as const, "4", Number) as
      | 4
      | 5,
    cleanSession: read.boolean("MQTT_CLEAN_SESSION", false),
    shareGroup: read.shareGroup(),
    connectAttempts: read.integer("MQTT_CONNECT_ATTEMPTS", 0, { min: 0 }),
    reconnectMinMs: read.integer("MQTT_RECONNECT_MIN_MS", 1000, { min: 1 }),
    reconnectMaxMs: read.integer("MQTT_RECONNECT_MAX_MS", 60000, { min: 1 }),
    keepaliveSeconds: read.integer("MQTT_KEEPALIVE_S", 30, { min: 1, max: 65535 }),
  };
  if (mqtt.reconnectMaxMs < mqtt.reconnectMinMs) {
    throw new ConfigError(
      "MQTT_RECONNECT_MAX_MS",
      `MQTT_RECONNECT_MAX_MS="${mqtt.reconnectMaxMs}" is invalid: expected at least MQTT_RECONNECT_MIN_MS (${mqtt.reconnectMinMs})`,
    );
  }
  if (Boolean(mqtt.certFile) !== Boolean(mqtt.keyFile)) {
    const missing = mqtt.certFile ? "MQTT_KEY_FILE" : "MQTT_CERT_FILE";
    throw new ConfigError(
      missing,
      `${missing} is missing: mutual TLS needs both MQTT_CERT_FILE and MQTT_KEY_FILE`,
    );
  }
  if (mqtt.password !== undefined && mqtt.username === undefined) {
    throw new ConfigError(
      "MQTT_USERNAME",
      "MQTT_USERNAME is missing: MQTT_PASSWORD is set, and MQTT sends a password only with a user name",
    );
  }
  const pipeline: PipelineConfig = {
    transform: read.choice("TRANSFORM", ["ammp", "raw"] as const, "ammp"),
    missingVid: read.choice("MISSING_VID", ["reject", "drop", "device"] as const, "reject"),
    maxPayloadBytes: read.integer("MAX_PAYLOAD_BYTES", 262144, { min: 1 }),
    maxDepth: read.integer("MAX_NESTING_DEPTH", 32, { min: 2, max: 10000 }),
    maxReadings: read.integer("MAX_READINGS", 10000, { min: 1 }),
    recordMeta: read.list("RECORD_META", ["node_id", "topic", "received_at"] as const),
    topicNodeLevel: read.integer("TOPIC_NODE_LEVEL", 1, { min: 0 }),
  };
  const sinks: SinksConfig = {
    names: read.sinkNames(),
    stdoutFormat: read.choice("STDOUT_FORMAT", ["jsonl", "pretty", "auto"] as const, "auto"),
    filePath: read.string("FILE_PATH") ?? "./data/readings.jsonl",
    fileMaxBytes: read.integer("FILE_MAX_BYTES", 100 * 1024 * 1024, { min: 1024 }),
    fileMaxFiles: read.integer("FILE_MAX_FILES", 5, { min: 0 }),
    webhookUrl: read.httpUrl("WEBHOOK_URL"),
    webhookSecret: read.string("WEBHOOK_SECRET"),
    webhookHeaders: read.headers("WEBHOOK_HEADERS"),
    webhookBatchSize: read.integer("WEBHOOK_BATCH_SIZE", 1, { min: 1, max: 10000 }),
    webhookTimeoutMs: read.integer("WEBHOOK_TIMEOUT_MS", 10000, { min: 1 }),
  };
  if (sinks.names.includes("webhook") && sinks.webhookUrl === undefined) {
    throw new ConfigError(
      "WEBHOOK_URL",
      "WEBHOOK_URL is missing: SINKS includes webhook; expected an http:// or https:// URL",
    );
  }
  const config: Config = {
    mqtt,
    pipeline,
    sinks,
    dataDir,
    deadLetterPath: read.string("DEAD_LETTER_PATH") ?? joinPath(dataDir, "dead-letter.jsonl"),
    spoolMaxBytes: read.integer("SPOOL_MAX_BYTES", 1024 * 1024 * 1024, { min: 1024 }),
    shutdownTimeoutMs: read.integer("SHUTDOWN_TIMEOUT_MS", 10000, { min: 0 }),
    logLevel: read.choice("LOG_LEVEL", ["debug", "info", "warning", "error"] as const, "info"),
    logFormat: read.choice("LOG_FORMAT", ["json", "pretty", "auto"] as const, "auto"),
    httpPort: read.optionalInteger("HTTP_PORT", { min: 0, max: 65535 }),
  };
  return deepFreeze(config);
}

/**
 * The URL with any password replaced by `***`, for logs and errors.
 *
 * @example
 * ```ts
 * maskUrl("mqtt://user:hunter2@broker:1883"); // "mqtt://user:***@broker:1883"
 * ```
 */
export function maskUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password === "") return url;
    parsed.password = "***";
    return parsed.href;
  } catch {
    // Not a URL we can parse: mask anything that looks like userinfo.
    return url.replace(/\/\/([^/@:]*):[^/@]*@/, "//$1:***@");
  }
}

const BROKER_SCHEMES = ["mqtt:", "mqtts:", "ws:", "wss:"];
const BUILTIN_SINKS = ["stdout", "file", "webhook"];

class Reader {
  readonly #env: Environment;
  constructor(env: Environment) {
    this.#env = env;
  }

  string(name: ConfigVariable): string | undefined {
    const value = this.#env[name]?.trim();
    return value === "" ? undefined : value;
  }

  fail(name: ConfigVariable, value: string, expected: string): never {
    const shown = SECRET_VARIABLES.has(name) ? "***" : maskUrl(value);
    throw new ConfigError(name, `${name}="${shown}" is invalid: expected ${expected}`);
  }

  integer(
    name: ConfigVariable,
    fallback: number,
    bounds: { min?: number; max?: number } = {},
  ): number {
    return this.optionalInteger(name, bounds) ?? fallback;
  }

  optionalInteger(
    name: ConfigVariable,
    bounds: { min?: number; max?: number } = {},
  ): number | undefined {
    const value = this.string(name);
    if (value === undefined) return undefined;
    const number = /^\d+$/.test(value) ? Number(value) : NaN;
    const { min = 0, max = Number.MAX_SAFE_INTEGER } = bounds;
    if (!Number.isSafeInteger(number) || number < min || number > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `${min} to ${max}`;
      this.fail(name, value, `a whole number, ${range}`);
    }
    return number;
  }

  boolean(name: ConfigVariable, fallback: boolean): boolean {
    const value = this.string(name);
    if (value === undefined) return fallback;
    if (/^(true|1|yes)$/i.test(value)) return true;
    if (/^(false|0|no)$/i.test(value)) return false;
    this.fail(name, value, "true or false");
  }

  choice<T extends string, R = T>(
    name: ConfigVariable,
    choices: readonly T[],
    fallback: T,
    convert: (value: T) => R = (value) => value as unknown as R,
  ): R {
    const value = this.string(name) ?? fallback;
    const match = choices.find((choice) => choice === value.toLowerCase());
    if (match === undefined) this.fail(name, value, oneOf(choices));
    return convert(match);
  }

  list<T extends string>(name: ConfigVariable, choices: readonly T[]): T[] {
    const value = this.string(name);
    if (value === undefined) return [];
    const items = splitList(value);
    for (const item of items) {
      if (!choices.includes(item as T)) {
        this.fail(name, value, `a comma-separated list of ${oneOf(choices)}; "${item}" is not one`);
      }
    }
    return [...new Set(items)] as T[];
  }

  brokerUrl(required: boolean): string {
    const value = this.string("MQTT_URL");
    if (value === undefined) {
      if (!required) return "";
      throw new ConfigError(
        "MQTT_URL",
        "MQTT_URL is missing: expected the broker URL, e.g. mqtts://broker.example.com:8883",
      );
    }
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      this.fail("MQTT_URL", value, "a URL such as mqtt://broker:1883 or mqtts://broker:8883");
    }
    if (!BROKER_SCHEMES.includes(url.protocol)) {
      this.fail("MQTT_URL", value, "a URL starting with mqtt://, mqtts://, ws:// or wss://");
    }
    if (url.hostname === "") this.fail("MQTT_URL", value, "a URL with a host name");
    return value;
  }

  httpUrl(name: ConfigVariable): string | undefined {
    const value = this.string(name);
    if (value === undefined) return undefined;
    let url: URL | undefined;
    try {
      url = new URL(value);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) {
      this.fail(name, value, "an http:// or https:// URL");
    }
    return value;
  }

  headers(name: ConfigVariable): Record<string, string> {
    const value = this.string(name);
    if (value === undefined) return {};
    const expected =
      'a JSON object of header names and string values, e.g. {"Authorization":"Bearer …"}';
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      this.fail(name, value, expected);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      this.fail(name, value, expected);
    }
    const headers: Record<string, string> = {};
    for (const [header, headerValue] of Object.entries(parsed)) {
      if (typeof headerValue !== "string" || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(header)) {
        this.fail(name, value, expected);
      }
      headers[header] = headerValue;
    }
    return headers;
  }

  topics(): string[] {
    const value = this.string("MQTT_TOPICS") ?? "a/+/u/data";
    const topics = splitList(value);
    if (topics.length === 0) this.fail("MQTT_TOPICS", value, "at least one topic filter");
    for (const topic of topics) {
      const problem = topicFilterProblem(topic);
      if (problem) {
        this.fail("MQTT_TOPICS", value, `valid MQTT topic filters; "${topic}" ${problem}`);
      }
    }
    return topics;
  }

  clientId(): string | undefined {
    const value = this.string("MQTT_CLIENT_ID");
    if (value !== undefined && new TextEncoder().encode(value).length > 65535) {
      this.fail("MQTT_CLIENT_ID", value, "at most 65535 bytes");
    }
    return value;
  }

  shareGroup(): string | undefined {
    const value = this.string("MQTT_SHARE_GROUP");
    if (value !== undefined && /[/+#]/.test(value)) {
      this.fail("MQTT_SHARE_GROUP", value, "a group name without /, + or #");
    }
    return value;
  }

  sinkNames(): string[] {
    const value = this.string("SINKS") ?? "stdout";
    const names = splitList(value);
    if (names.length === 0) this.fail("SINKS", value, "at least one sink");
    const seen = new Set<string>();
    for (const name of names) {
      const isModule = !BUILTIN_SINKS.includes(name) &&
        (/^(\.{1,2}\/|\/)/.test(name) || /^(https?|file):/.test(name) ||
          /\.[mc]?[jt]sx?$/.test(name));
      if (!BUILTIN_SINKS.includes(name) && !isModule) {
        this.fail(
          "SINKS",
          value,
          `a comma-separated list of stdout, file, webhook, or the path or URL of a sink module (./my_sink.ts); "${name}" is none of these`,
        );
      }
      if (seen.has(name)) this.fail("SINKS", value, `each sink once; "${name}" is listed twice`);
      seen.add(name);
    }
    return names;
  }
}

function splitList(value: string): string[] {
  return value.split(",").map((item) => item.trim()).filter((item) => item !== "");
}

function oneOf(choices: readonly string[]): string {
  return choices.length === 1
    ? choices[0]
    : `${choices.slice(0, -1).join(", ")} or ${choices[choices.length - 1]}`;
}

function topicFilterProblem(topic: string): string | undefined {
  const levels = topic.split("/");
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i];
    if (level.includes("#") && (level !== "#" || i !== levels.length - 1)) {
      return "has # somewhere other than as the whole last level";
    }
    if (level.includes("+") && level !== "+") return "has + inside a level";
  }
  if (topic.startsWith("$share/")) return "is a shared subscription; set MQTT_SHARE_GROUP instead";
  return undefined;
}

function joinPath(dir: string, file: string): string {
  return dir.endsWith("/") ? dir + file : `${dir}/${file}`;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object") {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
