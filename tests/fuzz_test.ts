/**
 * A live fuzz run (issue #5): a few thousand mutated payloads — valid ones
 * with bytes flipped, cut off, nested too deep, oversized, not UTF-8, plain
 * binary — published through a real mosquitto into the worker subprocess.
 * Each goes on its own topic and the worker runs with RECORD_META=topic, so
 * every record and dead letter maps back to the message it came from.
 */

import assert from "node:assert/strict";
import { startBroker } from "./_helpers/broker.ts";
import { type OutgoingMessage, publish } from "./_helpers/mqtt.ts";
import { freePort, LOOPBACK } from "./_helpers/ports.ts";
import { integrationTest } from "./_helpers/require.ts";
import { startWorker } from "./_helpers/worker.ts";
import { Intake } from "../src/intake.ts";
import { resetLogging, setupLogging } from "../src/logging.ts";
import { createWorkerMetrics } from "../src/metrics.ts";
import { createPipeline, type PipelineResult } from "../src/pipeline.ts";
import { Spool } from "../src/spool.ts";
import { eventually, readLines, tempDir } from "./_helpers/files.ts";

const MESSAGES = 3000;
const MAX_PAYLOAD_BYTES = 262144;
const HUGE_BYTES = 32 * 1024 * 1024;
/** A behaviour check, not a benchmark: keeping the huge payload's copies would fail it. */
const MAX_RSS_BYTES = 300 * 1024 * 1024;

const encoder = new TextEncoder();

/** xorshift32: the same payloads on every run, so a failure can be replayed. */
function randomSource(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 4294967296;
  };
}

/** Builds the fuzz corpus: each entry names its kind, for the failure messages. */
function fuzzPayloads(count: number, seed: number): { kind: string; payload: Uint8Array }[] {
  const random = randomSource(seed);
  const below = (n: number) => Math.floor(random() * n);
  const pick = <T>(items: readonly T[]): T => items[below(items.length)];

  const reading = (): string => {
    const vid = pick(['"strato-1"', '"dse-1"', "7", '""', "null", '"__proto__"', '"constructor"']);
    const fields = Array.from(
      { length: below(5) },
      () =>
        `"${pick(["P", "E", "_x", "V_L3", "toString"])}":${
          pick(["1", "229.70000000000002", "18446744073709551615", "null", "NaN", '"s"', "[1,2]"])
        }`,
    );
    if (random() < 0.1) return pick(["1", '"x"', "[]", "null"]);
    const vidMember = random() < 0.85 ? [`"_vid":${vid}`] : [];
    return "{" + [`"_d":"${pick(["logger", "dse855"])}"`, ...vidMember, ...fields].join(",") + "}";
  };
  const valid = (): string =>
    `{"t":${pick(["1625576100", "1625576100.25", "0", "253402300799"])},"r":[${
      Array.from({ length: below(5) }, reading).join(",")
    }],"m":{"snap_rev":670}}`;

  const kinds: [string, number, () => Uint8Array][] = [
    ["valid", 20, () => encoder.encode(valid())],
    ["bytes flipped", 20, () => {
      const bytes = encoder.encode(valid());
      for (let n = 1 + below(4); n > 0; n--) bytes[below(bytes.length)] = below(256);
      return bytes;
    }],
    ["truncated", 15, () => {
      const bytes = encoder.encode(valid());
      return bytes.slice(0, below(bytes.length));
    }],
    ["nested deeply", 8, () => {
      const depth = 30 + below(2000);
      return encoder.encode(
        pick([
          "[".repeat(depth) + "]".repeat(depth),
          `{"t":1,"r":[{"_vid":"m","a":${"[".repeat(depth)}${"]".repeat(depth)}}]}`,
          "{" + '"a":{'.repeat(depth) + "}".repeat(depth + 1),
          "[".repeat(depth),
        ]),
      );
    }],
    ["oversized", 1, () =>
      encoder.encode(
        `{"t":1625576100,"r":[],"m":"${"x".repeat(MAX_PAYLOAD_BYTES + below(200_000))}"}`,
      )],
    ["invalid UTF-8", 8, () => {
      const bytes = encoder.encode(valid());
      const at = below(bytes.length + 1);
      const bad = pick([[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0x80], [0xe2, 0x82], [0xf5]]);
      return new Uint8Array([...bytes.subarray(0, at), ...bad, ...bytes.subarray(at)]);
    }],
    ["binary", 10, () => Uint8Array.from({ length: below(300) }, () => below(256))],
    [
      "not an object",
      4,
      () => encoder.encode(pick(["", "[]", "1", '"s"', "null", "true", " ", "\ufeff{}", "{}"])),
    ],
    [
      "too many readings",
      1,
      () => encoder.encode(`{"t":1625576100,"r":[${Array(10_001).fill("{}").join(",")}]}`),
    ],
    ["hostile keys", 5, () =>
      encoder.encode(
        `{"t":1625576100,"r":[{"_vid":"__proto__","constructor":{"prototype":1},` +
          `"__proto__":{"polluted":true}},{"_vid":"hasOwnProperty","valueOf":2}],"__proto__":3}`,
      )],
  ];
  const total = kinds.reduce((sum, [, weight]) => sum + weight, 0);
  return Array.from({ length: count }, () => {
    let roll = below(total);
    for (const [kind, weight, make] of kinds) {
      if (roll < weight) return { kind, payload: make() };
      roll -= weight;
    }
    throw new Error("unreachable");
  });
}

/**
 * The resident set size of a process, from /proc/<pid>/status (Linux). Read
 * through `cat`: Deno lets a program read another process's /proc files only
 * under --allow-all, which the test task does not grant.
 */
async function residentBytes(pid: number): Promise<number> {
  const output = await new Deno.Command("cat", { args: [`/proc/${pid}/status`], stdin: "null" })
    .output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const status = new TextDecoder().decode(output.stdout);
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  assert.ok(match, `no VmRSS in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

async function httpGet(port: number, path: string): Promise<{ status: number; text: string }> {
  const response = await fetch(`http://${LOOPBACK}:${port}${path}`);
  return { status: response.status, text: await response.text() };
}

function metric(text: string, name: string): number {
  const line = text.split("\n").find((line) => line.startsWith(name + " "));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

integrationTest({
  name:
    "live fuzz: 3000 hostile payloads through mosquitto are each accounted for once; the worker stays up, subscribed, and small",
  async fn() {
    await using broker = await startBroker({
      logTypes: ["error", "warning", "notice"],
      // mosquitto queues at most 1000 messages per client by default and drops the rest
      // while the worker catches up; this burst is 3000, and every one must arrive.
      extraConfig: "max_queued_messages 0",
    });
    await using dir = await tempDir();
    const filePath = `${dir}/readings.jsonl`;
    const deadLetterPath = `${dir}/dead-letter.jsonl`;
    const httpPort = freePort();
    await using worker = startWorker({
      MQTT_URL: broker.url,
      DATA_DIR: dir,
      SINKS: "file",
      FILE_PATH: filePath,
      DEAD_LETTER_PATH: deadLetterPath,
      RECORD_META: "topic",
      MAX_PAYLOAD_BYTES: String(MAX_PAYLOAD_BYTES),
      LOG_FORMAT: "json",
      LOG_LEVEL: "info",
      HTTP_PORT: String(httpPort),
      SHUTDOWN_TIMEOUT_MS: "5000",
    });
    await worker.waitForStderr(/Subscribed to/);
    const rssBefore = await residentBytes(worker.pid);

    const corpus = fuzzPayloads(MESSAGES, 20260505);
    // One far past the limit, as binary: it must cost the worker no more than a
    // MAX_PAYLOAD_BYTES prefix in the dead letters (mqtt.js still receives it whole).
    corpus[MESSAGES / 2] = { kind: "oversized", payload: new Uint8Array(HUGE_BYTES).fill(0xfe) };
    const topicOf = (i: number) => `a/fuzz-${i}/u/data`;
    // What the worker must make of each message: the same pure pipeline, run here.
    const pipeline = createPipeline({
      transform: "ammp",
      missingVid: "reject",
      maxPayloadBytes: MAX_PAYLOAD_BYTES,
      maxDepth: 32,
      maxReadings: 10000,
      recordMeta: ["topic"],
      topicNodeLevel: 1,
    });
    const expected: PipelineResult[] = corpus.map(({ payload }, i) =>
      pipeline({ topic: topicOf(i), payload, receivedAt: 0 })
    );
    const messages: OutgoingMessage[] = corpus.map(({ payload }, i) => ({
      topic: topicOf(i),
      payload,
    }));
    const known = '{"t":1625576100,"r":[{"_vid":"last","P":1}]}';
    messages.push({ topic: "a/fuzz-last/u/data", payload: known });
    await publish(broker.url, messages);

    // Messages reach the file sink in order, so the last one's record means every
    // message before it is in the spool; dead letters follow on their own writer.
    await eventually(
      "the known-good last message's record",
      async () => {
        const lines = await readLines(filePath);
        return lines.some((line) => line.includes('"a/fuzz-last/u/data"')) ? true : undefined;
      },
      {
        timeoutMs: 30_000,
        progress: () =>
          `the worker's stderr ends:\n${worker.stderrLines().slice(-5).join("\n")}\n` +
          `the broker's log ends:\n${broker.log().slice(-2000)}`,
      },
    );
    const expectedDeadLetters = expected.reduce((sum, result) => sum + result.rejections.length, 0);
    let seen = 0;
    const deadLetters = await eventually(
      `${expectedDeadLetters} dead letters`,
      async () => {
        const lines = await readLines(deadLetterPath);
        seen = lines.length;
        return lines.length >= expectedDeadLetters ? lines : undefined;
      },
      {
        timeoutMs: 30_000,
        progress: () => `${seen} so far; the broker's log ends:\n${broker.log().slice(-2000)}`,
      },
    );
    const records = await readLines(filePath);

    // Every message exactly once: its record, or its whole-payload dead letter; the
    // readings rejected inside an accepted payload come on top, one dead letter each.
    const recordsByTopic = new Map<string, string[]>();
    for (const line of records) {
      const topic = JSON.parse(line).topic as string;
      recordsByTopic.set(topic, [...recordsByTopic.get(topic) ?? [], line]);
    }
    const deadLettersByTopic = new Map<string, { code: string; index?: number }[]>();
    for (const line of deadLetters) {
      const deadLetter = JSON.parse(line);
      const list = deadLettersByTopic.get(deadLetter.topic) ?? [];
      list.push({ code: deadLetter.code, index: deadLetter.index });
      deadLettersByTopic.set(deadLetter.topic, list);
    }
    for (let i = 0; i < corpus.length; i++) {
      const topic = topicOf(i);
      const want = expected[i];
      const what = `message ${i} (${corpus[i].kind})`;
      assert.deepEqual(recordsByTopic.get(topic) ?? [], want.records, `${what}: its records`);
      assert.deepEqual(
        (deadLettersByTopic.get(topic) ?? []).map(({ code, index }) => `${code}@${index ?? "-"}`),
        want.rejections.map(({ reason, index }) => `${reason}@${index ?? "-"}`),
        `${what}: its dead letters`,
      );
      const whole = (deadLettersByTopic.get(topic) ?? []).filter((d) => d.index === undefined);
      assert.equal((recordsByTopic.get(topic) ?? []).length + whole.length, 1, what);
    }
    assert.equal(records.length, corpus.length + 1 - countWhole(expected));
    assert.equal(deadLetters.length, expectedDeadLetters);
    // A dead letter holds at most MAX_PAYLOAD_BYTES of payload, base64-encoded when binary.
    const longest = Math.max(...deadLetters.map((line) => line.length));
    assert.ok(
      longest < (MAX_PAYLOAD_BYTES * 4) / 3 + 1024,
      `a dead letter of ${longest} characters`,
    );

    // Still up and subscribed: the last message came through, /readyz says so, the counters agree.
    assert.equal((await httpGet(httpPort, "/readyz")).status, 200);
    const metrics = (await httpGet(httpPort, "/metrics")).text;
    assert.equal(metric(metrics, "gridrelay_messages_received_total"), corpus.length + 1);
    for (const reason of new Set(expected.flatMap((r) => r.rejections.map((j) => j.reason)))) {
      const count = expected.flatMap((r) => r.rejections).filter((j) => j.reason === reason);
      assert.equal(
        metric(metrics, `gridrelay_rejected_total{reason="${reason}"}`),
        count.length,
        reason,
      );
    }
    const kinds = new Set(corpus.map(({ kind }) => kind));
    assert.equal(kinds.size, 10, `every kind of payload was sent: ${[...kinds]}`);

    const rssAfter = await residentBytes(worker.pid);
    assert.ok(
      rssAfter < MAX_RSS_BYTES,
      `the worker's RSS grew from ${mib(rssBefore)} to ${mib(rssAfter)}`,
    );
    console.log(
      `fuzz: ${corpus.length} messages, ${records.length} records, ${deadLetters.length} dead letters; ` +
        `worker RSS ${mib(rssBefore)} before, ${mib(rssAfter)} after`,
    );

    assert.equal((await worker.stop()).code, 0);
    assert.deepEqual(worker.stdoutLines(), [], "stdout carries records only, and SINKS=file");
    for (const line of worker.stderrLines()) JSON.parse(line);
  },
});

function countWhole(results: readonly PipelineResult[]): number {
  return results.filter((result) => result.records.length === 0).length;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

// mosquitto refuses topics with control characters, but MQTT allows them and other
// brokers pass them on: so this one drives the worker's own intake and logging directly.
Deno.test("a hostile topic cannot forge a log line or send terminal escapes, in pretty logs", async () => {
  await using dir = await tempDir();
  const topic =
    "a/x\n2026-01-01 00:00:00.000 +00:00 [ERR] gridrelay: forged\r\u001b[2J\u2028/u/data";
  for (const isTerminal of [false, true]) {
    const lines: string[] = [];
    setupLogging({
      level: "debug",
      format: "pretty",
      isTerminal,
      write: (line) => lines.push(line),
    });
    const spool = Spool.open({
      path: `${dir}/spool-${isTerminal}.db`,
      sinks: ["stdout"],
      maxBytes: 1 << 20,
    });
    try {
      const intake = new Intake({
        pipeline: createPipeline({
          transform: "ammp",
          missingVid: "reject",
          maxPayloadBytes: MAX_PAYLOAD_BYTES,
          maxDepth: 32,
          maxReadings: 10000,
          recordMeta: ["topic"],
          topicNodeLevel: 1,
        }),
        spool,
        metrics: createWorkerMetrics(),
      });
      await intake.accept({ topic, payload: encoder.encode("not json"), receivedAt: Date.now() });
      await intake.close();
    } finally {
      spool.close();
      resetLogging();
    }
    const warning = lines.find((line) => line.includes("Rejected a payload"));
    assert.ok(warning, lines.join(""));
    // One log call, one line: the topic's newline and carriage return are written escaped.
    assert.equal(warning.indexOf("\n"), warning.length - 1, JSON.stringify(warning));
    assert.ok(!/[\r\u0085\u2028\u2029]/.test(warning), JSON.stringify(warning));
    // The formatter's own colours are the only escape sequences; the topic's is written as text.
    assert.ok(!warning.includes("\u001b[2J"), JSON.stringify(warning));
    if (!isTerminal) assert.ok(!warning.includes("\u001b"), JSON.stringify(warning));
  }
});
