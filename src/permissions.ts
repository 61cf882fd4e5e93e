/**
 * Configuration → the least Deno permissions a worker needs to run it:
 * network only to the broker, the webhook and its own HTTP port; files only
 * where its configuration points. Pure, so the launcher (`scripts/start.ts`)
 * and `deno task compile` compute the same flags, and tests check them as values.
 * @module
 */

import { dirname, isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type Config, CONFIG_VARIABLES } from "./config.ts";

/**
 * Environment variables the worker reads besides {@linkcode CONFIG_VARIABLES}:
 * Deno's OpenTelemetry switches (the logger routes its lines to the exporter
 * when they are on) and mqtt.js's SOCKS proxy. Libraries also probe optional
 * variables (readable-stream's `READABLE_STREAM`; `debug` enumerates them
 * all); under `--ignore-env` those read as unset, which is their default.
 */
export const RUNTIME_VARIABLES = [
  "OTEL_DENO",
  "OTEL_DENO_CONSOLE",
  "MQTTJS_SOCKS_PROXY",
] as const;

/**
 * Every permission a worker is granted, as lists of what each flag names.
 * An empty list means the permission is not granted at all.
 *
 * @example
 * ```ts
 * const permissions: WorkerPermissions = {
 *   net: ["broker.example.com:8883"], read: ["/var/lib/gridrelay"], write: ["/var/lib/gridrelay"],
 *   env: ["MQTT_URL"], sys: ["hostname"], import: [],
 * };
 * ```
 */
export interface WorkerPermissions {
  /** `host:port` pairs (`--allow-net`). */
  readonly net: readonly string[];
  /** Files and folders (`--allow-read`). */
  readonly read: readonly string[];
  /** Folders (`--allow-write`). */
  readonly write: readonly string[];
  /** Variable names (`--allow-env`). */
  readonly env: readonly string[];
  /** System information (`--allow-sys`). */
  readonly sys: readonly string[];
  /** Hosts custom sink modules are imported from (`--allow-import`). */
  readonly import: readonly string[];
}

/** Options of {@linkcode workerPermissions}. */
export interface WorkerPermissionOptions {
  /**
   * Relative paths in the configuration are made absolute against this
   * folder (the worker's working directory). Default: kept relative, which
   * Deno resolves against the working directory at start-up.
   */
  readonly cwd?: string;
  /** The environment the worker will see, for variables outside the configuration (a SOCKS proxy). */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

const DEFAULT_PORTS: Readonly<Record<string, number>> = {
  "mqtt:": 1883,
  "mqtts:": 8883,
  "ws:": 80,
  "wss:": 443,
  "http:": 80,
  "https:": 443,
  "socks:": 1080,
  "socks4:": 1080,
  "socks4a:": 1080,
  "socks5:": 1080,
  "socks5h:": 1080,
};

/**
 * The permissions `config` needs, and no more.
 *
 * - net: the broker's `host:port`, the webhook's, the host of an `https://`
 *   `MQTT_CA_FILE`, a SOCKS proxy given in `MQTTJS_SOCKS_PROXY`, and
 *   `0.0.0.0:<HTTP_PORT>` to serve health and metrics;
 * - read: `DATA_DIR`, the file sink's and the dead-letter file's folders, the
 *   CA, certificate and key files, and local custom sink modules;
 * - write: `DATA_DIR`, the file sink's folder and the dead-letter folder
 *   (rotation writes siblings of each file);
 * - env: {@linkcode CONFIG_VARIABLES} and {@linkcode RUNTIME_VARIABLES};
 * - sys: `hostname`, for the default client id;
 * - import: the hosts of custom sink modules given as URLs.
 *
 * @example
 * ```ts
 * const config = parseConfig({ MQTT_URL: "mqtts://broker.example.com", SINKS: "file" });
 * workerPermissions(config, { cwd: "/srv/gridrelay" }).net; // ["broker.example.com:8883"]
 * ```
 */
export function workerPermissions(
  config: Config,
  options: WorkerPermissionOptions = {},
): WorkerPermissions {
  const path = (value: string) =>
    options.cwd !== undefined && !isAbsolute(value) ? resolve(options.cwd, value) : value;
  const folder = (file: string) => dirname(path(file));

  const net = [hostPort(config.mqtt.url)];
  const read = [path(config.dataDir)];
  const write = [path(config.dataDir)];
  const imports: string[] = [];

  if (config.sinks.names.includes("file")) {
    read.push(folder(config.sinks.filePath));
    write.push(folder(config.sinks.filePath));
  }
  read.push(folder(config.deadLetterPath));
  write.push(folder(config.deadLetterPath));

  const { caFile, certFile, keyFile } = config.mqtt;
  if (caFile?.startsWith("https://")) net.push(hostPort(caFile));
  else if (caFile !== undefined) read.push(path(caFile));
  for (const file of [certFile, keyFile]) if (file !== undefined) read.push(path(file));

  if (config.sinks.names.includes("webhook") && config.sinks.webhookUrl !== undefined) {
    net.push(hostPort(config.sinks.webhookUrl));
  }
  for (const name of config.sinks.names) {
    const module = sinkModule(name);
    if (module === undefined) continue;
    if (module.url !== undefined) imports.push(module.url.host);
    else read.push(path(module.path!));
  }

  const proxy = options.env?.MQTTJS_SOCKS_PROXY?.trim();
  if (proxy) net.push(hostPort(proxy));
  if (config.httpPort !== undefined) net.push(`0.0.0.0:${config.httpPort}`);

  return {
    net: unique(net),
    read: unique(read),
    write: unique(write),
    env: [...CONFIG_VARIABLES, ...RUNTIME_VARIABLES],
    sys: ["hostname"],
    import: unique(imports),
  };
}

/**
 * The `deno run` / `deno compile` flags for `permissions`: one `--allow-*`
 * per granted permission, each naming exactly what it grants, and
 * `--no-prompt`, so a missing permission is an error, never a question.
 * `--ignore-env` makes any other variable read as unset instead of failing.
 * Never `-A`, `--allow-run` or `--allow-ffi`.
 *
 * @example
 * ```ts
 * permissionFlags(workerPermissions(config, { cwd: Deno.cwd() }));
 * // ["--no-prompt", "--allow-net=broker:1883", "--allow-read=/srv/data", …, "--ignore-env", …]
 * ```
 */
export function permissionFlags(permissions: WorkerPermissions): string[] {
  const flags = ["--no-prompt"];
  const add = (flag: string, values: readonly string[]) => {
    if (values.length > 0) flags.push(`${flag}=${values.join(",")}`);
  };
  add("--allow-net", permissions.net);
  add("--allow-read", permissions.read);
  add("--allow-write", permissions.write);
  add("--allow-env", permissions.env);
  // Libraries probe optional variables (readable-stream, and debug lists them
  // all): unset is their default, so a variable outside the list reads as unset.
  flags.push("--ignore-env");
  add("--allow-sys", permissions.sys);
  add("--allow-import", permissions.import);
  return flags;
}

/**
 * An extra permission flag the launcher does not pass on (`-A`,
 * `--allow-run`, an unscoped grant); the message says what is accepted.
 *
 * @example
 * ```ts
 * try {
 *   addPermissions(permissions, ["--allow-run"]);
 * } catch (error) {
 *   if (error instanceof PermissionFlagError) console.error(error.message);
 * }
 * ```
 */
export class PermissionFlagError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PermissionFlagError";
  }
}

/** Permission flags an operator may add on the launcher's command line. */
const EXTRA_FLAGS: Readonly<Record<string, keyof WorkerPermissions>> = {
  "--allow-net": "net",
  "--allow-read": "read",
  "--allow-write": "write",
  "--allow-env": "env",
  "--allow-sys": "sys",
  "--allow-import": "import",
};

/**
 * Adds the operator's extra grants — e.g. `--allow-net=api.example.com` for a
 * custom sink that posts there — to `permissions`. Only scoped `--allow-*`
 * flags of the kinds above are taken; anything else (`-A`, `--allow-run`,
 * `--allow-ffi`, an unscoped `--allow-net`) throws a {@linkcode PermissionFlagError}.
 *
 * @example
 * ```ts
 * const more = addPermissions(workerPermissions(config), ["--allow-net=api.example.com:443"]);
 * more.net.includes("api.example.com:443"); // true
 * ```
 */
export function addPermissions(
  permissions: WorkerPermissions,
  flags: readonly string[],
): WorkerPermissions {
  const result = {
    net: [...permissions.net],
    read: [...permissions.read],
    write: [...permissions.write],
    env: [...permissions.env],
    sys: [...permissions.sys],
    import: [...permissions.import],
  };
  for (const flag of flags) {
    const match = /^(--allow-[a-z]+)=(.+)$/.exec(flag);
    const kind = match ? EXTRA_FLAGS[match[1]] : undefined;
    if (!match || kind === undefined) {
      throw new PermissionFlagError(
        `"${flag}" is not accepted: the worker runs with the least permissions its configuration needs; add only scoped grants such as --allow-net=api.example.com, --allow-read=/path, --allow-write=/path, --allow-env=NAME, --allow-sys=NAME or --allow-import=host`,
      );
    }
    for (const value of match[2].split(",")) {
      if (value.trim() !== "") result[kind].push(value.trim());
    }
  }
  return {
    net: unique(result.net),
    read: unique(result.read),
    write: unique(result.write),
    env: unique(result.env),
    sys: unique(result.sys),
    import: unique(result.import),
  };
}

/**
 * `SINKS` entries that are custom modules: local paths, and URLs to import.
 * Mirrors how `sinks/registry.ts` tells a module from a built-in.
 */
function sinkModule(name: string): { url?: URL; path?: string } | undefined {
  if (name === "stdout" || name === "file" || name === "webhook") return undefined;
  if (/^[a-z][a-z0-9+.-]+:/i.test(name)) {
    const url = new URL(name);
    return url.protocol === "file:" ? { path: fileURLToPath(url) } : { url };
  }
  return { path: name };
}

/** `host:port` of a URL, with the scheme's default port when it names none. */
function hostPort(value: string): string {
  const url = new URL(value);
  const port = url.port || DEFAULT_PORTS[url.protocol];
  return port === undefined ? url.hostname : `${url.hostname}:${port}`;
}

function unique(values: readonly string[]): string[] {
  return [...new Set(values)];
}
