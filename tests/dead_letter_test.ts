import assert from "node:assert/strict";
import { formatDeadLetter, formatTimestamp } from "../src/dead_letter.ts";

const encoder = new TextEncoder();
const base = {
  receivedAt: 1625576100123,
  topic: "a/b827eb2bb2a9/u/data",
  reason: 'payload is not valid JSON: unexpected "}" at byte 16; expected a key',
};

Deno.test("a rejected payload's line has received_at, topic, reason, code and the original text", () => {
  const line = formatDeadLetter({
    ...base,
    code: "invalid_json",
    payload: encoder.encode('{"t":1625576100,}'),
  });
  assert.equal(
    line,
    '{"received_at":"2021-07-06T12:55:00.123+00:00","topic":"a/b827eb2bb2a9/u/data",' +
      '"reason":"payload is not valid JSON: unexpected \\"}\\" at byte 16; expected a key",' +
      '"code":"invalid_json","payload":"{\\"t\\":1625576100,}"}',
  );
});

Deno.test("a payload that is not valid UTF-8 is stored base64-encoded, marked as such", () => {
  const line = formatDeadLetter({
    ...base,
    reason: "payload is not valid UTF-8",
    code: "invalid_utf8",
    payload: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]),
  });
  assert.equal(
    line,
    '{"received_at":"2021-07-06T12:55:00.123+00:00","topic":"a/b827eb2bb2a9/u/data",' +
      '"reason":"payload is not valid UTF-8","code":"invalid_utf8",' +
      '"payload":"e//+fQ==","payload_encoding":"base64"}',
  );
  const parsed = JSON.parse(line);
  assert.deepEqual(
    Uint8Array.from(atob(parsed.payload), (char) => char.charCodeAt(0)),
    new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]),
  );
});

Deno.test("a large invalid payload is base64-encoded whole", () => {
  const bytes = new Uint8Array(300_000).map((_, i) => (i * 7919) % 256);
  const parsed = JSON.parse(formatDeadLetter({ ...base, payload: bytes }));
  assert.equal(parsed.payload_encoding, "base64");
  assert.deepEqual(Uint8Array.from(atob(parsed.payload), (char) => char.charCodeAt(0)), bytes);
});

Deno.test("a rejected reading's line carries its index and its own text", () => {
  const line = formatDeadLetter({
    ...base,
    reason: 'reading r[2] has no "_vid" (device "calc")',
    code: "missing_vid",
    index: 2,
    payload: '{"_d":"calc","P":1}',
  });
  assert.equal(
    line,
    '{"received_at":"2021-07-06T12:55:00.123+00:00","topic":"a/b827eb2bb2a9/u/data",' +
      '"reason":"reading r[2] has no \\"_vid\\" (device \\"calc\\")","code":"missing_vid",' +
      '"index":2,"payload":"{\\"_d\\":\\"calc\\",\\"P\\":1}"}',
  );
});

Deno.test("a record a sink refused carries the sink's name, fields in the documented order", () => {
  const line = formatDeadLetter({
    payload: '{"time":"2021-07-06T12:55:00+00:00","data":{}}',
    sink: "webhook",
    code: "sink_refused",
    reason: "webhook answered 422 Unprocessable Entity",
    topic: "a/b827eb2bb2a9/u/data",
    receivedAt: 1625576100123,
  });
  assert.deepEqual(Object.keys(JSON.parse(line)), [
    "received_at",
    "topic",
    "reason",
    "code",
    "sink",
    "payload",
  ]);
  assert.equal(JSON.parse(line).sink, "webhook");
});

Deno.test("code, sink and index are left out when not given", () => {
  const line = formatDeadLetter({ ...base, payload: "x" });
  assert.deepEqual(Object.keys(JSON.parse(line)), ["received_at", "topic", "reason", "payload"]);
});

Deno.test("a dead letter is one line, whatever the payload holds", () => {
  const line = formatDeadLetter({ ...base, payload: encoder.encode('{\n"a":\r\n"\u2028"\n}') });
  assert.ok(!line.includes("\n") && !line.includes("\r"));
  assert.equal(JSON.parse(line).payload, '{\n"a":\r\n"\u2028"\n}');
});

Deno.test("a byte order mark in a valid payload is kept in the stored text", () => {
  const line = formatDeadLetter({ ...base, payload: new Uint8Array([0xef, 0xbb, 0xbf, 0x7b]) });
  assert.equal(JSON.parse(line).payload, "\ufeff{");
});

Deno.test("an empty payload is stored as empty text", () => {
  assert.equal(JSON.parse(formatDeadLetter({ ...base, payload: new Uint8Array() })).payload, "");
});

Deno.test("formatTimestamp is RFC 3339 in UTC with +00:00", () => {
  assert.equal(formatTimestamp(1625576100123), "2021-07-06T12:55:00.123+00:00");
});
