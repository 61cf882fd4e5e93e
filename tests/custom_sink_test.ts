/**
 * User-written sinks end to end: the worker as a subprocess loads a sink
 * module named in SINKS, retries it when it throws, keeps it from holding up
 * stdout, and refuses to start (exit 2) when the module is not usable.
 */

import assert from "node:assert/strict";
import { startBroker } from "./_helpers/broker.ts";
import { publish } from "./_helpers/mqtt.ts";
import { integrationTest } from "./_helpers/require.ts";
import { startWorker, type WorkerProcess } from "./_helpers/worker.ts";
import { eventually, readLines, tempDir } from "./_helpers/files.ts";

const TOPIC = "a/b827eb2bb2a9/u/data";
const SUBSCRIBED = /Subscribed to/;
const FIXTURES = new URL("./fixtures/sinks/", import.meta.url);
const MOD_TS = new URL("../mod.ts", import.meta.url);
const README = new URL("../README.md", import.meta.url);

/** A payload whose record is recognisable by `t`; its E does not fit a double. */
function numbered(i: number): string {
  return `{"t":${1625576100 + i},"r":[{"_vid":"dse-1","E":184467440737095${51000 + i},"P":${i}}]}`;
}

/** The record the worker makes of `numbered(i)`, byte for byte. */
function recordOf(i: number): string {
  const time = new Date((1625576100 + i) * 1000).toISOString().replace(".000Z", "+00:00");
  return `{"time":"${time}","data":{"dse-1":{"E":184467440737095${51000 + i},"P":${i}}}}`;
}

function recordsOf(count: number): string[] {
  return Array.from({ length: count }, (_, i) => recordOf(i));
}

function messages(count: number) {
  return Array.from({ length: count }, (_, i) => ({ topic: TOPIC, payload: numbered(i) }));
}

function linesIn(path: string, count: number): Promise<string[]> {
  return eventually(`${count} lines in ${path}`, async () => {
    const lines = await readLines(path);
    return lines.length >= count ? lines : undefined;
  });
}

async function expectExit(worker: WorkerProcess, code: number): Promise<string> {
  const status = await worker.status;
  const stderr = worker.stderrLines().join("\n");
  assert.equal(status.code, code, `expected exit ${code}, got ${status.code}; stderr:\n${stderr}`);
  return stderr;
}

/** A worker that fails while creating its sinks never needs to reach a broker. */
function startWithSinks(sinks: string, cwd: string): WorkerProcess {
  return startWorker(
    { MQTT_URL: "mqtt://127.0.0.1:1", DATA_DIR: `${cwd}/data`, SINKS: sinks, LOG_FORMAT: "json" },
    { cwd },
  );
}

integrationTest({
  name:
    "a custom sink that throws on its first calls gets every record, in order, and stdout is not held up",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    const output = `${dir}/flaky.jsonl`;
    await using worker = startWorker({
      MQTT_URL: broker.url,
      DATA_DIR: `${dir}/data`,
      SINKS: `stdout,${new URL("flaky_sink.ts", FIXTURES).pathname}`,
      STDOUT_FORMAT: "jsonl",
      LOG_FORMAT: "json",
      FLAKY_FAILURES: "3",
      FLAKY_OUTPUT: output,
    });
    await worker.waitForStderr(SUBSCRIBED);
    const total = 10;
    await publish(broker.url, messages(total));

    assert.deepEqual(await worker.waitForStdoutLines(total), recordsOf(total));
    await worker.waitForStderr(/Delivery to sink flaky failed .*flaky sink: outage, call 1 of 3/);
    assert.deepEqual(await linesIn(output, total), recordsOf(total));
    await worker.waitForStderr(/Delivery to sink flaky recovered after 3 failed attempt/);
    assert.equal((await worker.stop()).code, 0);
    assert.deepEqual(await readLines(output), recordsOf(total), "each record once");
  },
});

integrationTest({
  name: "the README's example sink, as written there, receives every record",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    const readme = await Deno.readTextFile(README);
    const section = readme.slice(readme.indexOf("### Custom sinks"));
    const example = section.match(/```ts\n([\s\S]*?)```/)![1];
    assert.ok(example.split("\n").length <= 14, "the example stays about ten lines");
    await Deno.mkdir(`${dir}/sinks`);
    await Deno.writeTextFile(
      `${dir}/sinks/my_sink.ts`,
      example.replace('"../mod.ts"', JSON.stringify(MOD_TS.href)),
    );
    await using worker = startWorker({
      MQTT_URL: broker.url,
      DATA_DIR: `${dir}/data`,
      SINKS: "./sinks/my_sink.ts",
      LOG_FORMAT: "json",
    }, { cwd: dir });
    await worker.waitForStderr(SUBSCRIBED);
    await publish(broker.url, messages(3));
    assert.deepEqual(await linesIn(`${dir}/data/copy.jsonl`, 3), recordsOf(3));
  },
});

integrationTest({
  name: "a custom sink path that does not exist: exit code 2 and a message naming the path",
  requires: [],
  async fn() {
    await using dir = await tempDir();
    await using worker = startWithSinks("stdout,./sinks/nowhere.ts", dir);
    const stderr = await expectExit(worker, 2);
    assert.match(
      stderr,
      /Cannot load the sink module \.\/sinks\/nowhere\.ts \(file:\/\/.*\/sinks\/nowhere\.ts\)/,
    );
    assert.match(stderr, /Check the path in SINKS/);
  },
});

integrationTest({
  name: "a custom sink module without a default export: exit code 2 and a message saying so",
  requires: [],
  async fn() {
    await using dir = await tempDir();
    const path = new URL("no_default.ts", FIXTURES).pathname;
    await using worker = startWithSinks(path, dir);
    const stderr = await expectExit(worker, 2);
    assert.match(
      stderr,
      /The sink module \/.*\/no_default\.ts \(file:.*\) has no default export; export default/,
    );
  },
});

integrationTest({
  name: "a custom sink without a write function: exit code 2 and a message saying so",
  requires: [],
  async fn() {
    await using dir = await tempDir();
    const path = new URL("no_write.ts", FIXTURES).pathname;
    await using worker = startWithSinks(path, dir);
    const stderr = await expectExit(worker, 2);
    assert.match(stderr, /The sink from \/.*\/no_write\.ts \(file:.*\) has no write function/);
  },
});
