/**
 * The pipeline on its worker thread answers exactly as on the calling thread,
 * in order; small batches run on the calling thread; and the intake keeps
 * arrival order from either to the spool.
 */
import assert from "node:assert/strict";
import { Intake } from "../src/intake.ts";
import { createWorkerMetrics } from "../src/metrics.ts";
import { createPipeline, type PipelineOptions } from "../src/pipeline.ts";
import { outcomesOf } from "../src/pipeline_batch.ts";
import { PayloadBatch } from "../src/payload_batch.ts";
import { INLINE_MAX_BYTES, inlinePipeline, PipelineThread } from "../src/pipeline_thread.ts";
import type { Message } from "../src/record.ts";
import { Spool } from "../src/spool.ts";

const OPTIONS: PipelineOptions = {
  transform: "ammp",
  missingVid: "reject",
  maxPayloadBytes: 262144,
  maxDepth: 32,
  maxReadings: 10000,
  recordMeta: ["node_id", "received_at"],
  topicNodeLevel: 1,
};

/** Every batch crosses to the thread, however small: what the thread does is under test. */
const ALWAYS_THREAD = { inlineMaxBytes: 0 };

const encoder = new TextEncoder();

/** `messages` in a batch of `thread`'s, as the intake makes them. */
function batchOf(thread: PipelineThread, messages: readonly Message[]): PayloadBatch {
  const batch = thread.batch();
  for (const message of messages) batch.add(message);
  return batch;
}

function message(index: number, payload: string): Message {
  return {
    topic: `a/node${index % 3}/u/data`,
    payload: encoder.encode(payload),
    receivedAt: 1625576100000 + index,
  };
}

const PAYLOADS = [
  '{"t":1625576100,"r":[{"_vid":"dse-1","P":15983,"E":18446744073709551615,"x":null}]}',
  "not json",
  '{"t":1625576160.25,"r":[{"_d":"calc","P":1},42,{"_vid":"m","Q":1.50}]}',
  "[1,2]",
  '{"t":1625576220,"r":[]}',
];

Deno.test("the pipeline thread gives the same outcomes as the calling thread, in order", async () => {
  const messages = Array.from({ length: 60 }, (_, i) => message(i, PAYLOADS[i % PAYLOADS.length]));
  const thread = new PipelineThread(OPTIONS, ALWAYS_THREAD);
  try {
    const [onThread, here] = (await Promise.all([
      thread.run(batchOf(thread, messages)),
      inlinePipeline(createPipeline(OPTIONS)).run(PayloadBatch.of(messages)),
    ])).map(outcomesOf);
    assert.deepEqual(onThread, here);
    assert.equal(onThread[0].records.length, 1);
    assert.equal(onThread[1].rejections[0].reason, "invalid_json");
    assert.deepEqual(onThread[1].rejections[0].payload, encoder.encode("not json"));
  } finally {
    thread.close();
  }
});

Deno.test("batches sent one after the other come back one after the other", async () => {
  const thread = new PipelineThread(OPTIONS, ALWAYS_THREAD);
  try {
    const batches = Array.from(
      { length: 10 },
      (_, b) =>
        Array.from(
          { length: 5 },
          (_, i) => message(b * 5 + i, `{"t":${1625576100 + b * 5 + i},"r":[]}`),
        ),
    );
    const settled: number[] = [];
    await Promise.all(
      batches.map((batch, b) => thread.run(batchOf(thread, batch)).then(() => settled.push(b))),
    );
    assert.deepEqual(settled, batches.map((_, b) => b));
  } finally {
    thread.close();
  }
});

Deno.test("a payload over MAX_PAYLOAD_BYTES is rejected without crossing to the thread, in its place", async () => {
  const thread = new PipelineThread({ ...OPTIONS, maxPayloadBytes: 1024 }, ALWAYS_THREAD);
  try {
    const huge = { topic: "a/n/u/data", payload: new Uint8Array(4096).fill(0x20), receivedAt: 1 };
    const outcomes = outcomesOf(
      await thread.run(batchOf(thread, [message(0, PAYLOADS[0]), huge, message(2, PAYLOADS[4])])),
    );
    assert.equal(outcomes[0].records.length, 1);
    assert.equal(outcomes[1].rejections[0].reason, "payload_too_large");
    assert.equal(outcomes[1].records.length, 0);
    assert.equal(outcomes[2].records.length, 1);
    assert.deepEqual(outcomesOf(await thread.run(batchOf(thread, [huge]))), [outcomes[1]]);
  } finally {
    thread.close();
  }
});

Deno.test("a burst of a few payloads runs on the calling thread, without waiting for the thread", async () => {
  const thread = new PipelineThread(OPTIONS);
  try {
    const small = [message(0, PAYLOADS[0]), message(1, PAYLOADS[2])];
    let settled = false;
    const outcome = thread.run(batchOf(thread, small)).then((outcome) => {
      settled = true;
      return outcome;
    });
    // An answer from the thread needs a turn of the event loop; microtasks are not one.
    for (let turn = 0; turn < 5; turn++) await Promise.resolve();
    assert.equal(settled, true);
    const big = Array.from({ length: 40 }, (_, i) => message(i, PAYLOADS[0] + " ".repeat(512)));
    assert.ok(big.reduce((sum, m) => sum + m.payload.byteLength, 0) > INLINE_MAX_BYTES);
    let crossed = false;
    const bigOutcome = thread.run(batchOf(thread, big)).then((outcome) => {
      crossed = true;
      return outcome;
    });
    for (let turn = 0; turn < 5; turn++) await Promise.resolve();
    assert.equal(crossed, false, "a larger burst goes to the thread");
    const expected = inlinePipeline(createPipeline(OPTIONS));
    assert.deepEqual(
      outcomesOf(await outcome),
      outcomesOf(await expected.run(PayloadBatch.of(small))),
    );
    assert.deepEqual(
      outcomesOf(await bigOutcome),
      outcomesOf(await expected.run(PayloadBatch.of(big))),
    );
  } finally {
    thread.close();
  }
});

Deno.test("after close, the pipeline runs on the calling thread", async () => {
  const thread = new PipelineThread(OPTIONS, ALWAYS_THREAD);
  thread.close();
  const [outcome] = outcomesOf(await thread.run(batchOf(thread, [message(0, PAYLOADS[0])])));
  assert.equal(outcome.records.length, 1);
});

Deno.test("the intake spools bursts in arrival order, from the thread or not, each durable before its promise resolves", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pipeline_thread_test_" });
  const spool = Spool.open({ path: `${dir}/spool.db`, sinks: ["file"], maxBytes: 2 ** 30 });
  const thread = new PipelineThread({ ...OPTIONS, recordMeta: [] });
  try {
    const intake = new Intake({ pipeline: thread, spool, metrics: createWorkerMetrics() });
    const durable: Promise<void>[] = [];
    for (let i = 0; i < 300; i++) {
      // Every other burst of 50 is padded past INLINE_MAX_BYTES: it crosses to the thread, and
      // the small one after it, run here, must still reach the spool after it.
      const padding = Math.floor(i / 50) % 2 === 0 ? " ".repeat(512) : "";
      durable.push(
        intake.accept(
          message(i, `{"t":${1625576100 + i},"r":[{"_vid":"v","i":${i}}]}${padding}`),
        ),
      );
      // Several bursts: a new one starts after each macrotask.
      if (i % 50 === 49) await new Promise((resolve) => setTimeout(resolve, 0));
    }
    await Promise.all(durable);
    const records = spool.read("file", 1000).map((record) => JSON.parse(record.text));
    assert.deepEqual(records.map((record) => record.data.v.i), durable.map((_, i) => i));
    await intake.close();
  } finally {
    thread.close();
    spool.close();
    await Deno.remove(dir, { recursive: true });
  }
});
