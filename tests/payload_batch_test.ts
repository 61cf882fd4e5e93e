/**
 * A payload batch holds copies of the payloads, in order, with each message's
 * topic and receipt time, and hands them over packed back to back.
 */
import assert from "node:assert/strict";
import { PayloadBatch } from "../src/payload_batch.ts";
import type { Message } from "../src/record.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function message(index: number, payload: string | Uint8Array): Message {
  return {
    topic: `a/node${index}/u/data`,
    payload: typeof payload === "string" ? encoder.encode(payload) : payload,
    receivedAt: 1625576100000 + index,
  };
}

Deno.test("a batch gives its messages back in order, payloads copied on arrival", () => {
  const payloads = ['{"t":1,"r":[]}', "", "µ ok", '{"t":2,"r":[{"_vid":"a","x":1}]}'];
  const originals = payloads.map((payload, index) => message(index, payload));
  const batch = PayloadBatch.of(originals);
  for (const original of originals) original.payload.fill(0x21);
  const messages = batch.messages();
  assert.equal(batch.length, 4);
  assert.deepEqual(messages.map((m) => decoder.decode(m.payload)), payloads);
  assert.deepEqual(messages.map((m) => m.topic), originals.map((m) => m.topic));
  assert.deepEqual(messages.map((m) => m.receivedAt), originals.map((m) => m.receivedAt));
});

Deno.test("a batch grows past its starting room without losing a byte", () => {
  const big = new Uint8Array(100_000).map((_, i) => i % 251);
  const batch = new PayloadBatch({ capacity: 1 });
  batch.add(message(0, "first"));
  batch.add(message(1, big));
  batch.add(message(2, big));
  batch.add(message(3, "last"));
  const [first, second, third, last] = batch.messages();
  assert.equal(decoder.decode(first.payload), "first");
  assert.deepEqual(second.payload, big);
  assert.deepEqual(third.payload, big);
  assert.equal(decoder.decode(last.payload), "last");
});

Deno.test("take hands over the payloads back to back, each one's end, and empties the batch", () => {
  const batch = PayloadBatch.of([message(0, "ab"), message(1, ""), message(2, "cde")]);
  const { bytes, ends, packed, kept } = batch.take();
  assert.deepEqual([...ends], [2, 2, 5]);
  assert.equal(decoder.decode(new Uint8Array(bytes, 0, 5)), "abcde");
  assert.equal(packed, undefined, "all of them are packed, in order");
  assert.deepEqual(kept, []);
  assert.deepEqual(batch.topics, ["a/node0/u/data", "a/node1/u/data", "a/node2/u/data"]);
});

Deno.test("a payload over the limit is kept apart, as it came, and not copied", () => {
  const huge = message(1, new Uint8Array(2048).fill(0x20));
  const batch = PayloadBatch.of([message(0, "ab"), huge, message(2, "cd")], {
    maxPayloadBytes: 1024,
  });
  assert.equal(batch.messages()[1], huge);
  const { bytes, ends, packed, kept } = batch.take();
  assert.deepEqual([...ends], [2, 4]);
  assert.equal(decoder.decode(new Uint8Array(bytes, 0, 4)), "abcd");
  assert.deepEqual(packed, [0, 2]);
  assert.deepEqual(kept, [huge]);
});
