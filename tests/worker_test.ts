/**
 * The worker end to end, as a user runs it: a real mosquitto per test, the
 * worker as a subprocess configured only by its environment, records read
 * back from stdout and the file sink, dead letters from their file.
 */

import assert from "node:assert/strict";
import { startBroker } from "./_helpers/broker.ts";
import { publish } from "./_helpers/mqtt.ts";
import { integrationTest } from "./_helpers/require.ts";
import { startWorker, testWorkerEnv, type WorkerProcess } from "./_helpers/worker.ts";
import { eventually, readLines, tempDir } from "./_helpers/files.ts";
import { SPEC_PAYLOAD, SPEC_RECORD } from "./_helpers/spec_example.ts";

const TOPIC = "a/b827eb2bb2a9/u/data";
const SUBSCRIBED = /Subscribed to/;

/** A payload whose record is recognisable by `t`. */
function numbered(i: number): string {
  return `{"t":${1625576100 + i},"r":[{"_vid":"dse-1","E":184467440737095${51000 + i},"P":${i}}]}`;
}

function timeOf(i: number): string {
  return new Date((1625576100 + i) * 1000).toISOString().replace(".000Z", "+00:00");
}

/** Waits until the file sink holds a record for every `t` offset in `0..count-1`; returns the lines. */
function allDelivered(path: string, count: number, timeoutMs?: number): Promise<string[]> {
  return eventually(`${count} distinct records in ${path}`, async () => {
    const lines = await readLines(path);
    const times = new Set(lines.map((line) => JSON.parse(line).time));
    return times.size >= count ? lines : undefined;
  }, { timeoutMs });
}

async function expectExit(worker: WorkerProcess, code: number): Promise<void> {
  const status = await worker.status;
  assert.equal(
    status.code,
    code,
    `expected exit ${code}, got ${status.code}; stderr:\n${
      worker.stderrLines().slice(-15).join("\n")
    }`,
  );
}

integrationTest({
  name: "SPEC §1's example reaches stdout exactly, and the file sink holds the same line",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    const filePath = `${dir}/out/readings.jsonl`;
    await using worker = startWorker({
      ...testWorkerEnv(broker, dir),
      SINKS: "stdout,file",
      FILE_PATH: filePath,
    });
    await worker.waitForStderr(SUBSCRIBED);
    await publish(broker.url, [{ topic: TOPIC, payload: SPEC_PAYLOAD }]);
    const [line] = await worker.waitForStdoutLines(1);
    assert.equal(line, SPEC_RECORD);
    assert.deepEqual(await allDelivered(filePath, 1), [SPEC_RECORD]);
  },
});

integrationTest({
  name: "stdout carries records only: every log line is on stderr",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    await using worker = startWorker({ ...testWorkerEnv(broker, dir), LOG_LEVEL: "debug" });
    await worker.waitForStderr(SUBSCRIBED);
    await publish(broker.url, [
      { topic: TOPIC, payload: numbered(0) },
      { topic: TOPIC, payload: "not json" },
      { topic: TOPIC, payload: numbered(1) },
    ]);
    await worker.waitForStdoutLines(2);
    assert.equal((await worker.stop()).code, 0);
    for (const line of worker.stdoutLines()) assert.ok(JSON.parse(line).time, line);
    assert.equal(worker.stdoutLines().length, 2);
    for (const line of worker.stderrLines()) JSON.parse(line);
  },
});

integrationTest({
  name: "TLS with a password: records flow, and the password appears in no output",
  async fn() {
    const password = "correct-horse-battery";
    await using broker = await startBroker({ tls: "server", users: { relay: password } });
    await using dir = await tempDir();
    await using worker = startWorker({
      ...testWorkerEnv(broker, dir),
      MQTT_CA_FILE: broker.certificates!.caFile,
      MQTT_USERNAME: "relay",
      MQTT_PASSWORD: password,
    });
    await worker.waitForStderr(SUBSCRIBED);
    await publish(broker.url, [{ topic: TOPIC, payload: SPEC_PAYLOAD }], {
      ca: broker.certificates!.caFile,
      username: "relay",
      password,
    });
    assert.deepEqual(await worker.waitForStdoutLines(1), [SPEC_RECORD]);
    await worker.stop();
    const everything = [...worker.stdoutLines(), ...worker.stderrLines()].join("\n");
    assert.doesNotMatch(everything, new RegExp(password));
  },
});

integrationTest({
  name: "mutual TLS: the worker presents its client certificate",
  async fn() {
    await using broker = await startBroker({ tls: "mutual" });
    const certs = broker.certificates!;
    await using dir = await tempDir();
    await using worker = startWorker({
      ...testWorkerEnv(broker, dir),
      MQTT_CA_FILE: certs.caFile,
      MQTT_CERT_FILE: certs.clientCertFile,
      MQTT_KEY_FILE: certs.clientKeyFile,
    });
    await worker.waitForStderr(SUBSCRIBED);
    await publish(broker.url, [{ topic: TOPIC, payload: SPEC_PAYLOAD }], {
      ca: certs.caFile,
      cert: certs.clientCertFile,
      key: certs.clientKeyFile,
    });
    assert.deepEqual(await worker.waitForStdoutLines(1), [SPEC_RECORD]);
  },
});

integrationTest({
  name: "a wrong password stops start-up with exit code 3 and says which credentials to check",
  async fn() {
    await using broker = await startBroker({ users: { relay: "right" } });
    await using dir = await tempDir();
    await using worker = startWorker({
      ...testWorkerEnv(broker, dir),
      MQTT_USERNAME: "relay",
      MQTT_PASSWORD: "wrong-password",
    });
    await expectExit(worker, 3);
    const stderr = worker.stderrLines().join("\n");
    assert.match(stderr, /MQTT_USERNAME and MQTT_PASSWORD/);
    assert.doesNotMatch(stderr, /wrong-password/);
  },
});

integrationTest({
  name:
    "an untrusted server certificate stops start-up with exit code 3 and points at MQTT_CA_FILE",
  async fn() {
    await using broker = await startBroker({ tls: "server" });
    await using dir = await tempDir();
    await using worker = startWorker({
      ...testWorkerEnv(broker, dir),
      MQTT_CA_FILE: broker.certificates!.untrustedCaFile,
    });
    await expectExit(worker, 3);
    assert.match(worker.stderrLines().join("\n"), /not trusted.*MQTT_CA_FILE/);
  },
});

integrationTest({
  name: "a refused connection is retried MQTT_CONNECT_ATTEMPTS times, then exit code 3",
  async fn() {
    await using broker = await startBroker();
    await broker.stop();
    await using dir = await tempDir();
    await using worker = startWorker({
      ...testWorkerEnv(broker, dir),
      MQTT_CONNECT_ATTEMPTS: "2",
    });
    await expectExit(worker, 3);
    const stderr = worker.stderrLines().join("\n");
    assert.match(stderr, /after 2 attempt\(s\): connection refused/);
  },
});

integrationTest({
  name: "an invalid variable stops start-up with exit code 2 and one line naming it",
  requires: [],
  async fn() {
    await using dir = await tempDir();
    await using worker = startWorker({
      MQTT_URL: "mqtt://127.0.0.1:1",
      DATA_DIR: dir,
      MQTT_QOS: "3",
    });
    await expectExit(worker, 2);
    assert.deepEqual(worker.stderrLines(), [
      'gridrelay: MQTT_QOS="3" is invalid: expected 0, 1 or 2',
    ]);
  },
});

integrationTest({
  name: "malformed payloads reach the dead letters while the worker goes on",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    await using worker = startWorker(testWorkerEnv(broker, dir));
    await worker.waitForStderr(SUBSCRIBED);
    const invalidUtf8 = new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]);
    await publish(broker.url, [
      { topic: TOPIC, payload: "{not json" },
      { topic: TOPIC, payload: invalidUtf8 },
      { topic: TOPIC, payload: '{"t":1625576100,"r":[{"_d":"calc","x":1},{"_vid":"v","y":2}]}' },
      { topic: TOPIC, payload: numbered(7) },
    ]);
    const lines = await worker.waitForStdoutLines(2);
    assert.deepEqual(lines.map((line) => JSON.parse(line).time), [
      "2021-07-06T12:55:00+00:00",
      timeOf(7),
    ]);
    assert.equal(lines[0], '{"time":"2021-07-06T12:55:00+00:00","data":{"v":{"y":2}}}');
    const deadLetters = await eventually("three dead letters", async () => {
      const found = await readLines(`${dir}/dead-letter.jsonl`);
      return found.length >= 3 ? found.map((line) => JSON.parse(line)) : undefined;
    });
    assert.equal(deadLetters.length, 3);
    assert.deepEqual(deadLetters.map((letter) => letter.code), [
      "invalid_json",
      "invalid_utf8",
      "missing_vid",
    ]);
    assert.equal(deadLetters[0].payload, "{not json");
    assert.equal(deadLetters[0].topic, TOPIC);
    assert.ok(!Number.isNaN(Date.parse(deadLetters[0].received_at)));
    assert.equal(deadLetters[1].payload_encoding, "base64");
    assert.equal(deadLetters[1].payload, btoa(String.fromCharCode(...invalidUtf8)));
    assert.deepEqual(JSON.parse(deadLetters[2].payload), { _d: "calc", x: 1 });
    assert.match(
      worker.stderrLines().join("\n"),
      /Rejected a payload from a\/b827eb2bb2a9\/u\/data/,
    );
  },
});

integrationTest({
  name: "SIGTERM mid-stream exits 0, and after a restart every QoS 1 message has been delivered",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    const filePath = `${dir}/readings.jsonl`;
    const env = {
      ...testWorkerEnv(broker, dir),
      SINKS: "file",
      FILE_PATH: filePath,
      LOG_LEVEL: "info",
    };
    const total = 400;
    const messages = Array.from(
      { length: total },
      (_, i) => ({ topic: TOPIC, payload: numbered(i) }),
    );
    {
      await using worker = startWorker(env);
      await worker.waitForStderr(SUBSCRIBED);
      const publishing = publish(broker.url, messages.slice(0, 200));
      await eventually(
        "the first records",
        async () => (await readLines(filePath)).length > 20 || undefined,
      );
      worker.kill("SIGTERM");
      await expectExit(worker, 0);
      await publishing;
    }
    // Published while the worker is away: the broker keeps them in the persistent session.
    await publish(broker.url, messages.slice(200));
    await using restarted = startWorker(env);
    const lines = await allDelivered(filePath, total);
    const times = new Set(lines.map((line) => JSON.parse(line).time));
    for (let i = 0; i < total; i++) assert.ok(times.has(timeOf(i)), `record ${i} is missing`);
    await restarted.stop();
  },
});

integrationTest({
  name: "after a clean stop, a restart delivers nothing twice: the sinks' progress was written",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    const filePath = `${dir}/readings.jsonl`;
    const env = { ...testWorkerEnv(broker, dir), SINKS: "file", FILE_PATH: filePath };
    const total = 50;
    const messages = Array.from(
      { length: total },
      (_, i) => ({ topic: TOPIC, payload: numbered(i) }),
    );
    {
      await using worker = startWorker(env);
      await worker.waitForStderr(SUBSCRIBED);
      await publish(broker.url, messages);
      await allDelivered(filePath, total);
      // At once: the last acknowledgement is still waiting for a commit to ride in.
      worker.kill("SIGTERM");
      await expectExit(worker, 0);
    }
    await using restarted = startWorker(env);
    await restarted.waitForStderr(SUBSCRIBED);
    await publish(broker.url, [{ topic: TOPIC, payload: numbered(total) }]);
    const lines = await allDelivered(filePath, total + 1);
    assert.equal(lines.length, total + 1, "a record delivered before the stop came again");
    await restarted.stop();
  },
});

integrationTest({
  name: "SIGKILL mid-stream loses nothing: after a restart every message is delivered",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    const filePath = `${dir}/readings.jsonl`;
    const env = {
      ...testWorkerEnv(broker, dir),
      SINKS: "file",
      FILE_PATH: filePath,
      LOG_LEVEL: "info",
    };
    const total = 600;
    const messages = Array.from(
      { length: total },
      (_, i) => ({ topic: TOPIC, payload: numbered(i) }),
    );
    {
      await using worker = startWorker(env);
      await worker.waitForStderr(SUBSCRIBED);
      const publishing = publish(broker.url, messages);
      await eventually(
        "the first records",
        async () => (await readLines(filePath)).length > 50 || undefined,
      );
      worker.kill("SIGKILL");
      await worker.status;
      await publishing;
    }
    await using restarted = startWorker(env);
    const lines = await allDelivered(filePath, total);
    for (const line of lines) JSON.parse(line); // no torn line survives the crash
    const times = new Set(lines.map((line) => JSON.parse(line).time));
    for (let i = 0; i < total; i++) assert.ok(times.has(timeOf(i)), `record ${i} is missing`);
    // Numbers survive digit for digit across the spool and the restart.
    assert.ok(lines.some((line) => line.includes('"E":18446744073709551000')));
    await restarted.stop();
  },
});

integrationTest({
  name:
    "SIGKILL while draining a backlog kept in line files: after a restart every message is delivered",
  async fn() {
    await using broker = await startBroker({ extraConfig: "max_queued_messages 0" });
    await using dir = await tempDir();
    const filePath = `${dir}/readings.jsonl`;
    const env = {
      ...testWorkerEnv(broker, dir),
      SINKS: "file",
      FILE_PATH: filePath,
      LOG_LEVEL: "info",
    };
    // About 1 KB a record: a burst of the backlog makes a chunk large enough for a line file.
    const note = "x".repeat(1000);
    const total = 3000;
    const messages = Array.from({ length: total }, (_, i) => ({
      topic: TOPIC,
      payload: `{"t":${1625576100 + i},"r":[{"_vid":"dse-1","P":${i},"note":"${note}"}]}`,
    }));
    {
      // Subscribed once, so that the broker keeps the backlog for the worker's session.
      await using worker = startWorker(env);
      await worker.waitForStderr(SUBSCRIBED);
      worker.kill("SIGTERM");
      await expectExit(worker, 0);
    }
    await publish(broker.url, messages);
    {
      await using worker = startWorker(env);
      await eventually(
        "the first records",
        async () => (await readLines(filePath)).length > 100 || undefined,
      );
      worker.kill("SIGKILL");
      await worker.status;
    }
    assert.ok(
      [...Deno.readDirSync(`${dir}/spool.db-lines`)].length > 0,
      "the backlog's bursts were kept in line files",
    );
    await using restarted = startWorker(env);
    const lines = await allDelivered(filePath, total);
    const numbers = new Set(lines.map((line) => JSON.parse(line).data["dse-1"].P));
    for (let i = 0; i < total; i++) assert.ok(numbers.has(i), `record ${i} is missing`);
    assert.ok(lines.every((line) => line.includes(note)), "every record arrives whole");
    await restarted.stop();
  },
});

integrationTest({
  name: "a broker restart: the worker reconnects and goes on",
  async fn() {
    await using broker = await startBroker({ persistence: true });
    await using dir = await tempDir();
    await using worker = startWorker(testWorkerEnv(broker, dir));
    await worker.waitForStderr(SUBSCRIBED);
    await publish(broker.url, [{ topic: TOPIC, payload: numbered(1) }]);
    await worker.waitForStdoutLines(1);
    await broker.restart();
    await worker.waitForStderr(/Connection to .* lost/);
    await eventually("a second connection", () => {
      const connects = worker.stderrLines().filter((line) => /Connected to/.test(line));
      return connects.length >= 2 || undefined;
    });
    await publish(broker.url, [{ topic: TOPIC, payload: numbered(2) }]);
    const lines = await worker.waitForStdoutLines(2);
    assert.equal(JSON.parse(lines[1]).time, timeOf(2));
  },
});

integrationTest({
  name: "a broker that lost the session: the worker subscribes again and goes on",
  async fn() {
    await using broker = await startBroker({ persistence: false });
    await using dir = await tempDir();
    await using worker = startWorker(testWorkerEnv(broker, dir));
    await worker.waitForStderr(SUBSCRIBED);
    await broker.restart();
    await worker.waitForStderr(/did not keep the session; subscribing again/);
    await eventually("a second subscription", () => {
      const subscribed = worker.stderrLines().filter((line) => SUBSCRIBED.test(line));
      return subscribed.length >= 2 || undefined;
    });
    await publish(broker.url, [{ topic: TOPIC, payload: numbered(3) }]);
    const [line] = await worker.waitForStdoutLines(1);
    assert.equal(JSON.parse(line).time, timeOf(3));
  },
});

integrationTest({
  name: "MQTT 5 with a persistent session: messages published while the worker is away arrive",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    const env = { ...testWorkerEnv(broker, dir), MQTT_PROTOCOL_VERSION: "5" };
    {
      await using worker = startWorker(env);
      await worker.waitForStderr(SUBSCRIBED);
      assert.equal((await worker.stop()).code, 0);
    }
    await publish(broker.url, [{ topic: TOPIC, payload: numbered(5) }], { protocolVersion: 5 });
    await using worker = startWorker(env);
    const [line] = await worker.waitForStdoutLines(1);
    assert.equal(JSON.parse(line).time, timeOf(5));
  },
});

integrationTest({
  name: "MQTT over WebSockets (ws://) delivers records",
  async fn() {
    await using broker = await startBroker({ websockets: true });
    await using dir = await tempDir();
    await using worker = startWorker({ ...testWorkerEnv(broker, dir), MQTT_URL: broker.wsUrl! });
    await worker.waitForStderr(SUBSCRIBED);
    await publish(broker.url, [{ topic: TOPIC, payload: SPEC_PAYLOAD }]);
    assert.deepEqual(await worker.waitForStdoutLines(1), [SPEC_RECORD]);
  },
});

for (const version of ["4", "5"]) {
  integrationTest({
    name: `two workers with one client id (MQTT ${
      version === "5" ? "5" : "3.1.1"
    }): the takeover is detected and logged as an error`,
    async fn() {
      await using broker = await startBroker();
      await using dirA = await tempDir();
      await using dirB = await tempDir();
      const shared = { MQTT_CLIENT_ID: "gridrelay-twin", MQTT_PROTOCOL_VERSION: version };
      await using first = startWorker({ ...testWorkerEnv(broker, dirA), ...shared });
      await first.waitForStderr(SUBSCRIBED);
      await using second = startWorker({ ...testWorkerEnv(broker, dirB), ...shared });
      await second.waitForStderr(SUBSCRIBED);
      await first.waitForStderr(
        /another client is connected with client id gridrelay-twin/,
        30_000,
      );
    },
  });
}

integrationTest({
  name:
    "a second signal during a long shutdown exits at once; the record stays spooled for the next start",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    const hanging = new URL("./fixtures/sinks/hanging_sink.ts", import.meta.url).pathname;
    const env = { ...testWorkerEnv(broker, dir), SINKS: hanging, SHUTDOWN_TIMEOUT_MS: "60000" };
    {
      await using worker = startWorker(env);
      await worker.waitForStderr(SUBSCRIBED);
      await publish(broker.url, [{ topic: TOPIC, payload: numbered(9) }]);
      await worker.waitForStderr(/hanging sink received 1 record/);
      worker.kill("SIGTERM");
      await worker.waitForStderr(/Shutting down/);
      // Well past the moment in which a repeat counts as the same signal.
      await new Promise((resolve) => setTimeout(resolve, 700));
      worker.kill("SIGTERM");
      await expectExit(worker, 143);
      assert.match(worker.stderrLines().join("\n"), /Second SIGTERM: exiting at once/);
    }
    // The record was spooled before the exit: a worker with a sink that works delivers it.
    await using next = startWorker({ ...testWorkerEnv(broker, dir), SINKS: "stdout" });
    const [line] = await next.waitForStdoutLines(1);
    assert.equal(JSON.parse(line).time, timeOf(9));
  },
});

integrationTest({
  name: "QoS 2: every message is delivered once the worker restarts after a SIGKILL",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    const filePath = `${dir}/readings.jsonl`;
    const env = {
      ...testWorkerEnv(broker, dir),
      SINKS: "file",
      FILE_PATH: filePath,
      LOG_LEVEL: "info",
      MQTT_QOS: "2",
    };
    const total = 300;
    const messages = Array.from(
      { length: total },
      (_, i) => ({ topic: TOPIC, payload: numbered(i), qos: 2 as const }),
    );
    {
      await using worker = startWorker(env);
      await worker.waitForStderr(SUBSCRIBED);
      const publishing = publish(broker.url, messages);
      await eventually(
        "the first records",
        async () => (await readLines(filePath)).length > 20 || undefined,
      );
      worker.kill("SIGKILL");
      await worker.status;
      await publishing;
    }
    await using restarted = startWorker(env);
    const lines = await allDelivered(filePath, total);
    const times = new Set(lines.map((line) => JSON.parse(line).time));
    for (let i = 0; i < total; i++) assert.ok(times.has(timeOf(i)), `record ${i} is missing`);
    await restarted.stop();
  },
});

integrationTest({
  name: "QoS 0 subscriptions deliver records too",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    await using worker = startWorker({ ...testWorkerEnv(broker, dir), MQTT_QOS: "0" });
    await worker.waitForStderr(/Subscribed to a\/\+\/u\/data at QoS 0/);
    await publish(broker.url, [{ topic: TOPIC, payload: SPEC_PAYLOAD, qos: 0 }]);
    assert.deepEqual(await worker.waitForStdoutLines(1), [SPEC_RECORD]);
  },
});

integrationTest({
  name: "SIGTERM while the broker is down still shuts down cleanly with exit code 0",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    await using worker = startWorker(testWorkerEnv(broker, dir));
    await worker.waitForStderr(SUBSCRIBED);
    await broker.kill();
    await worker.waitForStderr(/Connection to .* lost/);
    worker.kill("SIGTERM");
    await expectExit(worker, 0);
    assert.match(worker.stderrLines().join("\n"), /Stopped cleanly/);
  },
});
