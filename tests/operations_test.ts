/**
 * Operations end to end, against a real mosquitto: health and metrics of a
 * running worker across a broker outage, the worker under the permissions
 * its configuration computes (and a clear error outside them), the
 * `deno task start` launcher, three workers sharing one subscription, the
 * compiled binary (when a denort is at hand), OpenTelemetry log export to a
 * loopback OTLP endpoint, and the summary line of an in-process worker.
 */

import assert from "node:assert/strict";
import { parseConfig, runWorker } from "../mod.ts";
import { resetLogging, setupLogging } from "../src/logging.ts";
import { permissionFlags, workerPermissions } from "../src/permissions.ts";
import type { OutputRecord } from "../src/record.ts";
import { workerCommand } from "../scripts/start.ts";
import { type Broker, startBroker } from "./_helpers/broker.ts";
import { publish } from "./_helpers/mqtt.ts";
import { freePort, LOOPBACK } from "./_helpers/ports.ts";
import { integrationTest, missingTools } from "./_helpers/require.ts";
import { startWorker, testWorkerEnv, type WorkerProcess } from "./_helpers/worker.ts";
import { eventually, readLines, tempDir } from "./_helpers/files.ts";

const REPO_ROOT = new URL("../", import.meta.url);
const TOPIC = "a/b827eb2bb2a9/u/data";
const SUBSCRIBED = /Subscribed to/;

function numbered(i: number): string {
  return `{"t":${1625576100 + i},"r":[{"_vid":"dse-1","E":${i}}]}`;
}

function messages(count: number, from = 0) {
  return Array.from({ length: count }, (_, i) => ({ topic: TOPIC, payload: numbered(from + i) }));
}

// Info-level logs and quicker reconnects than the shared test environment.
function baseEnv(broker: Broker, dataDir: string): Record<string, string> {
  return { ...testWorkerEnv(broker, dataDir), LOG_LEVEL: "info", MQTT_RECONNECT_MAX_MS: "500" };
}

/** The flags `deno task start` would give a worker with this environment. */
function scopedFlags(env: Record<string, string>, cwd: string): string[] {
  return permissionFlags(workerPermissions(parseConfig(env), { cwd, env }));
}

/** A worker run exactly under its computed permissions, never the broad test defaults. */
function startScopedWorker(env: Record<string, string>, cwd: string): WorkerProcess {
  return startWorker(env, { cwd, denoFlags: scopedFlags(env, cwd) });
}

async function httpGet(url: string): Promise<{ status: number; body: string }> {
  const response = await fetch(url);
  return { status: response.status, body: await response.text() };
}

/** The value of one sample in exposition text, e.g. `sample(text, 'x_total{sink="file"}')`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((line) => line.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function expectExit(worker: WorkerProcess, code: number): Promise<void> {
  const status = await worker.status;
  assert.equal(
    status.code,
    code,
    `expected exit ${code}, got ${status.code}; stderr:\n${worker.stderrLines().join("\n")}`,
  );
}

integrationTest({
  name: "metrics and readiness of a real worker follow a broker outage and its recovery",
  async fn() {
    await using broker = await startBroker({ persistence: true, logTypes: ["error", "warning"] });
    await using dir = await tempDir();
    const port = freePort();
    const base = `http://${LOOPBACK}:${port}`;
    await using worker = startScopedWorker(
      { ...baseEnv(broker, dir), HTTP_PORT: String(port) },
      dir,
    );
    await worker.waitForStderr(SUBSCRIBED);
    assert.deepEqual(await httpGet(`${base}/healthz`), { status: 200, body: "ok\n" });
    assert.equal((await httpGet(`${base}/readyz`)).status, 200);

    await publish(broker.url, [...messages(3), { topic: TOPIC, payload: "{not json" }]);
    await worker.waitForStdoutLines(3);
    const metrics = await eventually("the third delivery in /metrics", async () => {
      const { body } = await httpGet(`${base}/metrics`);
      return sample(body, 'gridrelay_records_delivered_total{sink="stdout"}') === 3
        ? body
        : undefined;
    });
    assert.equal(sample(metrics, "gridrelay_messages_received_total"), 4);
    assert.equal(sample(metrics, 'gridrelay_rejected_total{reason="invalid_json"}'), 1);
    assert.equal(sample(metrics, 'gridrelay_sink_errors_total{sink="stdout"}'), 0);
    assert.equal(sample(metrics, 'gridrelay_spool_pending{sink="stdout"}'), 0);
    assert.equal(sample(metrics, "gridrelay_mqtt_connected"), 1);
    assert.equal(sample(metrics, "gridrelay_mqtt_reconnects_total"), 0);
    assert.equal(sample(metrics, 'gridrelay_delivery_latency_seconds_count{sink="stdout"}'), 3);
    assert.ok(sample(metrics, "gridrelay_spool_bytes")! >= 0);
    assert.ok(sample(metrics, "process_resident_memory_bytes")! > 10_000_000);
    assert.match(metrics, /^# TYPE gridrelay_delivery_latency_seconds histogram$/m);

    await broker.kill();
    await eventually("/readyz to answer 503", async () => {
      const { status } = await httpGet(`${base}/readyz`);
      return status === 503 || undefined;
    });
    const down = (await httpGet(`${base}/metrics`)).body;
    assert.equal(sample(down, "gridrelay_mqtt_connected"), 0);
    assert.equal((await httpGet(`${base}/healthz`)).status, 200, "alive while the broker is down");

    await broker.start();
    await eventually("/readyz to answer 200 again", async () => {
      const { status } = await httpGet(`${base}/readyz`);
      return status === 200 || undefined;
    });
    const up = (await httpGet(`${base}/metrics`)).body;
    assert.equal(sample(up, "gridrelay_mqtt_connected"), 1);
    assert.ok(sample(up, "gridrelay_mqtt_reconnects_total")! >= 1);
  },
});

integrationTest({
  name:
    "a worker under its computed permissions delivers over TLS to a file sink and serves metrics",
  async fn() {
    await using broker = await startBroker({ tls: "mutual", logTypes: ["error", "warning"] });
    const certs = broker.certificates!;
    await using dir = await tempDir();
    const filePath = `${dir}/out/readings.jsonl`;
    const port = freePort();
    await using worker = startScopedWorker({
      ...baseEnv(broker, `${dir}/state`),
      SINKS: "stdout,file",
      FILE_PATH: filePath,
      DEAD_LETTER_PATH: `${dir}/rejects/dead-letter.jsonl`,
      MQTT_CA_FILE: certs.caFile,
      MQTT_CERT_FILE: certs.clientCertFile,
      MQTT_KEY_FILE: certs.clientKeyFile,
      HTTP_PORT: String(port),
    }, dir);
    await worker.waitForStderr(SUBSCRIBED);
    const tls = { ca: certs.caFile, cert: certs.clientCertFile, key: certs.clientKeyFile };
    await publish(broker.url, [...messages(2), { topic: TOPIC, payload: "[]" }], tls);
    await worker.waitForStdoutLines(2);
    await eventually(
      "two records in the file",
      async () => (await readLines(filePath)).length === 2 || undefined,
    );
    await eventually(
      "a dead letter",
      async () => (await readLines(`${dir}/rejects/dead-letter.jsonl`)).length === 1 || undefined,
    );
    assert.equal((await httpGet(`http://${LOOPBACK}:${port}/readyz`)).status, 200);
    await expectStop(worker);
    assert.doesNotMatch(worker.stderrLines().join("\n"), /NotCapable|Requires .* access/);
  },
});

async function expectStop(worker: WorkerProcess): Promise<void> {
  const status = await worker.stop();
  assert.equal(status.code, 0, worker.stderrLines().join("\n"));
}

integrationTest({
  name:
    "a file sink outside what the worker was granted stops start-up with exit 2 and one line naming the path and the permission",
  async fn() {
    await using broker = await startBroker({ logTypes: ["error", "warning"] });
    await using dir = await tempDir();
    await using elsewhere = await tempDir();
    const granted = { ...baseEnv(broker, dir), SINKS: "file", FILE_PATH: `${dir}/readings.jsonl` };
    // As a binary compiled for one FILE_PATH and run with another would be.
    const outside = `${elsewhere}/readings.jsonl`;
    await using worker = startWorker({ ...granted, FILE_PATH: outside }, {
      cwd: dir,
      denoFlags: scopedFlags(granted, dir),
    });
    await expectExit(worker, 2);
    const lines = worker.stderrLines();
    const errors = lines.map((line) => JSON.parse(line)).filter((entry) => entry.level === "error");
    assert.equal(errors.length, 1, lines.join("\n"));
    assert.ok(errors[0].message.includes(outside), errors[0].message);
    assert.match(errors[0].message, /permission/);
    assert.match(errors[0].message, /--allow-write=/);
    assert.ok(!lines.some((line) => /^\s+at /.test(line)), "no stack trace");
    assert.deepEqual(await readLines(outside), []);
  },
});

/** `deno task start`'s own command line, from deno.json, so the test runs what users run. */
async function launcherFlags(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", REPO_ROOT)));
  const words = (config.tasks.start as string).split(/\s+/);
  assert.deepEqual(words.slice(0, 2), ["deno", "run"]);
  assert.equal(words.at(-1), "scripts/start.ts");
  return words.slice(2, -1);
}

async function startLauncher(
  env: Record<string, string>,
  cwd: string,
  args: string[] = [],
): Promise<WorkerProcess> {
  return startWorker(env, {
    cwd,
    entry: new URL("scripts/start.ts", REPO_ROOT),
    denoFlags: await launcherFlags(),
    args,
  });
}

/** The command line of the launcher's child (from `ps`, where there is one), to see what the worker was granted. */
async function childCommandLine(pid: number): Promise<string[] | undefined> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("ps", { args: ["-o", "args=", "--ppid", String(pid)] })
      .output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  const line = new TextDecoder().decode(output.stdout).trim().split("\n")[0];
  return output.success && line ? line.split(/\s+/) : undefined;
}

integrationTest({
  name:
    "deno task start reads .env (the real environment wins), runs the worker with scoped permissions and passes SIGTERM on",
  async fn() {
    await using broker = await startBroker({ logTypes: ["error", "warning"] });
    await using dir = await tempDir();
    await Deno.writeTextFile(
      `${dir}/.env`,
      [
        "# written by the test",
        `MQTT_URL=${broker.url}`,
        "SINKS=file",
        "FILE_PATH=./out/readings.jsonl",
        "DATA_DIR=./state",
        "LOG_FORMAT=pretty",
        "SHUTDOWN_TIMEOUT_MS=5000",
      ].join("\n") + "\n",
    );
    await using launcher = await startLauncher({ LOG_FORMAT: "json" }, dir);
    await launcher.waitForStderr(SUBSCRIBED, 20_000);
    for (const line of launcher.stderrLines()) JSON.parse(line); // LOG_FORMAT=json won over .env

    const command = await childCommandLine(launcher.pid);
    if (missingTools(["ps"]).length === 0) assert.ok(command, "ps shows the worker's command line");
    if (command !== undefined) {
      assert.ok(command.includes(`--allow-net=${broker.host}:${broker.port}`), command.join(" "));
      assert.ok(command.includes(`--allow-write=${dir}/state,${dir}/out`), command.join(" "));
      assert.ok(command.includes("--no-prompt"));
      for (const word of command) {
        assert.doesNotMatch(word, /^(-A|--allow-all|--allow-run|--allow-ffi)/);
      }
    }

    await publish(broker.url, messages(2));
    const lines = await eventually(
      "two records in ./out/readings.jsonl",
      async () => {
        const found = await readLines(`${dir}/out/readings.jsonl`);
        return found.length >= 2 ? found : undefined;
      },
    );
    assert.equal(JSON.parse(lines[0]).data["dse-1"].E, 0);
    launcher.kill("SIGTERM");
    await expectExit(launcher, 0);
    assert.match(launcher.stderrLines().join("\n"), /SIGTERM received[\s\S]*Stopped cleanly/);
  },
});

integrationTest({
  name:
    "deno task start without a .env and with an invalid variable exits 2 with the worker's one line",
  requires: [],
  async fn() {
    await using dir = await tempDir();
    {
      await using launcher = await startLauncher(
        { MQTT_URL: "mqtt://127.0.0.1:1", MQTT_QOS: "3" },
        dir,
      );
      await expectExit(launcher, 2);
      assert.deepEqual(launcher.stderrLines(), [
        'gridrelay: MQTT_QOS="3" is invalid: expected 0, 1 or 2',
      ]);
    }
    {
      await using launcher = await startLauncher({}, dir);
      await expectExit(launcher, 2);
      assert.deepEqual(launcher.stderrLines(), [
        "gridrelay: MQTT_URL is missing: expected the broker URL, e.g. mqtts://broker.example.com:8883",
      ]);
    }
    {
      await using launcher = await startLauncher({ MQTT_URL: "mqtt://127.0.0.1:1" }, dir, [
        "--allow-run=sh",
      ]);
      await expectExit(launcher, 2);
      assert.match(
        launcher.stderrLines().join("\n"),
        /^gridrelay: "--allow-run=sh" is not accepted/,
      );
    }
    assert.deepEqual([...Deno.readDirSync(dir)], [], "nothing was started, nothing written");
  },
});

integrationTest({
  name: "three workers in one share group deliver every message exactly once, each taking a share",
  async fn() {
    await using broker = await startBroker({ logTypes: ["error", "warning"] });
    await using dir = await tempDir();
    const workers: WorkerProcess[] = [];
    const files = [0, 1, 2].map((i) => `${dir}/worker-${i}/readings.jsonl`);
    try {
      for (const [i, file] of files.entries()) {
        const env = {
          ...baseEnv(broker, `${dir}/worker-${i}`),
          MQTT_SHARE_GROUP: "relays",
          SINKS: "file",
          FILE_PATH: file,
          LOG_LEVEL: "info",
        };
        workers.push(startScopedWorker(env, dir));
      }
      for (const worker of workers) await worker.waitForStderr(SUBSCRIBED);
      const total = 300;
      await publish(broker.url, messages(total));
      const shares = await eventually(`${total} records across the three files`, async () => {
        const found = await Promise.all(files.map(readLines));
        return found.flat().length >= total ? found : undefined;
      });
      const all = shares.flat().map((line) => JSON.parse(line).time);
      assert.equal(all.length, total, "no message was delivered twice");
      assert.equal(new Set(all).size, total, "every message was delivered");
      for (const [i, share] of shares.entries()) {
        assert.ok(
          share.length > 0,
          `worker ${i} took a share (shares: ${shares.map((s) => s.length)})`,
        );
      }
      for (const worker of workers) assert.equal((await worker.stop()).code, 0);
    } finally {
      await Promise.all(workers.map((worker) => worker.stop()));
    }
  },
});

const DENORT_BIN = Deno.env.get("DENORT_BIN");
if (!DENORT_BIN) {
  console.warn(
    "SKIPPED: the compiled-binary test. deno compile needs denort, which cannot be downloaded " +
      "here; set DENORT_BIN to a denort binary of this Deno version to run it.",
  );
}

integrationTest({
  name:
    "the compiled binary carries the scoped permissions: it delivers, and refuses a path it was not built for",
  ignore: !DENORT_BIN,
  async fn() {
    await using broker = await startBroker({ logTypes: ["error", "warning"] });
    await using dir = await tempDir();
    const env = {
      ...baseEnv(broker, `${dir}/state`),
      SINKS: "file",
      FILE_PATH: `${dir}/out/readings.jsonl`,
    };
    const binary = `${dir}/gridrelay`;
    const { args } = workerCommand(env, { cwd: dir, compileTo: binary });
    const compiled = await new Deno.Command(Deno.execPath(), {
      args,
      cwd: REPO_ROOT.pathname,
      env: { DENORT_BIN: DENORT_BIN! },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(compiled.success, new TextDecoder().decode(compiled.stderr));

    const run = (overrides: Record<string, string>) =>
      new Deno.Command(binary, {
        cwd: dir,
        clearEnv: true,
        env: { ...env, ...overrides },
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      });
    const worker = run({}).spawn();
    const stderr = new Response(worker.stderr).text();
    await eventually("a record from the binary", async () => {
      await publish(broker.url, messages(1));
      return (await readLines(`${dir}/out/readings.jsonl`)).length > 0 || undefined;
    });
    worker.kill("SIGTERM");
    assert.equal((await worker.status).code, 0, await stderr);
    await stderr;

    const moved = await run({ FILE_PATH: `${dir}/moved/readings.jsonl` }).output();
    assert.equal(moved.code, 2);
    assert.match(new TextDecoder().decode(moved.stderr), /moved\/readings\.jsonl.*permission/);
  },
});

interface ExportedLog {
  readonly severity: string;
  readonly body: string;
}

/** A loopback OTLP/HTTP endpoint that keeps the log records it is sent as JSON. */
function startOtlpEndpoint(): { url: string; logs: ExportedLog[]; stop(): Promise<void> } {
  const logs: ExportedLog[] = [];
  const server = Deno.serve({ hostname: LOOPBACK, port: 0, onListen() {} }, async (request) => {
    const body = await request.text();
    if (new URL(request.url).pathname === "/v1/logs") {
      const payload = JSON.parse(body);
      for (const resource of payload.resourceLogs ?? []) {
        for (const scope of resource.scopeLogs ?? []) {
          for (const record of scope.logRecords ?? []) {
            logs.push({ severity: record.severityText, body: record.body?.stringValue ?? "" });
          }
        }
      }
    }
    return Response.json({});
  });
  return {
    url: `http://${LOOPBACK}:${server.addr.port}`,
    logs,
    stop: () => server.shutdown(),
  };
}

for (const mode of ["capture", "replace"] as const) {
  integrationTest({
    name: `OTEL_DENO=true exports the worker's log lines over OTLP (OTEL_DENO_CONSOLE=${mode})`,
    async fn() {
      await using broker = await startBroker({ logTypes: ["error", "warning"] });
      await using dir = await tempDir();
      const endpoint = startOtlpEndpoint();
      try {
        const env = {
          ...baseEnv(broker, dir),
          OTEL_DENO: "true",
          OTEL_DENO_CONSOLE: mode,
          OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
          OTEL_EXPORTER_OTLP_ENDPOINT: endpoint.url,
          OTEL_BLRP_SCHEDULE_DELAY: "50",
          OTEL_SERVICE_NAME: "gridrelay-test",
        };
        await using worker = startScopedWorker(env, dir);
        await worker.waitForStderr(SUBSCRIBED);
        await publish(broker.url, messages(1));
        await worker.waitForStdoutLines(1);
        const exported = await eventually(
          "the Subscribed line at the OTLP endpoint",
          () => endpoint.logs.find((log) => SUBSCRIBED.test(log.body)),
        );
        const line = JSON.parse(exported.body);
        assert.equal(line.level, "info");
        assert.equal(line.category, "gridrelay.connector");
        // Under capture Deno prints console.info on stdout, which is for records: the line goes as WARN.
        assert.equal(exported.severity, mode === "replace" ? "INFO" : "WARN");
        await expectStop(worker);
        const stderr = worker.stderrLines();
        assert.equal(stderr.filter((entry) => SUBSCRIBED.test(entry)).length, 1, "printed once");
        for (const entry of stderr) JSON.parse(entry);
        for (const entry of worker.stdoutLines()) assert.ok(JSON.parse(entry).time, "records only");
      } finally {
        await endpoint.stop();
      }
    },
  });
}

integrationTest({
  name: "a running worker logs the summary line on its interval and clears the timer at shutdown",
  async fn() {
    await using broker = await startBroker({ logTypes: ["error", "warning"] });
    await using dir = await tempDir();
    const lines: string[] = [];
    setupLogging({ level: "info", format: "json", write: (line) => lines.push(line) });
    const delivered: OutputRecord[] = [];
    const controller = new AbortController();
    try {
      const config = parseConfig({ ...baseEnv(broker, dir), LOG_LEVEL: "info" });
      const running = runWorker(config, {
        signal: controller.signal,
        summaryIntervalMs: 200,
        sinks: [{
          name: "memory",
          write: (records) => Promise.resolve(void delivered.push(...records)),
        }],
      });
      await eventually(
        "the subscription",
        () => lines.some((line) => SUBSCRIBED.test(line)) || undefined,
      );
      await publish(broker.url, [...messages(2), { topic: TOPIC, payload: "nope" }]);
      // The three messages may straddle two intervals: the lines add up to them.
      const summaries = await eventually("summaries adding up to the three messages", () => {
        const found = lines.map((line) => JSON.parse(line)).filter((entry) =>
          entry.category === "gridrelay.summary"
        );
        const total = (count: (entry: Record<string, number & { memory: number }>) => number) =>
          found.reduce((sum, entry) => sum + count(entry), 0);
        const done = total((entry) => entry.messagesIn) === 3 &&
          total((entry) => entry.delivered.memory) === 2 && total((entry) => entry.rejected) === 1;
        return done ? found : undefined;
      });
      for (const summary of summaries) {
        assert.match(
          summary.message,
          /^Last 0\.2 s: \d+ messages in; delivered memory \d+; \d+ rejected; pending memory 0$/,
        );
      }
      assert.ok(
        summaries.some((summary) =>
          summary.message.includes("3 messages in; delivered memory 2; 1 rejected")
        ) || summaries.length > 1,
      );
      controller.abort();
      assert.equal(await running, 0);
      assert.equal(delivered.length, 2);
    } finally {
      controller.abort();
      resetLogging();
    }
  },
});
