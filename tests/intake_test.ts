/**
 * The intake's back-pressure signal: saturated while more waits for the
 * pipeline and the disk than keeps them busy, never while the spool is full.
 */
import assert from "node:assert/strict";
import { Intake } from "../src/intake.ts";
import { createWorkerMetrics } from "../src/metrics.ts";
import { createPipeline } from "../src/pipeline.ts";
import { inlinePipeline, type PipelineRunner } from "../src/pipeline_thread.ts";
import type { Message } from "../src/record.ts";
import { Spool } from "../src/spool.ts";
import { DEFAULT_PIPELINE_OPTIONS } from "./_helpers/spec_example.ts";
import { eventually, tempDir } from "./_helpers/files.ts";

function message(i: number): Message {
  return {
    topic: "a/b827eb2bb2a9/u/data",
    payload: new TextEncoder().encode(`{"t":${1625576100 + i},"r":[{"_vid":"v","i":${i}}]}`),
    receivedAt: 1625576100000 + i,
  };
}

/**
 * Runs `test` with an intake on a fresh spool of `spoolBytes`, holding at most
 * `maxMessages` (and `maxBytes`) before it is saturated; closes both after.
 */
async function withIntake(
  limits: {
    maxMessages: number;
    maxBytes?: number;
    spoolBytes?: number;
    pipeline?: PipelineRunner;
  },
  test: (intake: Intake, spool: Spool) => Promise<void>,
): Promise<void> {
  await using dir = await tempDir("intake_test_");
  const spool = Spool.open({
    path: `${dir}/spool.db`,
    sinks: ["file"],
    maxBytes: limits.spoolBytes ?? 2 ** 30,
  });
  try {
    const intake = new Intake({
      pipeline: limits.pipeline ?? createPipeline(DEFAULT_PIPELINE_OPTIONS),
      spool,
      metrics: createWorkerMetrics(),
      maxPending: { messages: limits.maxMessages, bytes: limits.maxBytes ?? 2 ** 20 },
    });
    await test(intake, spool);
    await intake.close();
  } finally {
    spool.close();
  }
}

Deno.test("the intake is saturated while maxPending messages wait, and not once they are durable", async () => {
  await withIntake({ maxMessages: 3 }, async (intake) => {
    const durable = [intake.accept(message(0)), intake.accept(message(1))];
    assert.equal(intake.saturated, false);
    durable.push(intake.accept(message(2)));
    assert.equal(intake.saturated, true);
    await Promise.all(durable);
    assert.equal(intake.pending, 0);
    assert.equal(intake.saturated, false);
  });
});

/**
 * A pipeline that holds each burst until the test lets it go: `runs` lists
 * the size of each burst it was given, `release(n)` lets the n-th go.
 */
function gatedPipeline() {
  const inline = inlinePipeline(createPipeline(DEFAULT_PIPELINE_OPTIONS));
  const gates: Array<() => void> = [];
  const runs: number[] = [];
  const pipeline: PipelineRunner = {
    batch: inline.batch,
    run: async (batch) => {
      runs.push(batch.length);
      const outcome = await inline.run(batch);
      await new Promise<void>((resolve) => gates.push(resolve));
      return outcome;
    },
    close: () => {},
  };
  const handedOver = (count: number) =>
    eventually(`${count} burst(s) handed over`, () => gates.length === count || undefined);
  return { pipeline, runs, handedOver, release: (index: number) => gates[index]() };
}

/** Lets the event loop turn: what one socket chunk's worth of messages takes. */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

Deno.test("once saturated, the intake stays so until the backlog is down to half", async () => {
  const { pipeline, handedOver, release } = gatedPipeline();
  await withIntake({ maxMessages: 4, pipeline }, async (intake) => {
    const first = intake.accept(message(0));
    await handedOver(1);
    const rest = [1, 2, 3].map((i) => intake.accept(message(i)));
    assert.equal(intake.saturated, true);
    release(0);
    await first;
    await handedOver(2);
    assert.equal(intake.pending, 3);
    assert.equal(intake.saturated, true, "3 of 4 is still more than half");
    release(1);
    await Promise.all(rest);
    assert.equal(intake.saturated, false);
  });
});

Deno.test("while the pipeline is busy, the bursts that arrive meanwhile go to it as one batch, in order", async () => {
  const { pipeline, runs, handedOver, release } = gatedPipeline();
  await withIntake({ maxMessages: 1000, pipeline }, async (intake, spool) => {
    const durable = [intake.accept(message(0))];
    await handedOver(1);
    // Three turns of the event loop, each its own burst while the pipeline has the first.
    for (const i of [1, 2, 3]) {
      durable.push(intake.accept(message(i)), intake.accept(message(i + 10)));
      await nextTurn();
    }
    assert.deepEqual(runs, [1], "nothing more goes to a busy pipeline");
    release(0);
    await handedOver(2);
    assert.deepEqual(runs, [1, 6]);
    release(1);
    await Promise.all(durable);
    const order = spool.read("file", 10).map((record) => JSON.parse(record.text).data.v.i);
    assert.deepEqual(order, [0, 1, 11, 2, 12, 3, 13]);
  });
});

Deno.test("a burst that has grown to 2000 messages goes to the pipeline even while it is busy", async () => {
  const { pipeline, runs, handedOver, release } = gatedPipeline();
  await withIntake({ maxMessages: 10_000, maxBytes: 2 ** 30, pipeline }, async (intake) => {
    const durable = [intake.accept(message(0))];
    await handedOver(1);
    for (let i = 1; i <= 2000; i++) durable.push(intake.accept(message(i)));
    await handedOver(2);
    assert.deepEqual(runs, [1, 2000]);
    release(0);
    release(1);
    await Promise.all(durable);
  });
});

Deno.test("an idle pipeline gets each burst at once", async () => {
  const { pipeline, runs, handedOver, release } = gatedPipeline();
  await withIntake({ maxMessages: 1000, pipeline }, async (intake) => {
    for (const i of [0, 1, 2]) {
      const durable = intake.accept(message(i));
      await handedOver(i + 1);
      release(i);
      await durable;
    }
    assert.deepEqual(runs, [1, 1, 1]);
  });
});

Deno.test("payload bytes count toward saturation too", async () => {
  await withIntake({ maxMessages: 1000, maxBytes: 80 }, async (intake) => {
    const first = intake.accept(message(0));
    assert.equal(intake.saturated, false);
    const second = intake.accept(message(1));
    assert.equal(intake.saturated, true, "two payloads of 41 bytes pass 80");
    await Promise.all([first, second]);
  });
});

Deno.test("a full spool is not saturation: messages wait unacknowledged while reading goes on", async () => {
  await withIntake({ maxMessages: 2, spoolBytes: 10 }, async (intake, spool) => {
    await intake.accept(message(0)); // fills the spool
    assert.equal(spool.full, true);
    let settled = false;
    const waiting = [intake.accept(message(1)), intake.accept(message(2))];
    Promise.all(waiting).then(() => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(settled, false, "nothing is durable while the spool is full");
    assert.equal(intake.pending, 2);
    assert.equal(intake.saturated, false);

    spool.acknowledge("file", 1);
    await Promise.all(waiting);
  });
});
