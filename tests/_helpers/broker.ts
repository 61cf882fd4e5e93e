/**
 * A real mosquitto broker per test: generated config, certificates and
 * password file in a temp dir, a free loopback port, and a process the test
 * owns — started, restarted, crashed and stopped on demand. Never a mock.
 * @module
 */

import { createCertificates, type OwnedCertificates } from "./certs.ts";
import type { Certificates } from "./certs.ts";
import { freePort, LOOPBACK, waitForPort } from "./ports.ts";

/**
 * How the test broker is set up. Every field is optional.
 *
 * @example
 * ```ts
 * const options: BrokerOptions = { tls: "mutual", persistence: true, extraConfig: "max_queued_messages 10" };
 * ```
 */
export interface BrokerOptions {
  /** `server`: TLS with the test CA's server certificate; `mutual`: clients must also present one. Default `none`. */
  tls?: "none" | "server" | "mutual";
  /** Username → password. When set, anonymous clients are refused. */
  users?: Record<string, string>;
  /** Keep sessions and queued messages across {@linkcode Broker.restart} and {@linkcode Broker.kill}. */
  persistence?: boolean;
  /** Open a second listener speaking MQTT over WebSockets, at {@linkcode Broker.wsUrl}. */
  websockets?: boolean;
  /** Lines appended to mosquitto.conf, e.g. `max_inflight_messages 1`. */
  extraConfig?: string;
  /** Reuse these (the caller removes them); otherwise created, and removed by `stop()`, when `tls` is not `none`. */
  certificates?: Certificates;
  /** mosquitto `log_type`s. Default `["all"]`; use `["error", "warning"]` for high-volume tests. */
  logTypes?: string[];
  /** How long start-up may take before it fails. Default 10000 ms. */
  startTimeoutMs?: number;
}

/**
 * A running mosquitto owned by one test. `await using` stops it and removes its files.
 *
 * @example
 * ```ts
 * await using broker = await startBroker({ persistence: true });
 * await broker.kill(); // crash
 * await broker.start(); // same port, persisted sessions back
 * ```
 */
export interface Broker extends AsyncDisposable {
  /** Where it listens; always loopback. */
  readonly host: "127.0.0.1";
  /** The MQTT listener's port; the same across restarts. */
  readonly port: number;
  /** `mqtt://127.0.0.1:<port>`, or `mqtts://localhost:<port>` with TLS so that hostname verification applies. */
  readonly url: string;
  /** `ws://127.0.0.1:<port>` (or `wss://localhost:<port>` with TLS) when `websockets` was asked for. */
  readonly wsUrl?: string;
  /** The PKI the TLS listeners use, when `tls` is not `none`. */
  readonly certificates?: Certificates;
  /** The config file mosquitto runs with, for diagnosis. */
  readonly configFile: string;
  /** Whether the process is running now. */
  readonly running: boolean;
  /** SIGTERM (SIGKILL after a deadline), await the exit, then remove every temp file. Safe to call twice. */
  stop(): Promise<void>;
  /** A clean stop and a start on the same port; persisted sessions survive when `persistence` is on. */
  restart(): Promise<void>;
  /** SIGKILL, as a crash would; files are kept and `start()` brings it back on the same port. */
  kill(): Promise<void>;
  /** Starts the process again after `kill()`; resolves when the port accepts connections. */
  start(): Promise<void>;
  /** Everything mosquitto printed so far, across restarts (the last 1 MiB). */
  log(): string;
}

/** How long a SIGTERMed mosquitto may take to write its persistence file and exit. */
const STOP_TIMEOUT_MS = 5_000;
/** The log is for diagnosis: keep its tail, not an unbounded buffer. */
const MAX_LOG_CHARS = 1 << 20;
/** A port picked by freePort() may be taken before mosquitto binds it; pick again this many times. */
const BIND_ATTEMPTS = 3;

/**
 * Starts mosquitto on a free loopback port; resolves once the port accepts
 * connections. Requires `mosquitto` (and `mosquitto_passwd` for `users`,
 * `openssl` for TLS) on PATH — guard the test with `requireTools`.
 *
 * @example
 * ```ts
 * await using broker = await startBroker({ tls: "server", users: { alice: "s3cret" } });
 * // connect to broker.url with ca = broker.certificates!.caFile
 * ```
 */
export async function startBroker(options: BrokerOptions = {}): Promise<Broker> {
  const dir = await Deno.makeTempDir({ prefix: "gridrelay-broker-" });
  let ownedCertificates: OwnedCertificates | undefined;
  try {
    const tls = options.tls ?? "none";
    let certificates = options.certificates;
    if (tls !== "none" && certificates === undefined) {
      ownedCertificates = await createCertificates();
      certificates = ownedCertificates;
    }
    const passwordFile = options.users ? await writePasswordFile(dir, options.users) : undefined;
    const broker = new MosquittoBroker({
      dir,
      options,
      certificates: tls === "none" ? undefined : certificates,
      ownedCertificates,
      passwordFile,
    });
    await broker.startOnFreePort();
    return broker;
  } catch (error) {
    await ownedCertificates?.remove();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw error;
  }
}

interface MosquittoBrokerInit {
  dir: string;
  options: BrokerOptions;
  certificates?: Certificates;
  ownedCertificates?: OwnedCertificates;
  passwordFile?: string;
}

class MosquittoBroker implements Broker {
  readonly host = LOOPBACK;
  readonly certificates?: Certificates;
  readonly configFile: string;
  #init: MosquittoBrokerInit;
  #port = 0;
  #wsPort?: number;
  #child?: Deno.ChildProcess;
  #exited?: Promise<Deno.CommandStatus>;
  #hasExited = true;
  #logPumps: Promise<void>[] = [];
  #log = "";
  #removed = false;

  constructor(init: MosquittoBrokerInit) {
    this.#init = init;
    this.certificates = init.certificates;
    this.configFile = `${init.dir}/mosquitto.conf`;
  }

  get port(): number {
    return this.#port;
  }

  get url(): string {
    return this.certificates
      ? `mqtts://localhost:${this.#port}`
      : `mqtt://${LOOPBACK}:${this.#port}`;
  }

  get wsUrl(): string | undefined {
    if (this.#wsPort === undefined) return undefined;
    return this.certificates
      ? `wss://localhost:${this.#wsPort}/`
      : `ws://${LOOPBACK}:${this.#wsPort}/`;
  }

  get running(): boolean {
    return !this.#hasExited;
  }

  log(): string {
    return this.#log;
  }

  /** First start: ports are picked here, and picked again if another process took them first. */
  async startOnFreePort(): Promise<void> {
    for (let attempt = 1;; attempt++) {
      this.#port = freePort();
      this.#wsPort = undefined;
      while (this.#init.options.websockets && (this.#wsPort ?? this.#port) === this.#port) {
        // The first port is free again once freePort() closed it, so it can come back.
        this.#wsPort = freePort();
      }
      const logStart = this.#log.length;
      try {
        await this.start();
        return;
      } catch (error) {
        const portTaken = /address already in use/i.test(this.#log.slice(logStart));
        if (!portTaken || attempt >= BIND_ATTEMPTS) throw error;
        this.#appendLog(`--- port taken, retrying on another (attempt ${attempt + 1}) ---\n`);
      }
    }
  }

  async start(): Promise<void> {
    if (this.#removed) {
      throw new Error(
        "This broker was stopped and its files removed; start a new one with startBroker().",
      );
    }
    if (this.running) throw new Error(`mosquitto is already running on port ${this.#port}.`);
    await Deno.writeTextFile(this.configFile, this.#config());
    const child = spawnMosquitto(this.configFile);
    this.#child = child;
    this.#hasExited = false;
    this.#exited = child.status.then((status) => {
      this.#hasExited = true;
      return status;
    });
    this.#logPumps = [this.#pump(child.stdout), this.#pump(child.stderr)];

    const exitedEarly = new AbortController();
    this.#exited.then((status) =>
      exitedEarly.abort(
        new Error(`mosquitto exited during start-up with code ${status.code}.`),
      )
    );
    const { startTimeoutMs = 10_000 } = this.#init.options;
    try {
      const ports = [this.#port, ...(this.#wsPort === undefined ? [] : [this.#wsPort])];
      for (const port of ports) {
        await waitForPort(port, { timeoutMs: startTimeoutMs, signal: exitedEarly.signal });
      }
    } catch (error) {
      await this.#terminate("SIGKILL");
      throw new Error(
        `mosquitto did not start (${(error as Error).message}); its log:\n${this.#log}` +
          `\nconfig (${this.configFile}):\n${this.#config()}`,
        { cause: error },
      );
    }
  }

  async kill(): Promise<void> {
    await this.#terminate("SIGKILL");
  }

  async restart(): Promise<void> {
    await this.#terminate("SIGTERM");
    this.#appendLog("--- restart ---\n");
    await this.start();
  }

  async stop(): Promise<void> {
    await this.#terminate("SIGTERM");
    if (this.#removed) return;
    this.#removed = true;
    await this.#init.ownedCertificates?.remove();
    await Deno.remove(this.#init.dir, { recursive: true }).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  /** Ends the process, if any, and waits until it and its output pipes are gone. */
  async #terminate(signal: "SIGTERM" | "SIGKILL"): Promise<void> {
    const child = this.#child;
    if (!child) return;
    if (!this.#hasExited) {
      child.kill(signal);
      if (signal === "SIGTERM") {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const deadline = new Promise<"late">((resolve) => {
          timer = setTimeout(() => resolve("late"), STOP_TIMEOUT_MS);
        });
        const outcome = await Promise.race([this.#exited, deadline]);
        clearTimeout(timer);
        if (outcome === "late" && !this.#hasExited) {
          this.#appendLog(`--- no exit ${STOP_TIMEOUT_MS} ms after SIGTERM: SIGKILL ---\n`);
          child.kill("SIGKILL");
        }
      }
    }
    await this.#exited;
    await Promise.all(this.#logPumps);
    this.#child = undefined;
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      this.#appendLog(text);
    }
  }

  #appendLog(text: string): void {
    this.#log += text;
    if (this.#log.length > MAX_LOG_CHARS) this.#log = this.#log.slice(-MAX_LOG_CHARS);
  }

  #config(): string {
    return mosquittoConfig({
      port: this.#port,
      wsPort: this.#wsPort,
      dir: this.#init.dir,
      options: this.#init.options,
      certificates: this.certificates,
      passwordFile: this.#init.passwordFile,
    });
  }
}

interface ConfigInput {
  port: number;
  wsPort?: number;
  dir: string;
  options: BrokerOptions;
  certificates?: Certificates;
  passwordFile?: string;
}

/** The whole mosquitto.conf of a test broker; pure, so a failing start can print it. */
function mosquittoConfig(input: ConfigInput): string {
  const { options, certificates } = input;
  const tlsLines = certificates
    ? [
      `cafile ${certificates.caFile}`,
      `certfile ${certificates.serverCertFile}`,
      `keyfile ${certificates.serverKeyFile}`,
      `require_certificate ${options.tls === "mutual"}`,
      "use_identity_as_username false",
    ]
    : [];
  const lines = [
    "# generated by tests/_helpers/broker.ts",
    // Started as root, mosquitto 2 drops to user `mosquitto`, which cannot
    // read our temp files; `user root` keeps it as is (ignored when not root).
    "user root",
    "per_listener_settings false",
    `listener ${input.port} ${LOOPBACK}`,
    ...tlsLines,
  ];
  if (input.wsPort !== undefined) {
    lines.push(`listener ${input.wsPort} ${LOOPBACK}`, "protocol websockets", ...tlsLines);
  }
  if (input.passwordFile) {
    lines.push("allow_anonymous false", `password_file ${input.passwordFile}`);
  } else {
    lines.push("allow_anonymous true");
  }
  if (options.persistence) {
    // autosave_interval 1: a SIGKILLed broker (kill()) still keeps what it
    // held a second ago, as a real crash would.
    lines.push(
      "persistence true",
      `persistence_location ${input.dir}/`,
      "autosave_interval 1",
    );
  }
  lines.push("log_dest stderr", "connection_messages true", "log_timestamp_format %H:%M:%S");
  for (const type of options.logTypes ?? ["all"]) lines.push(`log_type ${type}`);
  if (options.extraConfig) lines.push(options.extraConfig);
  return lines.join("\n") + "\n";
}

function spawnMosquitto(configFile: string): Deno.ChildProcess {
  try {
    return new Deno.Command("mosquitto", {
      args: ["-c", configFile],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        "`mosquitto` is not on PATH; integration tests run a real broker. " +
          "Install it with `apt-get install -y mosquitto`.",
        { cause: error },
      );
    }
    throw error;
  }
}

async function writePasswordFile(dir: string, users: Record<string, string>): Promise<string> {
  const file = `${dir}/passwd`;
  await Deno.writeTextFile(file, "", { mode: 0o600 });
  for (const [username, password] of Object.entries(users)) {
    let output: Deno.CommandOutput;
    try {
      output = await new Deno.Command("mosquitto_passwd", {
        args: ["-b", file, username, password],
        stdin: "null",
      }).output();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new Error(
          "`mosquitto_passwd` is not on PATH; it ships with mosquitto: `apt-get install -y mosquitto`.",
          { cause: error },
        );
      }
      throw error;
    }
    if (!output.success) {
      const stderr = new TextDecoder().decode(output.stderr).trim();
      throw new Error(`mosquitto_passwd failed for user "${username}": ${stderr}`);
    }
  }
  return file;
}
