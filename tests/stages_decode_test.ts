import assert from "node:assert/strict";
import { decodePayload, utf8Offset } from "../src/stages/decode.ts";

const encoder = new TextEncoder();
const limits = { maxPayloadBytes: 16 };

Deno.test("a payload up to the limit decodes as UTF-8 text", () => {
  // 16 bytes: é is 2, € is 3, 😀 is 4.
  const decoded = decodePayload(encoder.encode('{"":"é€😀"}'), limits);
  assert.deepEqual(decoded, { ok: true, text: '{"":"é€😀"}', bomBytes: 0 });
});

Deno.test("a payload larger than the limit is rejected as payload_too_large, unread", () => {
  // Invalid UTF-8 too, which proves the bytes were not decoded first.
  const decoded = decodePayload(new Uint8Array(17).fill(0xff), limits);
  assert.deepEqual(decoded, {
    ok: false,
    reason: "payload_too_large",
    message: "payload is 17 bytes, more than MAX_PAYLOAD_BYTES (16); " +
      "raise MAX_PAYLOAD_BYTES if such payloads are expected",
  });
});

Deno.test("a payload of exactly the limit is accepted", () => {
  assert.equal(decodePayload(new Uint8Array(16).fill(0x20), limits).ok, true);
});

Deno.test("a leading UTF-8 byte order mark is skipped and counted for byte offsets", () => {
  const decoded = decodePayload(new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d]), limits);
  assert.deepEqual(decoded, { ok: true, text: "{}", bomBytes: 3 });
});

Deno.test("a byte order mark after the start is kept as text", () => {
  const decoded = decodePayload(new Uint8Array([0x20, 0xef, 0xbb, 0xbf]), limits);
  assert.deepEqual(decoded, { ok: true, text: " \ufeff", bomBytes: 0 });
});

Deno.test("invalid UTF-8 is rejected as invalid_utf8, naming the first bad byte", () => {
  const table: [number[], string][] = [
    [[0x7b, 0xff, 0x7d], "invalid byte 0xff at byte 1"],
    [[0x7b, 0xc3], "invalid byte 0xc3 at byte 1"], // truncated sequence
    [[0xc0, 0xaf], "invalid byte 0xc0 at byte 0"], // overlong
    [[0x41, 0xed, 0xa0, 0x80], "invalid byte 0xed at byte 1"], // encoded surrogate
    [[0xf4, 0x90, 0x80, 0x80], "invalid byte 0xf4 at byte 0"], // above U+10FFFF
    [[0x41, 0x80], "invalid byte 0x80 at byte 1"], // lone continuation byte
  ];
  for (const [bytes, where] of table) {
    const decoded = decodePayload(new Uint8Array(bytes), limits);
    assert.deepEqual(decoded, {
      ok: false,
      reason: "invalid_utf8",
      message:
        `payload is not valid UTF-8: ${where}; the datalogger must send JSON encoded as UTF-8`,
    });
  }
});

Deno.test("random bytes never throw", () => {
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let n = 0; n < 2000; n++) {
    const bytes = new Uint8Array(Math.floor(random() * 16)).map(() => Math.floor(random() * 256));
    const decoded = decodePayload(bytes, limits);
    assert.ok(decoded.ok || decoded.reason === "invalid_utf8");
  }
});

Deno.test("utf8Offset counts UTF-8 bytes before a UTF-16 offset", () => {
  assert.equal(utf8Offset("abc", 2), 2);
  assert.equal(utf8Offset("é}", 1), 2);
  assert.equal(utf8Offset("€}", 1), 3);
  assert.equal(utf8Offset("😀}", 2), 4);
  assert.equal(utf8Offset("a😀é€x", 5), encoder.encode("a😀é€").length);
});
