/**
 * The byte-level fast path of the `ammp` transform (src/stages/ammp_bytes.ts):
 * when it says yes, its bytes are exactly the pipeline's record, and the
 * pipeline accepted the payload whole; when it says no, the caller's output is
 * untouched. The pipeline is the reference throughout.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { benchPayload } from "../bench/payload.ts";
import { createPipeline, type PipelineOptions, type PipelineResult } from "../src/pipeline.ts";
import type { Message } from "../src/record.ts";
import {
  type AmmpBytesOptions,
  type ByteOutput,
  createAmmpBytes,
  recordMetaText,
} from "../src/stages/ammp_bytes.ts";
import { createRecordMeta } from "../src/stages/record_meta.ts";
import { JsonWriter } from "./_helpers/json_writer.ts";
import { DEFAULT_PIPELINE_OPTIONS, SPEC_PAYLOAD, SPEC_RECORD } from "./_helpers/spec_example.ts";

// Reproducible runs: a fixed seed, unless PROPERTY_SEED names another one or says "random".
// PROPERTY_RUNS sets how many payloads the main property tries (10 000 unless told).
const seedSetting = Deno.env.get("PROPERTY_SEED") ?? "20261124";
const seed = seedSetting === "random" ? (Math.random() * 2 ** 31) | 0 : Number(seedSetting);
if (seedSetting === "random") console.log(`ammp_bytes properties: PROPERTY_SEED=${seed}`);
fc.configureGlobal({ seed });

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const TOPIC = "a/b827eb2bb2a9/u/data";
const RECEIVED_AT = 1625576100123;
const TIME = "2021-07-06T12:55:00+00:00";

const defaults: PipelineOptions = DEFAULT_PIPELINE_OPTIONS;

const bytesOf = (payload: string | Uint8Array) =>
  typeof payload === "string" ? encoder.encode(payload) : payload;

const messageOf = (payload: Uint8Array, topic = TOPIC): Message => ({
  topic,
  payload,
  receivedAt: RECEIVED_AT,
});

/** The fast path's record for a payload, or undefined when it says no. */
function fastRecord(
  payload: string | Uint8Array,
  options: Partial<AmmpBytesOptions> = {},
  metaText = "",
): string | undefined {
  const fast = createAmmpBytes({ ...defaults, ...options });
  const out: ByteOutput = { bytes: new Uint8Array(4096), length: 0 };
  if (!fast(bytesOf(payload), metaText, out)) {
    assert.equal(out.length, 0, "a no leaves out.length as it was");
    return undefined;
  }
  return decoder.decode(out.bytes.subarray(0, out.length));
}

/** The pipeline's result for a payload: the reference. */
function slowResult(
  payload: string | Uint8Array,
  options: Partial<PipelineOptions> = {},
): PipelineResult {
  return createPipeline({ ...defaults, ...options })(messageOf(bytesOf(payload)));
}

/** True when the pipeline takes the payload whole: one record, nothing rejected or dropped. */
function acceptedWhole(result: PipelineResult): boolean {
  return result.records.length === 1 && result.rejections.length === 0 &&
    result.dropped.length === 0;
}

/** The fast path's record, checked against the pipeline's; it must say yes. */
function sameAsPipeline(payload: string | Uint8Array, options: Partial<PipelineOptions> = {}) {
  const fast = fastRecord(payload, options);
  const slow = slowResult(payload, options);
  assert.ok(acceptedWhole(slow), JSON.stringify(slow.rejections));
  assert.equal(fast, slow.records[0], "the fast path said no, or wrote another record");
  return fast!;
}

/** The `data` text of the record for these readings at t = 1625576100, via the fast path. */
function dataOf(readings: string, options: Partial<PipelineOptions> = {}): string {
  const record = sameAsPipeline(`{"t":1625576100,"r":[${readings}]}`, options);
  const prefix = `{"time":"${TIME}","data":`;
  assert.ok(record.startsWith(prefix), record);
  return record.slice(prefix.length, -1);
}

// ---------------------------------------------------------------- the plain case

Deno.test("SPEC §1's example takes the fast path and gives SPEC §1's record", () => {
  assert.equal(sameAsPipeline(SPEC_PAYLOAD), SPEC_RECORD);
});

Deno.test("the benchmark's payloads, with Python's separators, take the fast path", () => {
  for (const seed of [0, 1, 7, 42, 1000, 123456]) {
    const payload = benchPayload(1625576100 + seed * 60, seed);
    assert.ok(payload.includes('", "') && payload.includes('": '), "Python-style separators");
    sameAsPipeline(payload);
  }
});

Deno.test("RECORD_META members come after time, as the pipeline writes them", () => {
  const recordMeta = ["node_id", "topic", "received_at"] as const;
  const pipeline = createPipeline({ ...defaults, recordMeta: [...recordMeta] });
  const metaOf = createRecordMeta({ recordMeta, topicNodeLevel: 1 });
  for (const payload of [SPEC_PAYLOAD, benchPayload(1625576100, 3)]) {
    const message = messageOf(encoder.encode(payload));
    const metaText = recordMetaText(metaOf(message));
    assert.equal(
      metaText,
      ',"node_id":"b827eb2bb2a9","topic":"a/b827eb2bb2a9/u/data",' +
        '"received_at":"2021-07-06T12:55:00.123+00:00"',
    );
    assert.equal(fastRecord(payload, {}, metaText), pipeline(message).records[0]);
  }
});

Deno.test("meta text in any Unicode is written as UTF-8, a lone surrogate as U+FFFD", () => {
  const metaText = ',"topic":"é/😀/\u2028/x' + "\ud800" + '"';
  const fast = createAmmpBytes(defaults);
  const out: ByteOutput = { bytes: new Uint8Array(8), length: 0 };
  assert.ok(fast(encoder.encode('{"t":0,"r":[]}'), metaText, out));
  assert.deepEqual(
    out.bytes.subarray(0, out.length),
    encoder.encode(`{"time":"1970-01-01T00:00:00+00:00"${metaText},"data":{}}`),
  );
});

Deno.test("values come out as written: numbers digit for digit, strings with their escapes", () => {
  assert.equal(
    dataOf(
      '{"_vid":"m","E":18446744073709551615,"z":-0,"f":1.0,"e":6.02214076e+23,"s":"a\\"b\\u00e9\\n",' +
        '"u":"é😀","b":true,"c":false}',
    ),
    '{"m":{"E":18446744073709551615,"z":-0,"f":1.0,"e":6.02214076e+23,"s":"a\\"b\\u00e9\\n",' +
      '"u":"é😀","b":true,"c":false}}',
  );
});

Deno.test("nested values come out compacted, their repeated keys kept", () => {
  assert.equal(
    dataOf('{"_vid":"m","o": { "a" : [1, 2 ,{"k": " x "}], "a": null } , "l":[ ]}'),
    '{"m":{"o":{"a":[1,2,{"k":" x "}],"a":null},"l":[]}}',
  );
});

Deno.test("_-fields and nulls are dropped; a vendor left with nothing is {}", () => {
  assert.equal(
    dataOf('{"_d":"x","_vid":"m","_x":1,"__proto__":2,"n":null},{"_vid":"k","a":1}'),
    '{"m":{},"k":{"a":1}}',
  );
});

Deno.test("keys that only look like _vid or _d are _-fields like any other", () => {
  assert.equal(
    dataOf('{"_vid":"a","_vix":"b","_vi":"c","_di":"d","_":1,"_dd":"e","x":1}'),
    '{"a":{"x":1}}',
  );
  assert.equal(
    dataOf('{"_d":"a","_vidd":"b","x":1}', { missingVid: "device" }),
    '{"a":{"x":1}}',
  );
});

Deno.test("hostile and integer-like keys are ordinary keys, in payload order", () => {
  assert.equal(
    dataOf('{"_vid":"constructor","10":1,"1":2,"toString":3},{"_vid":"__proto__","x":4}'),
    '{"constructor":{"10":1,"1":2,"toString":3},"__proto__":{"x":4}}',
  );
});

Deno.test("m and other top-level keys are read and discarded, in any order", () => {
  assert.equal(
    sameAsPipeline('{"m":{"a":[1,{"b":2}]},"x":"\\u0041","t":1625576100,"r":[],"y":null}'),
    `{"time":"${TIME}","data":{}}`,
  );
});

// ---------------------------------------------------------------- merging readings

Deno.test("a null in a later reading keeps the earlier value", () => {
  assert.equal(
    dataOf('{"_vid":"m","x":1,"y":2},{"_vid":"m","x":null,"z":3}'),
    '{"m":{"x":1,"y":2,"z":3}}',
  );
});

Deno.test("a later reading's value wins and keeps the field's first position", () => {
  assert.equal(
    dataOf('{"_vid":"m","x":1,"y":2},{"_vid":"m","y":5,"x":4}'),
    '{"m":{"x":4,"y":5}}',
  );
});

Deno.test("a field first given as null appears where a later reading gives it a value", () => {
  assert.equal(
    dataOf('{"_vid":"m","x":null,"y":1},{"_vid":"m","z":2,"x":3}'),
    '{"m":{"y":1,"z":2,"x":3}}',
  );
});

Deno.test("a field that is only ever null is not there", () => {
  assert.equal(dataOf('{"_vid":"m","x":null},{"_vid":"m","x":null}'), '{"m":{}}');
});

Deno.test("a key repeated in a reading keeps its first position and its last value", () => {
  assert.equal(dataOf('{"_vid":"m","x":1,"y":2,"x":3}'), '{"m":{"x":3,"y":2}}');
  assert.equal(dataOf('{"_vid":"m","x":null,"y":2,"x":3}'), '{"m":{"x":3,"y":2}}');
  assert.equal(dataOf('{"_vid":"m","x":1,"y":2,"x":null}'), '{"m":{"y":2}}');
  assert.equal(
    dataOf('{"_vid":"m","x":1},{"_vid":"m","x":2,"x":null}'),
    '{"m":{"x":1}}',
  );
});

Deno.test("a number vid and the string of its digits are one vendor, keyed as first seen", () => {
  assert.equal(dataOf('{"_vid":1,"x":1},{"_vid":"1","y":2}'), '{"1":{"x":1,"y":2}}');
  assert.equal(dataOf('{"_vid":"1.50","x":1},{"_vid":1.50,"x":2}'), '{"1.50":{"x":2}}');
  assert.equal(dataOf('{"_vid":1,"x":1},{"_vid":1.0,"x":2}'), '{"1":{"x":1},"1.0":{"x":2}}');
  assert.equal(dataOf('{"_vid":0},{"_vid":-0},{"_vid":0e1}'), '{"0":{},"-0":{},"0e1":{}}');
});

Deno.test("many fields and many vendors, streamed or collected", () => {
  const fields = Array.from({ length: 1000 }, (_, i) => `"f${i}":${i}`).join(",");
  const vendors = Array.from({ length: 600 }, (_, i) => `{"_vid":"v${i}","x":${i}}`).join(",");
  const readings = `{"_vid":"big",${fields}},${vendors},{"_vid":"big","f1":-1,"g":null}`;
  // t before r streams until the vendor comes back; t after r collects from the start.
  sameAsPipeline(`{"t":1625576100,"r":[${readings}]}`);
  sameAsPipeline(`{"r":[${readings}],"t":1625576100}`);
});

Deno.test("readings of one vendor merge across others, vendors in order of first appearance", () => {
  assert.equal(
    dataOf('{"_vid":"a","x":1},{"_vid":"b","y":2},{"_vid":"a","z":3,"x":4}'),
    '{"a":{"x":4,"z":3},"b":{"y":2}}',
  );
});

Deno.test("_vid after the fields, or repeated: its last value keys the reading", () => {
  assert.equal(dataOf('{"x":1,"_vid":"a"},{"_vid":"b","_vid":"a","y":2}'), '{"a":{"x":1,"y":2}}');
  assert.equal(dataOf('{"_vid":"a","x":1,"_vid":"b","y":2}'), '{"b":{"x":1,"y":2}}');
});

Deno.test("MISSING_VID=device keys a reading without a usable _vid by its _d", () => {
  assert.equal(
    dataOf('{"_d":"calc","x":1},{"_vid":"","_d":"calc","y":2},{"_vid":"calc","z":3}', {
      missingVid: "device",
    }),
    '{"calc":{"x":1,"y":2,"z":3}}',
  );
});

Deno.test("t after r, and a repeated t or r: the last one counts", () => {
  assert.equal(
    sameAsPipeline('{"r":[{"_vid":"a","x":1}],"t":1625576100}'),
    `{"time":"${TIME}","data":{"a":{"x":1}}}`,
  );
  assert.equal(
    sameAsPipeline('{"t":"soon","r":7,"t":1625576100,"r":[{"_vid":"a","x":1}]}'),
    `{"time":"${TIME}","data":{"a":{"x":1}}}`,
  );
  assert.equal(
    sameAsPipeline('{"t":1,"r":[{"_vid":"b"}],"t":1625576100,"r":[{"_vid":"a"}]}'),
    `{"time":"${TIME}","data":{"a":{}}}`,
  );
});

Deno.test("t as any number formatEpochSeconds takes: whole, fractional, exponent, across days", () => {
  const fast = createAmmpBytes(defaults);
  const pipeline = createPipeline(defaults);
  const out: ByteOutput = { bytes: new Uint8Array(64), length: 0 };
  const ts = [
    "0",
    "-0",
    "0.0",
    "1625576100",
    "1625576101",
    "1625662499",
    "1625662500",
    "1625576100.25",
    "1625576100.9999995",
    "1.6255761e9",
    "16255761000e-1",
    "253402300799",
    "086400",
  ];
  for (const t of ts) {
    const payload = encoder.encode(`{"t":${t},"r":[]}`);
    out.length = 0;
    const slow = pipeline(messageOf(payload));
    const ok = fast(payload, "", out);
    if (!acceptedWhole(slow)) {
      assert.ok(!ok, t);
      continue;
    }
    assert.ok(ok, t);
    assert.equal(decoder.decode(out.bytes.subarray(0, out.length)), slow.records[0], t);
  }
});

// ---------------------------------------------------------------- the output buffer

Deno.test("a tiny output buffer grows, keeping what was written before out.length", () => {
  const fast = createAmmpBytes(defaults);
  const out: ByteOutput = { bytes: new Uint8Array([0x41, 0x42, 0x43]), length: 2 };
  assert.ok(fast(encoder.encode(SPEC_PAYLOAD), "", out));
  assert.ok(out.bytes.length >= out.length);
  assert.equal(decoder.decode(out.bytes.subarray(0, out.length)), "AB" + SPEC_RECORD);
});

Deno.test("a payload and an output that are views into larger buffers", () => {
  const fast = createAmmpBytes(defaults);
  const text = encoder.encode(SPEC_PAYLOAD);
  const batch = new Uint8Array(text.length + 10).fill(0x7b);
  batch.set(text, 7);
  const outBuffer = new Uint8Array(SPEC_RECORD.length + 20).fill(0x20);
  const out: ByteOutput = { bytes: outBuffer.subarray(5, 5 + SPEC_RECORD.length + 3), length: 0 };
  assert.ok(fast(batch.subarray(7, 7 + text.length), "", out));
  assert.equal(decoder.decode(out.bytes.subarray(0, out.length)), SPEC_RECORD);
  assert.deepEqual(
    outBuffer.subarray(0, 5),
    new Uint8Array(5).fill(0x20),
    "nothing before the view",
  );
});

Deno.test("records of a batch follow one another in the same buffer", () => {
  const fast = createAmmpBytes(defaults);
  const pipeline = createPipeline(defaults);
  const out: ByteOutput = { bytes: new Uint8Array(1), length: 0 };
  const expected: string[] = [];
  for (let seed = 0; seed < 50; seed++) {
    const payload = encoder.encode(benchPayload(1625576100 + seed * 60, seed));
    assert.ok(fast(payload, "", out));
    out.bytes[out.length++] = 0x0a;
    expected.push(pipeline(messageOf(payload)).records[0] + "\n");
  }
  assert.equal(decoder.decode(out.bytes.subarray(0, out.length)), expected.join(""));
});

Deno.test("a no leaves out.length and the bytes before it as they were", () => {
  const fast = createAmmpBytes(defaults);
  const out: ByteOutput = { bytes: new Uint8Array([1, 2, 3, 4]), length: 3 };
  // Streaming starts writing before it meets the reading without a _vid.
  assert.ok(!fast(encoder.encode('{"t":1625576100,"r":[{"_vid":"a","x":1},{"y":2}]}'), "", out));
  assert.equal(out.length, 3);
  assert.deepEqual(out.bytes.subarray(0, 3), new Uint8Array([1, 2, 3]));
});

// ---------------------------------------------------------------- saying no

/** Payloads the fast path leaves to the pipeline, with the options that make them so. */
const NO_CASES: [string, string | Uint8Array, Partial<PipelineOptions>?][] = [
  ["a payload larger than maxPayloadBytes", SPEC_PAYLOAD, { maxPayloadBytes: 100 }],
  ["a UTF-8 byte order mark", new Uint8Array([0xef, 0xbb, 0xbf, ...encoder.encode(SPEC_PAYLOAD)])],
  ["an empty payload", ""],
  ["whitespace only", " \n"],
  ["a trailing comma", '{"t":1625576100,"r":[],}'],
  ["a cut-off payload", '{"t":1625576100,"r":[{"_vid":"a"}]'],
  ["text after the object", '{"t":1625576100,"r":[]} x'],
  ["an unquoted key", '{t:1625576100,"r":[]}'],
  ["a number with a leading zero", '{"t":1625576100,"r":[{"_vid":"a","x":01}]}'],
  ["a number without fraction digits", '{"t":1625576100,"r":[{"_vid":"a","x":1.}]}'],
  ["a tab in a string", '{"t":1625576100,"r":[{"_vid":"a","x":"\t"}]}'],
  ["a U+001F in a string", '{"t":1625576100,"r":[{"_vid":"a","x":"\x1f"}]}'],
  ["a U+001F in a key", '{"t":1625576100,"r":[{"_vid":"a","\x1f":1}]}'],
  ["an invalid escape", '{"t":1625576100,"r":[{"_vid":"a","x":"\\x41"}]}'],
  ["an escape of a letter", '{"t":1625576100,"r":[{"_vid":"a","x":"\\a"}]}'],
  ...["G234", "1G34", "12G4", "123G"].map((hex): [string, string] => [
    `a \\u escape with a non-hex digit (\\u${hex})`,
    `{"t":1625576100,"r":[{"_vid":"a","x":"\\u${hex}"}]}`,
  ]),
  ["a cut-off \\u escape", '{"t":1625576100,"r":[{"_vid":"a","x":"\\u12"}]}'],
  ["a misspelt true", '{"t":1625576100,"r":[{"_vid":"a","x":trux}]}'],
  ["a misspelt false", '{"t":1625576100,"r":[{"_vid":"a","x":falsy}]}'],
  ["a misspelt null", '{"t":1625576100,"r":[{"_vid":"a","x":nul}]}'],
  ["a capitalised literal", '{"t":1625576100,"r":[{"_vid":"a","x":True}]}'],
  ["a bare NaN", '{"t":1625576100,"r":[{"_vid":"a","x":NaN}]}'],
  ["a bare Infinity in m", '{"t":1625576100,"r":[],"m":{"d":Infinity}}'],
  ["a bare -Infinity", '{"t":1625576100,"r":[{"_vid":"a","x":-Infinity}]}'],
  ["an escaped field name", '{"t":1625576100,"r":[{"_vid":"a","\\u0078":1}]}'],
  ["an escaped top-level key", '{"\\u0074":1625576100,"r":[]}'],
  ["an escaped _vid", '{"t":1625576100,"r":[{"_vid":"\\u0061","x":1}]}'],
  ["an array payload", "[]"],
  ["a string payload", '"t"'],
  ["no t", '{"r":[]}'],
  ["a string t", '{"t":"1625576100","r":[]}'],
  ["a negative t", '{"t":-1,"r":[]}'],
  ["a t past the year 9999", '{"t":253402300800,"r":[]}'],
  ["no r", '{"t":1625576100}'],
  ["an r that is not an array", '{"t":1625576100,"r":{}}'],
  ["a repeated r whose last is not an array", '{"t":1625576100,"r":[],"r":null}'],
  ["more readings than maxReadings", '{"t":1625576100,"r":[{"_vid":"a"},{"_vid":"b"}]}', {
    maxReadings: 1,
  }],
  ["nesting deeper than maxDepth in m", '{"t":1625576100,"r":[],"m":[[[[1]]]]}', { maxDepth: 4 }],
  ["nesting deeper than maxDepth in a reading", '{"t":1625576100,"r":[{"_vid":"a","x":[[]]}]}', {
    maxDepth: 4,
  }],
  ["readings deeper than maxDepth", '{"t":1625576100,"r":[{"_vid":"a"}]}', { maxDepth: 2 }],
  ["a reading that is not an object", '{"t":1625576100,"r":[{"_vid":"a"},7]}'],
  ["a reading without _vid", '{"t":1625576100,"r":[{"_d":"x","y":1}]}'],
  ["a reading with a null _vid", '{"t":1625576100,"r":[{"_vid":null,"y":1}]}'],
  ["a reading with an empty _vid", '{"t":1625576100,"r":[{"_vid":"","y":1}]}'],
  ["a reading with a true _vid", '{"t":1625576100,"r":[{"_vid":true,"y":1}]}'],
  ["a reading without _vid under MISSING_VID=drop", '{"t":1625576100,"r":[{"_d":"x"}]}', {
    missingVid: "drop",
  }],
  ["a reading without _vid or _d under MISSING_VID=device", '{"t":1625576100,"r":[{"y":1}]}', {
    missingVid: "device",
  }],
];

const INVALID_UTF8: [string, number[]][] = [
  ["a byte 0xff", [0xff]],
  ["an overlong encoding", [0xc0, 0x80]],
  ["an overlong three-byte encoding", [0xe0, 0x80, 0x80]],
  ["an overlong four-byte encoding", [0xf0, 0x80, 0x80, 0x80]],
  ["a lead byte 0xf5", [0xf5, 0x80, 0x80, 0x80]],
  ["an encoded surrogate", [0xed, 0xa0, 0x80]],
  ["a truncated sequence", [0xe2, 0x82]],
  ["a code point past U+10FFFF", [0xf4, 0x90, 0x80, 0x80]],
  ["a lone continuation byte", [0x80]],
];
for (const [name, bytes] of INVALID_UTF8) {
  NO_CASES.push([
    `${name} in a string`,
    new Uint8Array([
      ...encoder.encode('{"t":1625576100,"r":[{"_vid":"a","x":"'),
      ...bytes,
      ...encoder.encode('"}]}'),
    ]),
  ]);
}

for (const [name, payload, options = {}] of NO_CASES) {
  Deno.test(`says no to ${name}`, () => {
    assert.equal(fastRecord(payload, options), undefined);
  });
}

// ---------------------------------------------------------------- properties

/** A JSON value to write, kept as a tree so the writer can choose its whitespace and escapes. */
type Json =
  | { readonly kind: "token"; readonly text: string }
  | { readonly kind: "string"; readonly value: string }
  | { readonly kind: "array"; readonly items: readonly Json[] }
  | { readonly kind: "object"; readonly members: readonly (readonly [string, Json])[] };

const token = (text: string): Json => ({ kind: "token", text });
const string = (value: string): Json => ({ kind: "string", value });

const numberText = fc.oneof(
  fc.integer({ min: -1_000_000, max: 1_000_000 }).map(String),
  fc.constantFrom(
    "0",
    "-0",
    "1.0",
    "1.50",
    "229.70000000000002",
    "0.5670797228813171",
    "18446744073709551615",
    "-9223372036854775808",
    "12345678901234567890123",
    "1e400",
    "-1E-7",
    "6.02214076e+23",
    "0.000",
  ),
  fc.tuple(
    fc.stringMatching(/^-?(0|[1-9][0-9]{0,20})$/),
    fc.option(fc.stringMatching(/^[0-9]{1,17}$/)),
    fc.option(fc.stringMatching(/^[eE][+-]?[0-9]{1,3}$/)),
  ).map(([integer, fraction, exponent]) =>
    integer + (fraction === null ? "" : "." + fraction) + (exponent ?? "")
  ),
);

const stringArbitrary = fc.oneof(
  fc.string({ maxLength: 8 }),
  fc.string({ unit: "grapheme", maxLength: 6 }),
  fc.string({ unit: "binary", maxLength: 6 }),
  fc.constantFrom("", "\\", '"', "/", "\n", "é", "😀", "\u2028", "\ufeff", "\u007f", "NaN"),
);

/** Field names: few, so that readings share them. */
const keyArbitrary = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom("a", "b", "P", "V_L3", "1", "10", "é", "", " ") },
  {
    weight: 2,
    arbitrary: fc.constantFrom("_x", "_", "_vi", "_dd", "__proto__", "constructor", "toString"),
  },
  { weight: 1, arbitrary: fc.string({ maxLength: 4 }) },
);

const jsonArbitrary: fc.Arbitrary<Json> = fc.letrec<{ value: Json }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    { weight: 6, arbitrary: numberText.map(token) },
    { weight: 3, arbitrary: stringArbitrary.map(string) },
    { weight: 3, arbitrary: fc.constantFrom("true", "false", "null", "null").map(token) },
    { weight: 1, arbitrary: fc.array(tie("value"), { maxLength: 3 }).map(array) },
    {
      weight: 1,
      arbitrary: fc.array(fc.tuple(keyArbitrary, tie("value")), { maxLength: 3 }).map(object),
    },
  ),
})).value;

function array(items: readonly Json[]): Json {
  return { kind: "array", items };
}

function object(members: readonly (readonly [string, Json])[]): Json {
  return { kind: "object", members };
}

/** A value nested in `levels` arrays and objects: around any maxDepth. */
const deepArbitrary = fc.tuple(fc.integer({ min: 0, max: 7 }), jsonArbitrary, fc.boolean()).map(
  ([levels, inner, objects]) => {
    let value = inner;
    for (let level = 0; level < levels; level++) {
      value = objects && level % 2 === 0 ? object([["k", value]]) : array([value]);
    }
    return value;
  },
);

/** Vendor and device ids: usable ones that collide (1, "1"), and unusable ones. */
const idArbitrary: fc.Arbitrary<Json> = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom("s1", "s2", "1", "é", "constructor").map(string) },
  { weight: 3, arbitrary: fc.constantFrom("1", "7", "1.0", "-3", "1e3").map(token) },
  { weight: 1, arbitrary: fc.constantFrom("", "_hidden").map(string) },
  { weight: 1, arbitrary: fc.constantFrom("null", "true", "NaN", "[]", "{}").map(token) },
);

/** An element of `r`: mostly readings, with `_vid` first (as loggers write it) or anywhere. */
const readingArbitrary: fc.Arbitrary<Json> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.tuple(
      fc.array(
        fc.tuple(keyArbitrary, fc.oneof({ weight: 5, arbitrary: jsonArbitrary }, deepArbitrary)),
        { maxLength: 6 },
      ),
      fc.option(idArbitrary, { freq: 12 }),
      fc.option(idArbitrary, { freq: 3 }),
      idArbitrary,
      fc.nat(),
      fc.nat({ max: 9 }),
    ).map(([fields, vid, device, lastVid, at, where]) => {
      const members: (readonly [string, Json])[] = [...fields];
      // Most loggers write _d and _vid first; some write them anywhere, or twice.
      if (device !== null) {
        members.splice(where < 8 ? 0 : at % (members.length + 1), 0, ["_d", device]);
      }
      if (vid !== null) {
        members.splice(where < 7 ? (device === null ? 0 : 1) : at % (members.length + 1), 0, [
          "_vid",
          vid,
        ]);
      }
      if (where === 9 && vid !== null) members.push(["_vid", at % 2 === 0 ? vid : lastVid]);
      return object(members);
    }),
  },
  { weight: 1, arbitrary: jsonArbitrary.filter((value) => value.kind !== "object") },
);

/** Valid `t` mostly, near one another so that days repeat, and some that are not. */
const timeArbitrary: fc.Arbitrary<Json> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.integer({ min: 1625500000, max: 1625700000 }).map(String).map(token),
  },
  {
    weight: 2,
    arbitrary: fc.constantFrom("0", "-0", "1625576100.25", "1.6255761e9", "253402300799").map(
      token,
    ),
  },
  { weight: 1, arbitrary: fc.constantFrom("-1", "253402300800", "1e20").map(token) },
  { weight: 1, arbitrary: fc.constantFrom("1625576100", "x").map(string) },
);

interface PayloadInput {
  readonly members: readonly (readonly [string, Json])[];
  /** Chooses whitespace and escapes. */
  readonly seed: number;
  /** How often a character that may stay literal is escaped instead. */
  readonly escapeRate: number;
}

const payloadArbitrary: fc.Arbitrary<PayloadInput> = fc.record({
  t: timeArbitrary,
  readings: fc.array(readingArbitrary, { maxLength: 6 }),
  others: fc.array(
    fc.tuple(
      fc.constantFrom("m", "m", "m", "x", "_m", "__proto__", "data", "t", "r"),
      jsonArbitrary,
    ),
    { maxLength: 2 },
  ),
  deepM: fc.option(deepArbitrary, { freq: 4 }),
  order: fc.nat(),
  rLast: fc.boolean(),
  seed: fc.integer(),
  escapeRate: fc.constantFrom(0, 0, 0, 0, 0.02, 0.3),
}).map(({ t, readings, others, deepM, order, rLast, seed, escapeRate }) => {
  const members: (readonly [string, Json])[] = [["t", t], ["r", array(readings)], ...others];
  if (deepM !== null) members.push(["m", deepM]);
  // Usually t, r, then the rest, as loggers write it; sometimes any order.
  if (order % 4 === 0) {
    for (let i = members.length - 1; i > 0; i--) {
      const j = (order >>> 2) % (i + 1);
      [members[i], members[j]] = [members[j], members[i]];
    }
  }
  if (rLast && order % 5 === 0) members.push(["r", array(readings.slice(1))]);
  return { members, seed, escapeRate };
});

function payloadText(input: PayloadInput): string {
  const writer = new JsonWriter({
    seed: input.seed,
    compactRate: 0.5,
    escapeRate: input.escapeRate,
    shortEscapes: true,
  });
  return writer.space() + writer.value(object(input.members)) + writer.space();
}

/** Damage done to some payloads: bytes the pipeline must reject, or that change the meaning. */
const damageArbitrary = fc.oneof(
  { weight: 12, arbitrary: fc.constant(null) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constantFrom("truncate", "set", "insert", "delete", "bom", "nan", "swap"),
      at: fc.nat(),
      byte: fc.oneof(
        fc.integer({ min: 0, max: 255 }),
        fc.constantFrom(
          0x00,
          0x0a,
          0x1f,
          0x22,
          0x2c,
          0x3a,
          0x5c,
          0x7b,
          0x7d,
          0x5b,
          0x5d,
          0x80,
          0xff,
        ),
      ),
    }),
  },
);

type Damage = Exclude<typeof damageArbitrary extends fc.Arbitrary<infer T> ? T : never, null>;

function damaged(bytes: Uint8Array, damage: Damage): Uint8Array {
  const at = bytes.length === 0 ? 0 : damage.at % bytes.length;
  switch (damage.kind) {
    case "truncate":
      return bytes.slice(0, at);
    case "set": {
      const copy = bytes.slice();
      copy[at] = damage.byte;
      return copy;
    }
    case "insert":
      return new Uint8Array([...bytes.subarray(0, at), damage.byte, ...bytes.subarray(at)]);
    case "delete":
      return new Uint8Array([...bytes.subarray(0, at), ...bytes.subarray(at + 1)]);
    case "bom":
      return new Uint8Array([0xef, 0xbb, 0xbf, ...bytes]);
    case "nan": {
      // A NaN-like token where a value starts: after the first ":" at or after `at`.
      const colon = bytes.indexOf(0x3a, at);
      if (colon < 0) return bytes;
      const token = encoder.encode(["NaN", "Infinity", "-Infinity"][damage.byte % 3]);
      let end = colon + 1;
      while (end < bytes.length && ![0x2c, 0x7d, 0x5d].includes(bytes[end])) end++;
      return new Uint8Array([...bytes.subarray(0, colon + 1), ...token, ...bytes.subarray(end)]);
    }
    case "swap": {
      const copy = bytes.slice();
      const other = (at + 1 + damage.byte) % Math.max(1, bytes.length);
      [copy[at], copy[other]] = [copy[other], copy[at]];
      return copy;
    }
  }
}

const optionsArbitrary = fc.record({
  missingVid: fc.constantFrom("reject" as const, "drop" as const, "device" as const),
  maxDepth: fc.oneof(
    { weight: 3, arbitrary: fc.constant(32) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 8 }) },
  ),
  maxReadings: fc.oneof(
    { weight: 3, arbitrary: fc.constant(10000) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 5 }) },
  ),
  /** Sometimes near the payload's length. */
  maxPayloadSlack: fc.oneof(
    { weight: 8, arbitrary: fc.constant(null) },
    { weight: 1, arbitrary: fc.integer({ min: -3, max: 3 }) },
  ),
  recordMeta: fc.subarray(["node_id" as const, "topic" as const, "received_at" as const]),
  topic: fc.oneof(
    fc.constant(TOPIC),
    fc.string({ unit: "grapheme", maxLength: 20 }),
    fc.string({ unit: "binary", maxLength: 12 }),
  ),
});

/** The output a call starts with: empty or not, roomy or tiny. */
const outputArbitrary = fc.tuple(
  fc.uint8Array({ maxLength: 8 }),
  fc.constantFrom(0, 1, 16, 4096),
);

Deno.test("property: a yes is exactly the pipeline's one clean record; a no leaves the output be", () => {
  // One fast path per option set, reused across payloads as a worker reuses it.
  const instances = new Map<string, ReturnType<typeof createAmmpBytes>>();
  let clean = 0;
  let taken = 0;
  fc.assert(
    fc.property(
      payloadArbitrary,
      damageArbitrary,
      optionsArbitrary,
      outputArbitrary,
      fc.constantFrom(0, 0, 1, 6),
      (input, damage, settings, [prefix, spare], offset) => {
        const text = payloadText(input);
        let payload: Uint8Array = encoder.encode(text);
        if (damage !== null) payload = damaged(payload, damage);
        if (offset > 0) {
          // A view into a larger buffer, as payloads of a transferred batch are.
          const batch = new Uint8Array(offset + payload.length + 3).fill(0x22);
          batch.set(payload, offset);
          payload = batch.subarray(offset, offset + payload.length);
        }
        const options: PipelineOptions = {
          ...defaults,
          missingVid: settings.missingVid,
          maxDepth: settings.maxDepth,
          maxReadings: settings.maxReadings,
          maxPayloadBytes: settings.maxPayloadSlack === null
            ? defaults.maxPayloadBytes
            : Math.max(1, payload.length + settings.maxPayloadSlack),
          recordMeta: settings.recordMeta,
        };
        const message = messageOf(payload, settings.topic);
        const slow = createPipeline(options)(message);
        const metaText = recordMetaText(createRecordMeta(options)(message));

        const key = JSON.stringify([options.missingVid, options.maxDepth, options.maxReadings]) +
          options.maxPayloadBytes;
        let fast = instances.get(key);
        if (fast === undefined) instances.set(key, fast = createAmmpBytes(options));
        const out: ByteOutput = { bytes: new Uint8Array(prefix.length + spare), length: 0 };
        out.bytes.set(prefix);
        out.length = prefix.length;

        const ok = fast(payload, metaText, out);
        const context = () => `payload ${JSON.stringify(decoder.decode(payload).slice(0, 2000))}`;
        assert.deepEqual(out.bytes.subarray(0, prefix.length), prefix, "the bytes before");
        if (acceptedWhole(slow)) clean++;
        if (!ok) {
          assert.equal(out.length, prefix.length, "a no leaves out.length as it was");
          return;
        }
        taken++;
        assert.ok(acceptedWhole(slow), `the pipeline did not take it whole: ${context()}`);
        assert.ok(out.length <= out.bytes.length);
        assert.deepEqual(
          out.bytes.subarray(prefix.length, out.length),
          encoder.encode(slow.records[0]),
          `${context()}\nfast ${
            decoder.decode(out.bytes.subarray(prefix.length, out.length))
          }\nslow ${slow.records[0]}`,
        );
      },
    ),
    { numRuns: Number(Deno.env.get("PROPERTY_RUNS") ?? 10000) },
  );
  // Not a test that passes by always saying no: most clean payloads take the fast path.
  assert.ok(clean > 2000, `only ${clean} payloads were clean`);
  assert.ok(taken / clean > 0.5, `the fast path took ${taken} of ${clean} clean payloads`);
});

Deno.test("property: the streaming and collecting ways agree on shuffled readings", () => {
  // Readings of a few vendors over a few keys, in any order: every merge case, both ways.
  const reading = fc.tuple(
    fc.constantFrom("a", "b", "1"),
    fc.boolean(),
    fc.array(
      fc.tuple(
        fc.constantFrom("x", "y", "z"),
        fc.constantFrom("1", "2", "null", '"s"', "[1, 2]"),
      ),
      { maxLength: 4 },
    ),
    fc.boolean(),
  ).map(([vid, numeric, fields, vidLast]) => {
    const id = numeric && vid === "1" ? "1" : `"${vid}"`;
    const members = fields.map(([key, value]) => `"${key}": ${value}`);
    if (vidLast) members.push(`"_vid": ${id}`);
    else members.unshift(`"_vid": ${id}`);
    return `{${members.join(", ")}}`;
  });
  const fast = createAmmpBytes(defaults);
  const pipeline = createPipeline(defaults);
  const out: ByteOutput = { bytes: new Uint8Array(16), length: 0 };
  fc.assert(
    fc.property(fc.array(reading, { maxLength: 6 }), (readings) => {
      const payload = encoder.encode(`{"t": 1625576100, "r": [${readings.join(", ")}]}`);
      out.length = 0;
      assert.ok(fast(payload, "", out), decoder.decode(payload));
      assert.equal(
        decoder.decode(out.bytes.subarray(0, out.length)),
        pipeline(messageOf(payload)).records[0],
        decoder.decode(payload),
      );
    }),
    { numRuns: 3000 },
  );
});
