/**
 * The batch pipeline — the byte-level fast path where it applies, the full
 * pipeline elsewhere — gives exactly what the per-message pipeline gives,
 * message by message, as JSON Lines.
 */
import assert from "node:assert/strict";
import { benchPayload } from "../bench/payload.ts";
import { createPipeline, type PipelineOptions } from "../src/pipeline.ts";
import { createBatchPipeline, outcomesOf, runGuarded } from "../src/pipeline_batch.ts";
import type { Message } from "../src/record.ts";
import { DEFAULT_PIPELINE_OPTIONS, SPEC_PAYLOAD, SPEC_RECORD } from "./_helpers/spec_example.ts";

const encoder = new TextEncoder();

const PAYLOADS = [
  SPEC_PAYLOAD,
  benchPayload(1625576100, 1),
  benchPayload(1625576160.5, 2),
  '{"r":[{"_vid":"a","x":1}],"t":1625576100}',
  '{"t":1625576100,"r":[{"_vid":"a","x":1},{"_vid":"b","y":2},{"_vid":"a","x":null,"z":"\\u00e9"}]}',
  '{"t":1625576100,"r":[{"_d":"calc","P":1},{"_vid":"m","Q":1.50,"E":18446744073709551615}]}',
  '{"t":1625576100,"r":[{"_vid":"n","v":NaN,"w":[1, 2, {"k" : "v"}]}]}',
  "not json",
  "\ufeff" + SPEC_PAYLOAD,
  '{"t":"yesterday","r":[]}',
  '{"t":1625576100,"r":[42,{"_vid":7,"x":true}]}',
];

function messages(): Message[] {
  return PAYLOADS.map((payload, i) => ({
    topic: `a/node${i % 3}/u/data`,
    payload: encoder.encode(payload),
    receivedAt: 1625576100000 + i,
  }));
}

function assertSameAsPerMessage(options: PipelineOptions): void {
  const batch = messages();
  const pipeline = createPipeline(options);
  const expected = batch.map((message) => runGuarded(pipeline, message));
  assert.deepEqual(outcomesOf(createBatchPipeline(options)(batch)), expected);
}

Deno.test("the batch pipeline gives the per-message pipeline's records, rejections and drops, in order", () => {
  assertSameAsPerMessage(DEFAULT_PIPELINE_OPTIONS);
});

Deno.test("the batch pipeline agrees with RECORD_META and every MISSING_VID policy", () => {
  for (const missingVid of ["reject", "drop", "device"] as const) {
    assertSameAsPerMessage({
      ...DEFAULT_PIPELINE_OPTIONS,
      missingVid,
      recordMeta: ["node_id", "topic", "received_at"],
    });
  }
});

Deno.test("the batch pipeline agrees for the raw transform", () => {
  assertSameAsPerMessage({ ...DEFAULT_PIPELINE_OPTIONS, transform: "raw" });
});

Deno.test("records come back as JSON Lines: each line a record, each end past its newline", () => {
  const outcome = createBatchPipeline(DEFAULT_PIPELINE_OPTIONS)(messages().slice(0, 2));
  const text = new TextDecoder().decode(outcome.lines);
  assert.equal(text.split("\n")[0], SPEC_RECORD);
  assert.equal(outcome.ends.length, 2);
  assert.equal(outcome.ends[1], outcome.lines.length);
  assert.equal(text[outcome.ends[0] - 1], "\n");
  assert.deepEqual([...outcome.firstRecord], [0, 1, 2]);
});
