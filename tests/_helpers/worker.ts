/**
 * Runs the gridrelay worker (mod.ts) as a real subprocess with only the
 * environment a test gives it, and exposes its stdout/stderr line by line so
 * tests await what it prints instead of sleeping.
 * @module
 */

/** Where the repository root is, so the worker runs the same from any cwd. */
import type { Broker } from "./broker.ts";

const REPO_ROOT = new URL("../../", import.meta.url);

/** The permissions `deno task start` grants, as flags. */
const DEFAULT_PERMISSIONS = [
  "--allow-net",
  "--allow-env",
  "--allow-read",
  "--allow-write",
  "--allow-sys",
];

/**
 * Variables the child inherits from the test's environment: only what Deno
 * needs to find itself and its module cache. Nothing that configures the
 * worker (MQTT_*, SINKS, ...) may leak in from the developer's shell.
 */
const INHERITED_ENV = [
  "PATH",
  "HOME",
  "DENO_DIR",
  "XDG_CACHE_HOME",
  "NPM_CONFIG_REGISTRY",
  "TMPDIR",
];

/** How long {@linkcode WorkerProcess.stop} waits after SIGTERM before SIGKILL. */
const STOP_TIMEOUT_MS = 15_000;

/**
 * How the worker process is started.
 *
 * @example
 * ```ts
 * const options: WorkerOptions = { cwd: await Deno.makeTempDir(), args: ["--verbose"] };
 * ```
 */
export interface WorkerOptions {
  /** Working directory (e.g. a temp dir holding `./data`). Default: the repository root. */
  cwd?: string;
  /** Arguments after the script. */
  args?: string[];
  /** The script to run instead of mod.ts (a path or file URL), e.g. a fixture. */
  entry?: string | URL;
  /** Deno flags replacing the default permissions (`--allow-net --allow-env --allow-read --allow-write --allow-sys`). */
  denoFlags?: string[];
}

/**
 * A running worker subprocess. `await using` stops it (SIGTERM, then SIGKILL) and closes its pipes.
 *
 * @example
 * ```ts
 * await using worker = startWorker({ MQTT_URL: broker.url });
 * worker.kill("SIGTERM");
 * assert.equal((await worker.status).code, 0);
 * ```
 */
export interface WorkerProcess extends AsyncDisposable {
  /** The child's process id. */
  readonly pid: number;
  /** Resolves when the process exited. */
  readonly status: Promise<Deno.CommandStatus>;
  /** Complete stdout lines so far. */
  stdoutLines(): string[];
  /** Complete stderr lines so far. */
  stderrLines(): string[];
  /**
   * Resolves with the first `n` stdout lines once there are that many; rejects
   * after `timeoutMs` (default 10000) or when the process exits first, with
   * the stderr tail in the message.
   */
  waitForStdoutLines(n: number, timeoutMs?: number): Promise<string[]>;
  /** Resolves with the first stdout line matching `pattern` (seen already or still to come). */
  waitForStdout(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Resolves with the first stderr line matching `pattern` (seen already or still to come). */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends `signal`; does nothing if the process already exited. */
  kill(signal: Deno.Signal): void;
  /** SIGTERM, wait up to `timeoutMs` (default 15000), then SIGKILL; resolves with the exit status once the pipes are drained. */
  stop(timeoutMs?: number): Promise<Deno.CommandStatus>;
}

/**
 * Starts `deno run <permissions> mod.ts` from the repository root, with a
 * cleared environment: PATH, HOME, DENO_DIR (and a few cache settings) when
 * set, `NO_COLOR=1`, plus `env`.
 *
 * @example
 * ```ts
 * await using worker = startWorker({ MQTT_URL: broker.url, DATA_DIR: dataDir });
 * await worker.waitForStderr(/subscribed/);
 * const [line] = await worker.waitForStdoutLines(1);
 * ```
 */
export function startWorker(
  env: Record<string, string>,
  options: WorkerOptions = {},
): WorkerProcess {
  const entry = options.entry ?? new URL("mod.ts", REPO_ROOT);
  const script = entry instanceof URL ? entry.pathname : entry;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      // Explicit, so the import map applies even when cwd is a temp dir.
      "--config",
      new URL("deno.json", REPO_ROOT).pathname,
      ...(options.denoFlags ?? DEFAULT_PERMISSIONS),
      script,
      ...(options.args ?? []),
    ],
    cwd: options.cwd ?? REPO_ROOT.pathname,
    clearEnv: true,
    env: { ...inheritedEnv(), NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return new ChildWorker(child);
}

function inheritedEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of INHERITED_ENV) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/** Lines of one output stream, and the waiters woken on each new line or at its end. */
class LineLog {
  readonly lines: string[] = [];
  ended = false;
  #waiters = new Set<() => void>();

  async pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    let partial = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (partial + text).split("\n");
      partial = parts.pop()!;
      for (const line of parts) this.lines.push(line.replace(/\r$/, ""));
      if (parts.length > 0) this.#wake();
    }
    if (partial !== "") this.lines.push(partial);
    this.ended = true;
    this.#wake();
  }

  /** Calls `check` now and after every change until it returns a value, the stream ends, or time runs out. */
  waitFor<T>(check: () => T | undefined, timeoutMs: number, describe: () => string): Promise<T> {
    const now = check();
    if (now !== undefined) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
      };
      const wake = () => {
        const value = check();
        if (value !== undefined) {
          done();
          resolve(value);
        } else if (this.ended) {
          done();
          reject(new Error(`The worker's output ended before ${describe()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`Timed out after ${timeoutMs} ms waiting for ${describe()}`));
      }, timeoutMs);
      this.#waiters.add(wake);
      if (this.ended) wake();
    });
  }

  #wake(): void {
    for (const wake of [...this.#waiters]) wake();
  }
}

class ChildWorker implements WorkerProcess {
  readonly pid: number;
  readonly status: Promise<Deno.CommandStatus>;
  #child: Deno.ChildProcess;
  #exited = false;
  #stdout = new LineLog();
  #stderr = new LineLog();
  #pumps: Promise<void>;

  constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.pid = child.pid;
    this.status = child.status.then((status) => {
      this.#exited = true;
      return status;
    });
    this.#pumps = Promise.all([
      this.#stdout.pump(child.stdout),
      this.#stderr.pump(child.stderr),
    ]).then(() => {});
  }

  stdoutLines(): string[] {
    return [...this.#stdout.lines];
  }

  stderrLines(): string[] {
    return [...this.#stderr.lines];
  }

  waitForStdoutLines(n: number, timeoutMs = 10_000): Promise<string[]> {
    const lines = this.#stdout.lines;
    return this.#withStderrTail(
      this.#stdout.waitFor(
        () => lines.length >= n ? lines.slice(0, n) : undefined,
        timeoutMs,
        () => `${n} stdout lines (got ${lines.length})`,
      ),
    );
  }

  waitForStdout(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    return this.#withStderrTail(
      this.#stdout.waitFor(
        () => this.#stdout.lines.find((line) => pattern.test(line)),
        timeoutMs,
        () => `a stdout line matching ${pattern}`,
      ),
    );
  }

  waitForStderr(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    return this.#withStderrTail(
      this.#stderr.waitFor(
        () => this.#stderr.lines.find((line) => pattern.test(line)),
        timeoutMs,
        () => `a stderr line matching ${pattern}`,
      ),
    );
  }

  kill(signal: Deno.Signal): void {
    if (this.#exited) return;
    try {
      this.#child.kill(signal);
    } catch (error) {
      // The process may exit between the check and the kill; anything else is real.
      if (!this.#exited && !(error instanceof TypeError)) throw error;
    }
  }

  async stop(timeoutMs = STOP_TIMEOUT_MS): Promise<Deno.CommandStatus> {
    if (!this.#exited) {
      this.kill("SIGTERM");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((resolve) => {
        timer = setTimeout(() => resolve("late"), timeoutMs);
      });
      const outcome = await Promise.race([this.status, late]);
      clearTimeout(timer);
      if (outcome === "late") this.kill("SIGKILL");
    }
    const status = await this.status;
    await this.#pumps;
    return status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** A failed wait names what the worker last said on stderr, which is usually why. */
  #withStderrTail<T>(wait: Promise<T>): Promise<T> {
    return wait.catch(async (error: Error) => {
      // Output that ended means the process is going: let stderr finish so the tail is whole.
      if (this.#stdout.ended || this.#stderr.ended) await this.#pumps;
      const tail = this.#stderr.lines.slice(-30).join("\n");
      const exit = this.#exited ? " (the worker has exited)" : "";
      throw new Error(`${error.message}${exit}; stderr tail:\n${tail}`, { cause: error });
    });
  }
}

/**
 * The environment test workers share: `broker`, a data folder, fast
 * reconnects, machine-readable output and debug logs.
 *
 * @example
 * ```ts
 * await using worker = startWorker({ ...testWorkerEnv(broker, dir), SINKS: "file" });
 * ```
 */
export function testWorkerEnv(broker: Broker, dataDir: string): Record<string, string> {
  return {
    MQTT_URL: broker.url,
    DATA_DIR: dataDir,
    STDOUT_FORMAT: "jsonl",
    LOG_FORMAT: "json",
    LOG_LEVEL: "debug",
    MQTT_RECONNECT_MIN_MS: "100",
    MQTT_RECONNECT_MAX_MS: "1000",
    SHUTDOWN_TIMEOUT_MS: "5000",
  };
}
