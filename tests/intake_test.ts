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

Deno.test("once saturated, the intake stays so until the backlog is down to half", async () => {
  // The pipeline holds each burst until the test lets it go.
  const inline = inlinePipeline(createPipeline(DEFAULT_PIPELINE_OPTIONS));
  const gates: Array<() => void> = [];
  const pipeline: PipelineRunner = {
    run: async (messages) => {
      const outcome = await inline.run(messages);
      await new Promise<void>((resolve) => gates.push(resolve));
      return outcome;
    },
    close: () => {},
  };
  const handedOver = (count: number) =>
    eventually(`${count} burst(s) handed over`, () => gates.length === count || undefined);
  await withIntake({ maxMessages: 4, pipeline }, async (intake) => {
    const first = intake.accept(message(0));
    await handedOver(1);
    const rest = [1, 2, 3].map((i) => intake.accept(message(i)));
    await handedOver(2);
    assert.equal(intake.saturated, true);
    gates[0]();
    await first;
    assert.equal(intake.pending, 3);
    assert.equal(intake.saturated, true, "3 of 4 is still more than half");
    gates[1]();
    await Promise.all(rest);
    assert.equal(intake.saturated, false);
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
