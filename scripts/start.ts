/**
 * `deno task start`: reads `./.env` when present (the real environment wins),
 * validates the configuration, and runs the worker (`mod.ts`) under exactly
 * the permissions that configuration needs (`src/permissions.ts`), forwarding
 * signals and passing on its exit code. With `--compile` it builds the single
 * binary with the same permissions instead (`deno task compile`).
 * @module
 */

import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { CONFIG_VARIABLES, ConfigError, type Environment, parseConfig } from "../src/config.ts";
import {
  addPermissions,
  PermissionFlagError,
  permissionFlags,
  type WorkerPermissions,
  workerPermissions,
} from "../src/permissions.ts";

const ENTRY = new URL("../mod.ts", import.meta.url);
const DENO_CONFIG = new URL("../deno.json", import.meta.url);
/** The pipeline's worker thread loads its modules from here at run time: they need read access. */
const PIPELINE_WORKER = new URL("../src/pipeline_worker.ts", import.meta.url);
/**
 * V8 grows each thread's young generation up to 3 × 16 MiB under a burst and keeps it; capped
 * at 2 MiB semi-spaces, peak memory while draining a backlog drops by a tenth at no measurable
 * cost in throughput: what lives past one collection is small (see README, Performance).
 * V8 also lets the old generation grow up to 4 × what survived the last full collection before
 * it collects again; with a live heap of ~15 MiB, a webhook sending one record per request
 * piled up 35–40 MiB of garbage that way. At 1.5 × (heap growing 50 %) the full collections
 * come sooner and stay cheap, since little is live.
 */
const V8_FLAGS = ["--v8-flags=--max-semi-space-size=2,--heap-growing-percent=50"];
/**
 * glibc gives each thread that allocates its own malloc arena (up to 8 per core), and what one
 * arena frees the others cannot reuse: the worker's threads (MQTT and sinks, the pipeline, V8's
 * helpers) each kept their own high-water mark. One shared arena held 8 to 10 MiB less at the
 * peak of a drain, at no measured cost in throughput (see README, Performance). Other C
 * libraries ignore the variable; an operator's own value wins.
 */
const PROCESS_DEFAULTS: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "1" };
const ENV_FILE = ".env";
const DEFAULT_OUTPUT = "dist/gridrelay";
/** Same as the worker's `EXIT.config`. */
const EXIT_CONFIG = 2;

/**
 * A line of a `.env` file that cannot be read; the message names the line.
 *
 * @example
 * ```ts
 * try {
 *   parseEnvFile("MQTT_URL");
 * } catch (error) {
 *   if (error instanceof EnvFileError) console.error(error.message);
 * }
 * ```
 */
export class EnvFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EnvFileError";
  }
}

/**
 * Reads `.env` text the way Deno's `--env-file` does: `NAME=value` per line,
 * an optional `export ` in front, `#` comments (after a space in an unquoted
 * value), `'single'` quotes taken literally, `"double"` quotes with `\n`,
 * `\"` and `\\` escapes, and `${NAME}` / `$NAME` replaced in unquoted and
 * double-quoted values by a value set above or in `outer`.
 *
 * @example
 * ```ts
 * parseEnvFile('MQTT_URL=mqtt://broker:1883 # local\nMQTT_TOPICS="a/+/u/data"\n');
 * // { MQTT_URL: "mqtt://broker:1883", MQTT_TOPICS: "a/+/u/data" }
 * ```
 */
export function parseEnvFile(
  text: string,
  outer: Readonly<Record<string, string>> = {},
  name = ENV_FILE,
): Record<string, string> {
  const values: Record<string, string> = {};
  const lookup = (variable: string) => outer[variable] ?? values[variable] ?? "";
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  lines.forEach((raw, index) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const match = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)$/.exec(line);
    if (!match) {
      throw new EnvFileError(
        `${name} line ${index + 1} is invalid: expected NAME=value, got "${raw.trim()}"`,
      );
    }
    const [, variable, rest] = match;
    values[variable] = envValue(rest, lookup, `${name} line ${index + 1}`);
  });
  return values;
}

function envValue(rest: string, lookup: (name: string) => string, where: string): string {
  const quote = rest[0];
  if (quote === "'" || quote === '"') {
    const end = closingQuote(rest, quote);
    if (end === -1) {
      throw new EnvFileError(
        `${where} is invalid: the value's ${quote} quote is not closed on the same line`,
      );
    }
    const inner = rest.slice(1, end);
    if (quote === "'") return inner;
    const unescaped = inner.replace(
      /\\([nrt"\\$])/g,
      (_, c: string) => c === "n" ? "\n" : c === "r" ? "\r" : c === "t" ? "\t" : `\0${c}`,
    );
    return substitute(unescaped, lookup).replace(/\0(.)/g, "$1");
  }
  const value = rest.replace(/\s+#.*$/, "").trim();
  return substitute(value, lookup);
}

function closingQuote(text: string, quote: string): number {
  for (let i = 1; i < text.length; i++) {
    if (quote === '"' && text[i] === "\\") i++;
    else if (text[i] === quote) return i;
  }
  return -1;
}

function substitute(value: string, lookup: (name: string) => string): string {
  // An escaped \$ was marked with \0 by the caller and is left alone.
  return value.replace(
    /(?<!\0)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g,
    (_, braced: string | undefined, bare: string | undefined) => lookup(braced ?? bare!),
  );
}

/** Options of {@linkcode workerCommand}. */
export interface WorkerCommandOptions {
  /** The working directory; relative paths in the configuration are resolved against it. */
  readonly cwd: string;
  /** Extra scoped grants from the command line, e.g. `--allow-net=api.example.com`. */
  readonly extraFlags?: readonly string[];
  /** Build a binary at this path instead of running the worker. */
  readonly compileTo?: string;
}

/**
 * The environment the worker process runs with: `env`, plus the process
 * tunables gridrelay sets unless `env` has them (`MALLOC_ARENA_MAX=1`).
 *
 * @example
 * ```ts
 * workerEnvironment({ MQTT_URL: "mqtt://127.0.0.1:1883" });
 * // { MALLOC_ARENA_MAX: "1", MQTT_URL: "mqtt://127.0.0.1:1883" }
 * ```
 */
export function workerEnvironment(
  env: Readonly<Record<string, string>>,
): Record<string, string> {
  return { ...PROCESS_DEFAULTS, ...env };
}

/**
 * The `deno` arguments that run (or compile) the worker for `env`: validates
 * it (throws the {@linkcode ConfigError}), computes the permissions, and adds
 * the operator's extra grants. Local custom sink modules are included in a
 * compiled binary.
 *
 * @example
 * ```ts
 * workerCommand({ MQTT_URL: "mqtt://127.0.0.1:1883" }, { cwd: "/srv/gridrelay" });
 * // ["run", "--config", ".../deno.json", "--no-prompt", "--allow-net=127.0.0.1:1883", …, ".../mod.ts"]
 * ```
 */
export function workerCommand(
  env: Readonly<Record<string, string | undefined>>,
  options: WorkerCommandOptions,
): { args: string[]; permissions: WorkerPermissions } {
  const config = parseConfig(configEnvironment(env));
  const permissions = addPermissions(
    workerPermissions(config, { cwd: options.cwd, env }),
    [`--allow-read=${fileURLToPath(new URL(".", PIPELINE_WORKER))}`, ...(options.extraFlags ?? [])],
  );
  const flags = [...permissionFlags(permissions), ...V8_FLAGS];
  const configFlag = ["--config", DENO_CONFIG.pathname];
  if (options.compileTo === undefined) {
    return { args: ["run", ...configFlag, ...flags, ENTRY.pathname], permissions };
  }
  // Custom sink modules are imported at run time; a binary must carry them.
  const includes = config.sinks.names
    .filter((name) => !["stdout", "file", "webhook"].includes(name))
    .flatMap((
      name,
    ) => ["--include", /^[a-z][a-z0-9+.-]+:/i.test(name) ? name : resolve(options.cwd, name)]);
  return {
    args: [
      "compile",
      ...configFlag,
      ...flags,
      ...includes,
      "--include",
      fileURLToPath(PIPELINE_WORKER),
      "--output",
      resolve(options.cwd, options.compileTo),
      ENTRY.pathname,
    ],
    permissions,
  };
}

function configEnvironment(env: Readonly<Record<string, string | undefined>>): Environment {
  const picked: Environment = {};
  for (const name of CONFIG_VARIABLES) {
    const value = env[name];
    if (value !== undefined) picked[name] = value;
  }
  return picked;
}

/**
 * The launcher's own arguments: `--compile`, `--output=<path>` (with
 * `--compile`), `--env-file=<path>` instead of `./.env`; anything else is an
 * extra permission grant for the worker.
 *
 * @example
 * ```ts
 * launcherArguments(["--compile", "--env-file=/etc/gridrelay/gridrelay.env"]);
 * // { compile: true, envFile: "/etc/gridrelay/gridrelay.env", extraFlags: [] }
 * ```
 */
export function launcherArguments(args: readonly string[]): {
  compile: boolean;
  output?: string;
  envFile?: string;
  extraFlags: string[];
} {
  const value = (prefix: string) =>
    args.findLast((arg) => arg.startsWith(prefix))?.slice(prefix.length);
  return {
    compile: args.includes("--compile"),
    output: value("--output="),
    envFile: value("--env-file="),
    extraFlags: args.filter((arg) =>
      arg !== "--compile" && !arg.startsWith("--output=") && !arg.startsWith("--env-file=")
    ),
  };
}

async function readEnvFile(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    // No .env is an ordinary set-up: the environment alone configures the worker.
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/**
 * This very Deno when the launcher may run it; otherwise `deno` from PATH,
 * which is what `--allow-run=deno` grants (the two differ when PATH holds a
 * symlink to the binary).
 */
function denoCommand(): string {
  const self = Deno.execPath();
  return Deno.permissions.querySync({ name: "run", command: self }).state === "granted"
    ? self
    : "deno";
}

function fail(message: string): never {
  console.error(`gridrelay: ${message}`);
  Deno.exit(EXIT_CONFIG);
}

async function main(): Promise<never> {
  const options = launcherArguments(Deno.args);
  const cwd = Deno.cwd();

  const real = Deno.env.toObject();
  let env: Record<string, string>;
  try {
    const path = options.envFile ?? `${cwd}/${ENV_FILE}`;
    const text = await readEnvFile(path);
    if (text === undefined && options.envFile !== undefined) {
      fail(`--env-file=${options.envFile} does not exist: expected a file of NAME=value lines`);
    }
    // The real environment wins over .env.
    env = { ...(text === undefined ? {} : parseEnvFile(text, real, path)), ...real };
  } catch (error) {
    if (error instanceof EnvFileError) fail(error.message);
    throw error;
  }

  let command: string[];
  try {
    command = workerCommand(env, {
      cwd,
      extraFlags: options.extraFlags,
      compileTo: options.compile ? (options.output ?? DEFAULT_OUTPUT) : undefined,
    }).args;
  } catch (error) {
    if (error instanceof ConfigError || error instanceof PermissionFlagError) {
      fail(error.message);
    }
    throw error;
  }

  const child = new Deno.Command(denoCommand(), {
    args: command,
    clearEnv: true,
    env: workerEnvironment(env),
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  // The worker shuts down gracefully on its first signal; pass each one on.
  // (Ctrl-C in a terminal reaches it directly too; it counts repeats that
  // close together as one.)
  const forwarders = (["SIGINT", "SIGTERM"] as const).map((signal) => {
    const forward = () => {
      try {
        child.kill(signal);
      } catch (error) {
        if (!(error instanceof TypeError)) throw error; // it has already exited
      }
    };
    Deno.addSignalListener(signal, forward);
    return () => Deno.removeSignalListener(signal, forward);
  });
  const status = await child.status;
  for (const remove of forwarders) remove();
  Deno.exit(status.code);
}

if (import.meta.main) await main();
