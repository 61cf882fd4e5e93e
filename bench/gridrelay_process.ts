/**
 * gridrelay as the benchmark runs it: in its own process (so its memory and
 * CPU are its own), with exactly the command `deno task start` would run for
 * its environment (scoped permissions and all), its log lines on hand and its
 * `/metrics` read over loopback.
 * @module
 */

import * as thisLauncher from "../scripts/start.ts";

const REPO_ROOT = new URL("../", import.meta.url);

/** Variables the worker inherits: only what Deno needs to find itself and its caches. */
const INHERITED_ENV = ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME", "TMPDIR"];

/** How long a worker may take to shut down before it is killed. */
const STOP_TIMEOUT_MS = 20_000;

/**
 * Options of {@linkcode startGridrelay}.
 *
 * @example
 * ```ts
 * const options: GridrelayOptions = { env: { MQTT_URL: broker.url, SINKS: "file" }, cpuProfileDir: "/tmp/prof" };
 * ```
 */
export interface GridrelayOptions {
  /** The worker's whole configuration; `HTTP_PORT` is required, the benchmark reads `/metrics`. */
  readonly env: Record<string, string>;
  /** The checkout to run (a URL ending in a slash), with its own launcher; default this one. */
  readonly root?: URL;
  /** Write a V8 CPU profile (`.cpuprofile`) to this folder at exit. */
  readonly cpuProfileDir?: string;
  /** Keep the worker's log in `<logDir>/<pid>.log` once it has stopped. */
  readonly logDir?: string;
  /** Extra `deno run` flags, e.g. `--v8-flags=--max-semi-space-size=2`. */
  readonly denoFlags?: readonly string[];
}

/**
 * A worker subprocess. `await using` stops it.
 *
 * @example
 * ```ts
 * await using worker = await startGridrelay({ env });
 * await worker.waitForLog(/Connected to/, 30_000);
 * const delivered = await worker.delivered("file");
 * ```
 */
export class GridrelayProcess implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #port: number;
  readonly #lines: string[] = [];
  /** `Date.now()` when each line arrived. */
  readonly #arrivals: number[] = [];
  readonly #waiters = new Set<() => void>();
  readonly #pump: Promise<void>;
  readonly #status: Promise<Deno.CommandStatus>;
  readonly #logDir?: string;
  #exited = false;

  constructor(child: Deno.ChildProcess, port: number, logDir?: string) {
    this.#child = child;
    this.#port = port;
    this.#logDir = logDir;
    this.#status = child.status.then((status) => {
      this.#exited = true;
      this.#wake();
      return status;
    });
    this.#pump = this.#read(child.stderr);
  }

  /** The worker's process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** The last `count` log lines, for error messages. */
  logTail(count = 20): string {
    return this.#lines.slice(-count).join("\n");
  }

  /**
   * Resolves with `Date.now()` at the moment the first log line matching
   * `pattern` arrived (seen already or still to come); rejects after
   * `timeoutMs` or when the worker exits first.
   */
  waitForLog(pattern: RegExp, timeoutMs: number): Promise<number> {
    return new Promise((resolve, reject) => {
      let seen = 0;
      const check = () => {
        for (; seen < this.#lines.length; seen++) {
          if (pattern.test(this.#lines[seen])) {
            done();
            resolve(this.#arrivals[seen]);
            return;
          }
        }
        if (this.#exited) {
          done();
          reject(new Error(`gridrelay exited before logging ${pattern}:\n${this.logTail()}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new Error(`gridrelay did not log ${pattern} in ${timeoutMs} ms:\n${this.logTail()}`),
        );
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(check);
      };
      this.#waiters.add(check);
      check();
    });
  }

  /** The `/metrics` text. */
  async metrics(): Promise<string> {
    const response = await fetch(`http://127.0.0.1:${this.#port}/metrics`);
    const text = await response.text();
    if (!response.ok) throw new Error(`/metrics answered ${response.status}: ${text}`);
    return text;
  }

  /** `gridrelay_records_delivered_total{sink}` now. */
  async delivered(sink: string): Promise<number> {
    return metricValue(await this.metrics(), `gridrelay_records_delivered_total{sink="${sink}"}`);
  }

  /**
   * Polls `/metrics` every `intervalMs` until `sink` has delivered `count`
   * records; resolves with `Date.now()` at the poll that saw it. Rejects after
   * `timeoutMs` or when the worker exits.
   */
  async waitForDelivered(
    sink: string,
    count: number,
    options: { timeoutMs: number; intervalMs: number },
  ): Promise<number> {
    const deadline = Date.now() + options.timeoutMs;
    let delivered = 0;
    while (!this.#exited) {
      delivered = await this.delivered(sink);
      const now = Date.now();
      if (delivered >= count) return now;
      if (now > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, options.intervalMs));
    }
    throw new Error(
      `gridrelay's ${sink} sink delivered ${delivered} of ${count} records in time` +
        `${this.#exited ? " (it exited)" : ""}:\n${this.logTail()}`,
    );
  }

  /** Resident memory now and at its peak (VmRSS, VmHWM), in bytes. */
  memory(): Promise<{ rss: number; peak: number }> {
    return processMemory(this.pid);
  }

  /** User plus system CPU seconds used so far. */
  cpuSeconds(): Promise<number> {
    return processCpuSeconds(this.pid);
  }

  /** The same, by thread: see {@linkcode threadCpuSeconds}. */
  threadCpuSeconds(): Promise<ThreadCpu> {
    return threadCpuSeconds(this.pid);
  }

  /** SIGTERM (a graceful shutdown), SIGKILL after a deadline; resolves with the exit code. */
  async stop(): Promise<number> {
    if (!this.#exited) {
      this.#child.kill("SIGTERM");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<"late">((resolve) => {
        timer = setTimeout(() => resolve("late"), STOP_TIMEOUT_MS);
      });
      const outcome = await Promise.race([this.#status, late]);
      clearTimeout(timer);
      if (outcome === "late" && !this.#exited) this.#child.kill("SIGKILL");
    }
    const status = await this.#status;
    await this.#pump;
    if (this.#logDir !== undefined) {
      await Deno.writeTextFile(`${this.#logDir}/${this.pid}.log`, this.#lines.join("\n") + "\n");
    }
    return status.code;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    let partial = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const now = Date.now();
      const parts = (partial + text).split("\n");
      partial = parts.pop()!;
      for (const line of parts) {
        this.#lines.push(line);
        this.#arrivals.push(now);
      }
      // Keep the log bounded on long runs; only the tail and the first lines matter.
      if (this.#lines.length > 10_000) {
        this.#lines.splice(1000, 5000);
        this.#arrivals.splice(1000, 5000);
      }
      if (parts.length > 0) this.#wake();
    }
  }

  #wake(): void {
    for (const wake of [...this.#waiters]) wake();
  }
}

/**
 * Starts `deno run mod.ts` from the repository root with exactly `options.env`
 * (plus what Deno needs), stdout to /dev/null and stderr (the log) piped.
 *
 * @example
 * ```ts
 * const worker = await startGridrelay({ env: { MQTT_URL: broker.url, SINKS: "file", HTTP_PORT: "9464" } });
 * await worker.stop();
 * ```
 */
export async function startGridrelay(options: GridrelayOptions): Promise<GridrelayProcess> {
  const port = Number(options.env.HTTP_PORT);
  if (!(port > 0)) throw new Error("startGridrelay needs HTTP_PORT: the benchmark reads /metrics");
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const name of INHERITED_ENV) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  const profile = options.cpuProfileDir
    ? ["--cpu-prof", `--cpu-prof-dir=${options.cpuProfileDir}`]
    : [];
  // The launcher's own command: run …flags… mod.ts; extra flags go before the entry point.
  const root = (options.root ?? REPO_ROOT).pathname;
  // Another checkout runs with its own launcher: its flags and process defaults are part of it.
  const { workerCommand, workerEnvironment }: typeof thisLauncher = options.root === undefined
    ? thisLauncher
    : await import(new URL("scripts/start.ts", options.root).href);
  const { args } = workerCommand(options.env, { cwd: root });
  const entry = args.pop()!;
  const child = new Deno.Command(Deno.execPath(), {
    args: [...args, ...profile, ...(options.denoFlags ?? []), entry],
    cwd: root,
    clearEnv: true,
    env: workerEnvironment({ ...env, ...options.env }),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  return new GridrelayProcess(child, port, options.logDir);
}

/**
 * The value of one sample line (`name{labels} value`) of a Prometheus text; 0 when absent.
 *
 * @example
 * ```ts
 * metricValue('gridrelay_records_delivered_total{sink="file"} 12\n', 'gridrelay_records_delivered_total{sink="file"}'); // 12
 * ```
 */
export function metricValue(text: string, series: string): number {
  const at = text.indexOf(`\n${series} `);
  const start = at >= 0 ? at + 1 : text.startsWith(`${series} `) ? 0 : -1;
  if (start < 0) return 0;
  const end = text.indexOf("\n", start);
  return Number(text.slice(start + series.length + 1, end < 0 ? undefined : end));
}

/**
 * Resident memory of process `pid` now and at its peak (VmRSS, VmHWM), in bytes.
 *
 * @example
 * ```ts
 * const { peak } = await processMemory(worker.pid);
 * ```
 */
export async function processMemory(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readProcFile(`/proc/${pid}/status`);
  const kib = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1]);
  return { rss: kib("VmRSS") * 1024, peak: kib("VmHWM") * 1024 };
}

/**
 * User plus system CPU seconds process `pid` has used.
 *
 * @example
 * ```ts
 * const before = await processCpuSeconds(worker.pid);
 * ```
 */
export async function processCpuSeconds(pid: number): Promise<number> {
  const stat = await readProcFile(`/proc/${pid}/stat`);
  // Fields after the command name, which may hold spaces, so split after its ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime, in clock ticks: 100 per second on Linux.
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * Where a process's CPU went, by kind of thread, in seconds: its main
 * thread (MQTT, the spool, the sinks), its worker threads (gridrelay's
 * pipeline), V8's own helpers (garbage collection, compilation) and the
 * rest (I/O and file syncs on Deno's blocking pool).
 */
export interface ThreadCpu {
  readonly main: number;
  readonly workers: number;
  readonly v8: number;
  readonly other: number;
}

/**
 * CPU seconds of each kind of thread of `pid`, from /proc/<pid>/task.
 *
 * @example
 * ```ts
 * const { main, workers, v8, other } = await threadCpuSeconds(worker.pid);
 * ```
 */
export async function threadCpuSeconds(pid: number): Promise<ThreadCpu> {
  const output = await new Deno.Command("sh", {
    args: ["-c", `cat /proc/${pid}/task/*/stat`],
    stdout: "piped",
    stderr: "null",
  }).output();
  const totals = { main: 0, workers: 0, v8: 0, other: 0 };
  for (const stat of new TextDecoder().decode(output.stdout).split("\n")) {
    if (stat === "") continue;
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const seconds = (Number(fields[11]) + Number(fields[12])) / 100;
    const kind = stat.startsWith(`${pid} `)
      ? "main"
      : name.startsWith("worker-")
      ? "workers"
      : name.startsWith("V8 ")
      ? "v8"
      : "other";
    totals[kind] += seconds;
  }
  return totals;
}

/**
 * The text of a file under /proc. Deno asks for --allow-all to read most of
 * them (another process's status, cpuinfo), so `cat` reads them.
 *
 * @example
 * ```ts
 * const cpuinfo = await readProcFile("/proc/cpuinfo");
 * ```
 */
export async function readProcFile(path: string): Promise<string> {
  const output = await new Deno.Command("cat", {
    args: [path],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    throw new Error(
      `Cannot read ${path} (is this Linux?): ${new TextDecoder().decode(output.stderr)}`,
    );
  }
  return new TextDecoder().decode(output.stdout);
}
