/**
 * A full spool pauses intake without hurting the connection: the worker holds
 * back acknowledgements, the broker keeps the rest in the session, pings keep
 * flowing, and everything is delivered once the sink recovers. A saturated
 * intake stops the connector reading, so a backlog waits in the broker, not
 * in the worker's memory.
 */

import assert from "node:assert/strict";
import { parseConfig } from "../src/config.ts";
import { Connector } from "../src/connector.ts";
import { createWorkerMetrics } from "../src/metrics.ts";
import { startBroker } from "./_helpers/broker.ts";
import { publish } from "./_helpers/mqtt.ts";
import { integrationTest } from "./_helpers/require.ts";
import { startWorker } from "./_helpers/worker.ts";
import { eventually, readLines } from "./_helpers/files.ts";

const TOPIC = "a/b827eb2bb2a9/u/data";

function payload(i: number): string {
  return `{"t":${1625576100 + i},"r":[{"_vid":"dse-1","P":${i},"note":"${"x".repeat(60)}"}]}`;
}

/**
 * A connector (keepalive 5 s) whose intake turns saturated at the first
 * message and stays so until the test sets `intake.busy` to false. `record`
 * gets each message's `r[0].P` and returns how many have arrived.
 */
async function busyAfterFirst(
  env: Record<string, string>,
  clientId: string,
  record: (n: number) => number,
): Promise<{ connector: Connector; intake: { busy: boolean } }> {
  const config = parseConfig({ MQTT_KEEPALIVE_S: "5", ...env });
  const intake = { busy: false };
  const connector = new Connector({
    ...config.mqtt,
    clientId,
    metrics: createWorkerMetrics(),
    busy: () => intake.busy,
  }, (message) => {
    const count = record(JSON.parse(new TextDecoder().decode(message.payload)).r[0].P);
    // Saturated from the first message on, until the test says otherwise.
    if (count === 1) intake.busy = true;
    return Promise.resolve();
  });
  await connector.start();
  return { connector, intake };
}

async function lineCount(path: string): Promise<number> {
  return (await readLines(path)).length;
}

integrationTest({
  name:
    "a full spool holds back acknowledgements, keeps the connection alive, and resumes when the sink recovers",
  async fn() {
    await using broker = await startBroker();
    const dir = await Deno.makeTempDir({ prefix: "gridrelay-backpressure-" });
    try {
      const gate = `${dir}/gate`;
      const output = `${dir}/delivered.jsonl`;
      await using worker = startWorker({
        MQTT_URL: broker.url,
        MQTT_CLIENT_ID: "gridrelay-backpressure",
        MQTT_KEEPALIVE_S: "1",
        DATA_DIR: `${dir}/data`,
        SINKS: new URL("./fixtures/sinks/gated_sink.ts", import.meta.url).pathname,
        SPOOL_MAX_BYTES: "1024",
        LOG_FORMAT: "json",
        GATE_FILE: gate,
        GATED_OUTPUT: output,
      }, {
        denoFlags: ["--allow-net", "--allow-read", "--allow-write", "--allow-env", "--allow-sys"],
      });
      await worker.waitForStderr(/Subscribed to/);

      const total = 60;
      await publish(
        broker.url,
        Array.from({ length: total }, (_, i) => ({ topic: TOPIC, payload: payload(i) })),
      );
      await worker.waitForStderr(/The spool is full/);

      // While paused, the connection stays healthy: the worker keeps pinging (keepalive 1 s).
      const pingsBefore = broker.log().split("\n").filter((line) =>
        line.includes("PINGREQ from gridrelay-backpressure")
      ).length;
      await eventually(
        "three more keepalive pings from the paused worker",
        () =>
          broker.log().split("\n").filter((line) =>
              line.includes("PINGREQ from gridrelay-backpressure")
            ).length >= pingsBefore + 3 || undefined,
      );
      assert.doesNotMatch(worker.stderrLines().join("\n"), /Connection to .* lost/);
      assert.equal(await lineCount(output), 0);

      // The sink recovers: the spool drains, intake resumes, every message is delivered.
      await Deno.writeTextFile(gate, "");
      await eventually(
        `${total} records delivered`,
        async () =>
          await lineCount(output) >= total || undefined,
      );
      await worker.waitForStderr(/The spool has room again/);
      const times = new Set(
        (await Deno.readTextFile(output)).split("\n").filter(Boolean).map((line) =>
          JSON.parse(line).time
        ),
      );
      assert.equal(times.size, total);
      assert.equal((await worker.stop()).code, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

integrationTest({
  name:
    "while the intake is saturated the connector reads no further message, then reads on without losing one",
  async fn() {
    await using broker = await startBroker();
    const received: number[] = [];
    const { connector, intake } = await busyAfterFirst(
      { MQTT_URL: broker.url },
      "gridrelay-busy",
      (n) => received.push(n),
    );
    try {
      const total = 50;
      await publish(
        broker.url,
        Array.from({ length: total }, (_, i) => ({ topic: TOPIC, payload: payload(i) })),
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.deepEqual(received, [0], "nothing more is read while the intake is saturated");

      intake.busy = false;
      await eventually(
        "every message once busy ends",
        () => received.length === total ? true : undefined,
        {
          progress: () => `${received.length} of ${total}`,
        },
      );
      assert.deepEqual(received, Array.from({ length: total }, (_, i) => i));
    } finally {
      await connector.stop(AbortSignal.timeout(5000));
    }
  },
});

integrationTest({
  name: "a broker restart while reading is paused loses no message",
  async fn() {
    await using broker = await startBroker({ persistence: true });
    const received = new Set<number>();
    const { connector, intake } = await busyAfterFirst(
      { MQTT_URL: broker.url, MQTT_RECONNECT_MIN_MS: "100", MQTT_RECONNECT_MAX_MS: "200" },
      "gridrelay-busy-restart",
      (n) => received.add(n).size,
    );
    try {
      const total = 30;
      await publish(
        broker.url,
        Array.from({ length: total }, (_, i) => ({ topic: TOPIC, payload: payload(i) })),
      );
      await eventually("the first message", () => received.size >= 1 || undefined);
      await broker.restart();
      await eventually("reconnected", () => connector.ready || undefined);
      intake.busy = false;
      await eventually(
        "every message, at least once",
        () => received.size === total ? true : undefined,
        {
          progress: () => `${received.size} of ${total}`,
        },
      );
    } finally {
      await connector.stop(AbortSignal.timeout(5000));
    }
  },
});
