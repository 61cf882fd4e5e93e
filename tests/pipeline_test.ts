import assert from "node:assert/strict";
import {
  createPipeline,
  type PipelineOptions,
  type PipelineResult,
  type Rejection,
} from "../src/pipeline.ts";
import type { Message } from "../src/record.ts";
import { DEFAULT_PIPELINE_OPTIONS, SPEC_PAYLOAD, SPEC_RECORD } from "./_helpers/spec_example.ts";

const encoder = new TextEncoder();
const TOPIC = "a/b827eb2bb2a9/u/data";
const RECEIVED_AT = 1625576100123;
const TIME = "2021-07-06T12:55:00+00:00";

const defaults: PipelineOptions = DEFAULT_PIPELINE_OPTIONS;

/** Runs one payload; checks that every record is one line of valid JSON. */
function run(
  payload: string | Uint8Array,
  options: Partial<PipelineOptions> = {},
  message: Partial<Message> = {},
): PipelineResult {
  const pipeline = createPipeline({ ...defaults, ...options });
  const result = pipeline({
    topic: TOPIC,
    payload: typeof payload === "string" ? encoder.encode(payload) : payload,
    receivedAt: RECEIVED_AT,
    ...message,
  });
  for (const record of result.records) {
    assert.doesNotThrow(() => JSON.parse(record), record);
    assert.ok(!record.includes("\n"), record);
  }
  return result;
}

/** The one record a payload gives. */
function recordOf(payload: string, options: Partial<PipelineOptions> = {}): string {
  const result = run(payload, options);
  assert.equal(result.records.length, 1, JSON.stringify(result.rejections));
  return result.records[0];
}

/** The `data` text of the record for these readings at t = 1625576100. */
function dataOf(readings: string, options: Partial<PipelineOptions> = {}): string {
  const record = recordOf(`{"t":1625576100,"r":[${readings}]}`, options);
  const prefix = `{"time":"${TIME}","data":`;
  assert.ok(record.startsWith(prefix), record);
  return record.slice(prefix.length, -1);
}

/** The one rejection of a payload rejected as a whole. */
function rejectionOf(payload: string | Uint8Array, options: Partial<PipelineOptions> = {}) {
  const result = run(payload, options);
  assert.deepEqual(result.records, [], "expected no record");
  assert.equal(result.rejections.length, 1);
  return result.rejections[0];
}

// ---------------------------------------------------------------- ammp: SPEC §1

Deno.test("ammp turns SPEC §1's example into SPEC §1's record, byte for byte", () => {
  assert.deepEqual(run(SPEC_PAYLOAD), { records: [SPEC_RECORD], rejections: [], dropped: [] });
});

Deno.test("ammp gives the same record for the compact form of SPEC §1's example", () => {
  assert.equal(recordOf(JSON.stringify(JSON.parse(SPEC_PAYLOAD))), SPEC_RECORD);
});

Deno.test("time: whole seconds carry no fraction, a fractional t six digits", () => {
  const table: [string, string][] = [
    ["1625576100", "2021-07-06T12:55:00+00:00"],
    ["1625576100.25", "2021-07-06T12:55:00.250000+00:00"],
    ["1625576100.0000005", "2021-07-06T12:55:00.000001+00:00"],
    ["1.9999999", "1970-01-01T00:00:02.000000+00:00"],
    ["1.6255761e9", "2021-07-06T12:55:00+00:00"],
    ["0", "1970-01-01T00:00:00+00:00"],
    ["253402300799", "9999-12-31T23:59:59+00:00"],
  ];
  for (const [t, time] of table) {
    assert.equal(recordOf(`{"t":${t},"r":[]}`), `{"time":"${time}","data":{}}`, t);
  }
});

Deno.test("numbers come out exactly as written, digit for digit", () => {
  const numbers = [
    "229.70000000000002",
    "18446744073709551615",
    "1.50",
    "1e3",
    "-0",
    "1E+2",
    "0.1e-5",
    "-12345678901234567890.123456789012345678901234567890",
  ];
  for (const number of numbers) {
    assert.equal(dataOf(`{"_vid":"m","E":${number}}`), `{"m":{"E":${number}}}`);
  }
});

Deno.test("fields keep their order of appearance, integer-like keys included", () => {
  assert.equal(
    dataOf('{"_vid":"m","10":1,"2":2,"b":3,"1":4,"a":5}'),
    '{"m":{"10":1,"2":2,"b":3,"1":4,"a":5}}',
  );
});

Deno.test("vendor ids keep their order of first appearance, integer-like ids included", () => {
  assert.equal(
    dataOf('{"_vid":"10","a":1},{"_vid":"2","a":2},{"_vid":"10","b":3},{"_vid":"b","a":4}'),
    '{"10":{"a":1,"b":3},"2":{"a":2},"b":{"a":4}}',
  );
});

Deno.test("readings that share a _vid merge; a later reading's field wins in its first position", () => {
  assert.equal(
    dataOf('{"_vid":"m","a":1,"b":2},{"_vid":"m","c":3,"a":4}'),
    '{"m":{"a":4,"b":2,"c":3}}',
  );
});

Deno.test("a key repeated within a reading: the later value wins, in the first position", () => {
  assert.equal(dataOf('{"_vid":"m","a":1,"b":2,"a":3}'), '{"m":{"a":3,"b":2}}');
});

Deno.test("a repeated key whose later value is null is dropped, like any null field", () => {
  assert.equal(dataOf('{"_vid":"m","a":1,"b":2,"a":null}'), '{"m":{"b":2}}');
  assert.equal(dataOf('{"_vid":"m","a":null,"b":2,"a":1}'), '{"m":{"a":1,"b":2}}');
});

Deno.test("a null in a later reading does not erase an earlier reading's value", () => {
  assert.equal(dataOf('{"_vid":"m","a":1},{"_vid":"m","a":null}'), '{"m":{"a":1}}');
});

Deno.test("a field an earlier reading set to null appears where a later reading first gives it", () => {
  assert.equal(
    dataOf('{"_vid":"m","a":null,"b":1},{"_vid":"m","c":2,"a":3}'),
    '{"m":{"b":1,"c":2,"a":3}}',
  );
});

Deno.test("repeated keys decode before comparing: an escaped key is the same key, spelled as first written", () => {
  assert.equal(dataOf('{"_vid":"m","ab":1,"a\\u0062":2}'), '{"m":{"ab":2}}');
  assert.equal(dataOf('{"_vid":"m","a\\u0062":1},{"_vid":"m","ab":2}'), '{"m":{"a\\u0062":2}}');
});

Deno.test("fields whose name starts with _ are dropped, even when escaped", () => {
  assert.equal(
    dataOf('{"_vid":"m","_d":"x","_x":1,"\\u005fy":2,"__proto__":3,"a_":4}'),
    '{"m":{"a_":4}}',
  );
});

Deno.test("fields whose value is null are dropped", () => {
  assert.equal(
    dataOf('{"_vid":"m","a":null,"b":0,"c":false,"d":""}'),
    '{"m":{"b":0,"c":false,"d":""}}',
  );
});

Deno.test("strings, booleans, arrays and objects pass through unchanged as compact JSON", () => {
  assert.equal(
    dataOf(
      '{"_vid":"m","s":"x \\"y\\" \\u00e9 é","t":true,"f":false,' +
        '"a":[ 1.50 , "b" , null , [] ],"o":{ "z" : 1 , "10" : { "2" : 2e0 } , "a" : null }}',
    ),
    '{"m":{"s":"x \\"y\\" \\u00e9 é","t":true,"f":false,' +
      '"a":[1.50,"b",null,[]],"o":{"z":1,"10":{"2":2e0},"a":null}}}',
  );
});

Deno.test("a bare NaN, Infinity or -Infinity field reads as null and is dropped", () => {
  assert.equal(
    dataOf('{"_vid":"m","a":NaN,"b":Infinity,"c":-Infinity,"d":1}'),
    '{"m":{"d":1}}',
  );
});

Deno.test("a NaN token nested in a value becomes null; inside a string it is just text", () => {
  assert.equal(
    dataOf('{"_vid":"m","a":[NaN,1,-Infinity],"o":{"x":Infinity},"s":"NaN","t":"-Infinity"}'),
    '{"m":{"a":[null,1,null],"o":{"x":null},"s":"NaN","t":"-Infinity"}}',
  );
});

Deno.test("a _vid whose readings leave no fields appears as {}", () => {
  assert.equal(dataOf('{"_vid":"m","_d":"x","a":null},{"_vid":"n"}'), '{"m":{},"n":{}}');
});

Deno.test("m and every other top-level key are discarded", () => {
  assert.equal(
    recordOf('{"x":1,"t":1625576100,"m":{"a":1},"r":[{"_vid":"m","a":1}],"time":"no","data":{}}'),
    `{"time":"${TIME}","data":{"m":{"a":1}}}`,
  );
});

Deno.test("a repeated top-level t or r means its last value", () => {
  assert.equal(
    recordOf('{"t":"x","r":1,"t":1625576100,"r":[{"_vid":"m","a":1}]}'),
    `{"time":"${TIME}","data":{"m":{"a":1}}}`,
  );
});

Deno.test("a numeric _vid is taken as its decimal string as written", () => {
  assert.equal(
    dataOf('{"_vid":7,"a":1},{"_vid":"7","b":2},{"_vid":1e3,"c":3},{"_vid":1.50,"d":4}'),
    '{"7":{"a":1,"b":2},"1e3":{"c":3},"1.50":{"d":4}}',
  );
});

Deno.test("a _vid string with escapes is the same vendor as its plain spelling", () => {
  assert.equal(
    dataOf('{"_vid":"dse\\u002d1","a":1},{"_vid":"dse-1","b":2}'),
    '{"dse\\u002d1":{"a":1,"b":2}}',
  );
});

Deno.test("hostile keys are ordinary vendor ids and field names", () => {
  assert.equal(
    dataOf(
      '{"_vid":"__proto__","constructor":1,"toString":2,"hasOwnProperty":3,"valueOf":4},' +
        '{"_vid":"constructor","prototype":{"__proto__":{"polluted":true}}},' +
        '{"_vid":"toString","__defineGetter__":5,"length":6}',
    ),
    '{"__proto__":{"constructor":1,"toString":2,"hasOwnProperty":3,"valueOf":4},' +
      '"constructor":{"prototype":{"__proto__":{"polluted":true}}},"toString":{"length":6}}',
  );
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

Deno.test("an empty readings array gives a record with empty data", () => {
  assert.equal(recordOf('{"t":1625576100,"r":[]}'), `{"time":"${TIME}","data":{}}`);
});

Deno.test("one payload never leaks into the next record", () => {
  const pipeline = createPipeline(defaults);
  const message = (payload: string): Message => ({
    topic: TOPIC,
    payload: encoder.encode(payload),
    receivedAt: RECEIVED_AT,
  });
  pipeline(message('{"t":1625576100,"r":[{"_vid":"m","a":1}]}'));
  assert.deepEqual(
    pipeline(message('{"t":1625576100,"r":[{"_vid":"n","b":2}]}')).records,
    [`{"time":"${TIME}","data":{"n":{"b":2}}}`],
  );
});

// ---------------------------------------------------------------- readings that are rejected

Deno.test("an element of r that is not an object is rejected; the rest goes on", () => {
  const result = run(
    '{"t":1625576100,"r":[{"_vid":"m","a":1}, 42, [1], "x", null, {"_vid":"m","b":2}]}',
  );
  assert.deepEqual(result.records, [`{"time":"${TIME}","data":{"m":{"a":1,"b":2}}}`]);
  assert.deepEqual(
    result.rejections.map((rejection) => [rejection.reason, rejection.index, rejection.payload]),
    [
      ["invalid_reading", 1, "42"],
      ["invalid_reading", 2, "[1]"],
      ["invalid_reading", 3, '"x"'],
      ["invalid_reading", 4, "null"],
    ],
  );
  assert.equal(
    result.rejections[0].message,
    'reading r[1] is 42, not an object; expected an object such as {"_vid": "meter-1", "P": 15983}',
  );
});

const NO_VID_READINGS = '{"_vid":"m","a":1},' +
  '{"_d":"calc","b":2},' +
  '{"_d":"calc","_vid":null,"c":3},' +
  '{"_d":"calc","_vid":"","d":4},' +
  '{"_d":"calc","_vid":NaN,"e":5},' +
  '{"e":6}';

Deno.test("MISSING_VID=reject: readings with no usable _vid are rejected; the rest goes on", () => {
  const result = run(`{"t":1625576100,"r":[${NO_VID_READINGS}]}`, { missingVid: "reject" });
  assert.deepEqual(result.records, [`{"time":"${TIME}","data":{"m":{"a":1}}}`]);
  assert.deepEqual(result.dropped, []);
  assert.deepEqual(
    result.rejections.map(({ reason, index, device, payload }) => ({
      reason,
      index,
      device,
      payload,
    })),
    [
      { reason: "missing_vid", index: 1, device: "calc", payload: '{"_d":"calc","b":2}' },
      {
        reason: "missing_vid",
        index: 2,
        device: "calc",
        payload: '{"_d":"calc","_vid":null,"c":3}',
      },
      { reason: "missing_vid", index: 3, device: "calc", payload: '{"_d":"calc","_vid":"","d":4}' },
      {
        reason: "missing_vid",
        index: 4,
        device: "calc",
        payload: '{"_d":"calc","_vid":NaN,"e":5}',
      },
      { reason: "missing_vid", index: 5, device: undefined, payload: '{"e":6}' },
    ],
  );
});

Deno.test("MISSING_VID=reject: the message says which reading and how to keep or drop it", () => {
  const result = run('{"t":1625576100,"r":[{},{},{"_d":"calc","P":1}]}');
  assert.equal(
    result.rejections[2].message,
    'reading r[2] has no "_vid" (device "calc"); set MISSING_VID=device to keep such readings ' +
      'under their "_d", or MISSING_VID=drop to ignore them',
  );
  assert.equal(
    result.rejections[0].message,
    'reading r[0] has no "_vid" and no usable "_d"; set MISSING_VID=drop to ignore such readings',
  );
});

Deno.test("MISSING_VID=drop: readings with no usable _vid are dropped, not rejected", () => {
  const result = run(`{"t":1625576100,"r":[${NO_VID_READINGS}]}`, { missingVid: "drop" });
  assert.deepEqual(result.records, [`{"time":"${TIME}","data":{"m":{"a":1}}}`]);
  assert.deepEqual(result.rejections, []);
  assert.deepEqual(result.dropped, [
    { index: 1, device: "calc" },
    { index: 2, device: "calc" },
    { index: 3, device: "calc" },
    { index: 4, device: "calc" },
    { index: 5 },
  ]);
});

Deno.test("MISSING_VID=device: readings are kept under their _d; with no _d they are rejected", () => {
  const result = run(`{"t":1625576100,"r":[${NO_VID_READINGS}]}`, { missingVid: "device" });
  assert.deepEqual(result.records, [
    `{"time":"${TIME}","data":{"m":{"a":1},"calc":{"b":2,"c":3,"d":4,"e":5}}}`,
  ]);
  assert.deepEqual(result.dropped, []);
  assert.deepEqual(result.rejections.map(({ reason, index }) => [reason, index]), [[
    "missing_vid",
    5,
  ]]);
});

Deno.test("MISSING_VID=device: a _d naming an existing vendor merges into it; a numeric _d is its text", () => {
  assert.equal(
    dataOf('{"_vid":"calc","a":1},{"_d":"calc","b":2},{"_d":12,"c":3}', { missingVid: "device" }),
    '{"calc":{"a":1,"b":2},"12":{"c":3}}',
  );
});

Deno.test("a _vid that is not a string or number counts as missing, and the message says so", () => {
  const result = run('{"t":1625576100,"r":[{"_vid":true,"_d":"x","a":1},{"_vid":{"id":1},"a":2}]}');
  assert.deepEqual(result.rejections.map((rejection) => rejection.reason), [
    "missing_vid",
    "missing_vid",
  ]);
  assert.match(
    result.rejections[0].message,
    /^reading r\[0\] has "_vid" true, not a non-empty string or number/,
  );
  assert.equal(
    dataOf('{"_vid":true,"_d":"x","a":1}', { missingVid: "device" }),
    '{"x":{"a":1}}',
  );
});

Deno.test("a reading's _vid and _d are their last value when repeated", () => {
  assert.equal(dataOf('{"_vid":"a","_vid":"b","x":1}'), '{"b":{"x":1}}');
  assert.deepEqual(
    run('{"t":1,"r":[{"_vid":"a","_vid":null}]}').rejections[0].reason,
    "missing_vid",
  );
});

// ---------------------------------------------------------------- whole-payload rejections

Deno.test("every whole-payload rejection reason, with the original bytes as payload", () => {
  const table: [string | Uint8Array, Partial<PipelineOptions>, string][] = [
    [new Uint8Array([0x7b, 0xff, 0x7d]), {}, "invalid_utf8"],
    ['{"t":1625576100,"r":[],}', {}, "invalid_json"],
    ["", {}, "invalid_json"],
    ["[1,2]", {}, "not_an_object"],
    ['"x"', {}, "not_an_object"],
    ['{"t":1625576100,"r":[[[[[[1]]]]]]}', { maxDepth: 6 }, "too_deep"],
    ['{"t":1625576100,"r":[{},{},{}]}', { maxReadings: 2 }, "too_many_readings"],
    ['{"r":[]}', {}, "invalid_time"],
    ['{"t":"1625576100","r":[]}', {}, "invalid_time"],
    ['{"t":null,"r":[]}', {}, "invalid_time"],
    ['{"t":NaN,"r":[]}', {}, "invalid_time"],
    ['{"t":-1,"r":[]}', {}, "invalid_time"],
    ['{"t":253402300800,"r":[]}', {}, "invalid_time"],
    ['{"t":1e400,"r":[]}', {}, "invalid_time"],
    ['{"t":1625576100}', {}, "invalid_readings"],
    ['{"t":1625576100,"r":{}}', {}, "invalid_readings"],
    ['{"t":1625576100,"r":null}', {}, "invalid_readings"],
  ];
  for (const [payload, options, reason] of table) {
    const bytes = typeof payload === "string" ? encoder.encode(payload) : payload;
    const rejection = rejectionOf(bytes, options);
    assert.equal(rejection.reason, reason, new TextDecoder().decode(bytes));
    assert.equal(rejection.payload, bytes, "the payload is the original bytes");
    assert.equal(rejection.index, undefined);
  }
});

Deno.test("an oversized payload's dead letter keeps only its first MAX_PAYLOAD_BYTES bytes", () => {
  const payload = encoder.encode('{"t":1625576100,"r":[]}');
  const rejection = rejectionOf(payload, { maxPayloadBytes: 10 });
  assert.equal(rejection.reason, "payload_too_large");
  assert.deepEqual(rejection.payload, encoder.encode('{"t":16255'));
  assert.equal(rejection.index, undefined);
});

Deno.test("an oversized payload's kept bytes end on a character boundary, so text stays text", () => {
  // "é" is 2 bytes and "€" 3: a cut inside either moves back to where it starts.
  assert.deepEqual(
    rejectionOf(encoder.encode('"aé"'), { maxPayloadBytes: 3 }).payload,
    encoder.encode('"a'),
  );
  assert.deepEqual(
    rejectionOf(encoder.encode('"€"'), { maxPayloadBytes: 3 }).payload,
    encoder.encode('"'),
  );
  assert.deepEqual(
    rejectionOf(encoder.encode('"€"'), { maxPayloadBytes: 4 }).payload,
    encoder.encode('"€'),
  );
  // Continuation bytes with no start byte are not text: the cut moves back at most three bytes.
  const binary = new Uint8Array([0xff, 0x80, 0x80, 0x80, 0x80]);
  assert.deepEqual(rejectionOf(binary, { maxPayloadBytes: 4 }).payload, binary.slice(0, 1));
  assert.deepEqual(rejectionOf(binary.slice(1), { maxPayloadBytes: 3 }).payload, new Uint8Array());
});

Deno.test("rejection messages say what is wrong and what to do", () => {
  const table: [string | Uint8Array, Partial<PipelineOptions>, string][] = [
    [
      '{"t": 1625576100,}',
      {},
      'payload is not valid JSON: unexpected "}" at byte 17; expected a key',
    ],
    ['{"t":1625576100', {}, "payload is not valid JSON: unexpected end of payload at byte 15"],
    ['{"v":"é",]', {}, 'payload is not valid JSON: unexpected "]" at byte 10; expected a key'],
    ["", {}, "payload is empty; expected a JSON object"],
    [
      '{"r":[]}',
      {},
      '"t" is missing; expected Unix epoch seconds such as 1625576100',
    ],
    [
      '{"t":"1625576100","r":[]}',
      {},
      '"t" is a string ("1625576100"), not a number; expected Unix epoch seconds such as 1625576100',
    ],
    [
      '{"t":-1,"r":[]}',
      {},
      '"t" -1 is outside 0 to 253402300799 (1970 to 9999); expected Unix epoch seconds such as 1625576100',
    ],
    [
      '{"t":1625576100}',
      {},
      '"r" is missing; expected an array of readings such as [{"_vid": "meter-1", "P": 15983}]',
    ],
    [
      '{"t":1625576100,"r":{}}',
      {},
      '"r" is an object, not an array; expected an array of readings',
    ],
    [
      '{"t":1625576100,"r":[{},{},{}]}',
      { maxReadings: 2 },
      '"r" has 3 readings, more than the limit of 2; split the payload or raise MAX_READINGS',
    ],
    [
      "[1]",
      {},
      'payload is an array, not a JSON object; expected {"t": ..., "r": [...]}',
    ],
    [
      '{"a":[[1]]}',
      { maxDepth: 2 },
      "payload nests deeper than 2 levels of objects and arrays (at byte 6); " +
      "flatten it or raise MAX_NESTING_DEPTH",
    ],
    [
      '{"t":1625576100,"r":[]}',
      { maxPayloadBytes: 10 },
      "payload is 23 bytes, more than MAX_PAYLOAD_BYTES (10); raise MAX_PAYLOAD_BYTES if such payloads are expected " +
      "(the dead letter keeps its first 10 bytes)",
    ],
    [
      new Uint8Array([0x7b, 0xff, 0x7d]),
      {},
      "payload is not valid UTF-8: invalid byte 0xff at byte 1; the datalogger must send JSON encoded as UTF-8",
    ],
  ];
  for (const [payload, options, message] of table) {
    assert.equal(rejectionOf(payload, options).message, message);
  }
});

Deno.test("a payload of exactly MAX_PAYLOAD_BYTES is accepted", () => {
  const payload = '{"t":1625576100,"r":[]}';
  assert.equal(run(payload, { maxPayloadBytes: payload.length }).records.length, 1);
});

Deno.test("exactly maxReadings readings are accepted", () => {
  assert.equal(
    run('{"t":1625576100,"r":[{},{}]}', { maxReadings: 2, missingVid: "drop" }).records.length,
    1,
  );
});

Deno.test("exactly maxDepth levels are accepted", () => {
  // payload 1, r 2, reading 3, value 4, nested 5
  assert.equal(dataOf('{"_vid":"m","a":[[1]]}', { maxDepth: 5 }), '{"m":{"a":[[1]]}}');
  assert.equal(
    rejectionOf('{"t":1,"r":[{"_vid":"m","a":[[[1]]]}]}', { maxDepth: 5 }).reason,
    "too_deep",
  );
});

Deno.test("100 000 nested brackets are rejected as too_deep, not a stack overflow", () => {
  assert.equal(rejectionOf("[".repeat(100_000)).reason, "too_deep");
  assert.equal(
    rejectionOf('{"t":1,"r":[' + "[".repeat(100_000) + "]".repeat(100_000) + "]}").reason,
    "too_deep",
  );
});

Deno.test("a UTF-8 byte order mark is accepted and counted in byte offsets", () => {
  const bom = [0xef, 0xbb, 0xbf];
  const accepted = new Uint8Array([...bom, ...encoder.encode('{"t":1625576100,"r":[]}')]);
  assert.equal(run(accepted).records[0], `{"time":"${TIME}","data":{}}`);
  const broken = new Uint8Array([...bom, ...encoder.encode("{,}")]);
  assert.equal(
    rejectionOf(broken).message,
    'payload is not valid JSON: unexpected "," at byte 4; expected a key',
  );
});

// ---------------------------------------------------------------- RECORD_META

Deno.test("RECORD_META adds node_id, topic and received_at after time, in the order given", () => {
  const payload = '{"t":1625576100,"r":[]}';
  const table: [PipelineOptions["recordMeta"], string][] = [
    [[], `{"time":"${TIME}","data":{}}`],
    [["node_id"], `{"time":"${TIME}","node_id":"b827eb2bb2a9","data":{}}`],
    [["topic"], `{"time":"${TIME}","topic":"a/b827eb2bb2a9/u/data","data":{}}`],
    [["received_at"], `{"time":"${TIME}","received_at":"2021-07-06T12:55:00.123+00:00","data":{}}`],
    [
      ["received_at", "topic", "node_id"],
      `{"time":"${TIME}","received_at":"2021-07-06T12:55:00.123+00:00",` +
      `"topic":"a/b827eb2bb2a9/u/data","node_id":"b827eb2bb2a9","data":{}}`,
    ],
    [["topic", "topic"], `{"time":"${TIME}","topic":"a/b827eb2bb2a9/u/data","data":{}}`],
  ];
  for (const [recordMeta, record] of table) {
    assert.equal(recordOf(payload, { recordMeta }), record, recordMeta.join());
  }
});

Deno.test("node_id is the topic level at topicNodeLevel; omitted when the topic has none", () => {
  const payload = encoder.encode('{"t":1625576100,"r":[]}');
  const table: [string, number, string][] = [
    ["a/b827eb2bb2a9/u/data", 1, '"node_id":"b827eb2bb2a9",'],
    ["a/b827eb2bb2a9/u/data", 0, '"node_id":"a",'],
    ["a/b827eb2bb2a9/u/data", 3, '"node_id":"data",'],
    ["a/b827eb2bb2a9/u/data", 4, ""],
    ["a", 1, ""],
    ["a//u/data", 1, '"node_id":"",'],
  ];
  for (const [topic, topicNodeLevel, member] of table) {
    const result = run(payload, { recordMeta: ["node_id"], topicNodeLevel }, { topic });
    assert.equal(
      result.records[0],
      `{"time":"${TIME}",${member}"data":{}}`,
      `${topic} ${topicNodeLevel}`,
    );
  }
});

Deno.test("a topic with characters JSON must escape is written escaped", () => {
  const result = run('{"t":1625576100,"r":[]}', { recordMeta: ["topic"] }, {
    topic: 'a/"x\\y"/u/data',
  });
  assert.equal(result.records[0], `{"time":"${TIME}","topic":"a/\\"x\\\\y\\"/u/data","data":{}}`);
});

// ---------------------------------------------------------------- raw

Deno.test("raw passes the payload's JSON unchanged as one compact line", () => {
  assert.equal(
    recordOf(SPEC_PAYLOAD, { transform: "raw" }),
    JSON.stringify(JSON.parse(SPEC_PAYLOAD)),
  );
});

Deno.test("raw keeps numbers, keys, order and duplicates as written; NaN tokens become null", () => {
  assert.equal(
    recordOf(
      '{ "10": 18446744073709551615, "2": [1.50, NaN, -Infinity, "NaN"], "a": 1e3, "a": { "x" : Infinity } }',
      { transform: "raw" },
    ),
    '{"10":18446744073709551615,"2":[1.50,null,null,"NaN"],"a":1e3,"a":{"x":null}}',
  );
});

Deno.test("raw does not need t or r", () => {
  assert.equal(recordOf('{"anything": "goes"}', { transform: "raw" }), '{"anything":"goes"}');
});

Deno.test("raw rejects a payload that is not a JSON object", () => {
  const rejection = rejectionOf("[1, 2]", { transform: "raw" });
  assert.equal(rejection.reason, "not_an_object");
  assert.equal(
    rejection.message,
    "payload is an array, not a JSON object; TRANSFORM=raw passes on objects only",
  );
});

Deno.test("raw applies the size, UTF-8, JSON and depth rules", () => {
  const raw = { transform: "raw" } as const;
  assert.equal(rejectionOf("{}", { ...raw, maxPayloadBytes: 1 }).reason, "payload_too_large");
  assert.equal(rejectionOf(new Uint8Array([0x7b, 0xfe, 0x7d]), raw).reason, "invalid_utf8");
  assert.equal(rejectionOf("{'a':1}", raw).reason, "invalid_json");
  assert.equal(rejectionOf('{"a":[[]]}', { ...raw, maxDepth: 2 }).reason, "too_deep");
});

Deno.test("raw puts RECORD_META keys first, replacing payload keys of the same name", () => {
  assert.equal(
    recordOf(
      '{"t": 1, "node_id": "spoofed", "x": [1, 2], "topic": "spoofed", "node_id": "again"}',
      { transform: "raw", recordMeta: ["node_id", "topic", "received_at"] },
    ),
    '{"node_id":"b827eb2bb2a9","topic":"a/b827eb2bb2a9/u/data",' +
      '"received_at":"2021-07-06T12:55:00.123+00:00","t":1,"x":[1,2]}',
  );
});

Deno.test("raw keeps a payload's node_id when the topic has no node level to replace it", () => {
  const result = run('{"node_id":"own"}', { transform: "raw", recordMeta: ["node_id"] }, {
    topic: "flat",
  });
  assert.deepEqual(result.records, ['{"node_id":"own"}']);
});

Deno.test("raw with RECORD_META on an empty object gives only the meta keys", () => {
  assert.equal(
    recordOf("{}", { transform: "raw", recordMeta: ["topic"] }),
    '{"topic":"a/b827eb2bb2a9/u/data"}',
  );
});

// ---------------------------------------------------------------- options

Deno.test("createPipeline refuses options that cannot work, naming the option", () => {
  const table: [Partial<PipelineOptions>, RegExp][] = [
    [{ maxPayloadBytes: 0 }, /maxPayloadBytes is 0/],
    [{ maxDepth: 1.5 }, /maxDepth is 1.5/],
    [{ maxReadings: -1 }, /maxReadings is -1/],
    [{ topicNodeLevel: -1 }, /topicNodeLevel is -1/],
    [{ transform: "xml" as "raw" }, /transform is "xml"/],
    [{ missingVid: "ignore" as "drop" }, /missingVid is "ignore"/],
    [{ recordMeta: ["host" as "topic"] }, /recordMeta lists "host"/],
  ];
  for (const [options, message] of table) {
    assert.throws(() => createPipeline({ ...defaults, ...options }), {
      name: "RangeError",
      message,
    });
  }
});

// ---------------------------------------------------------------- robustness

/** A tiny seeded generator, so a failure can be replayed. */
function randomSource(seed: number): () => number {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
}

Deno.test("random bytes and mutated payloads never throw, and every record is valid JSON", () => {
  const random = randomSource(1);
  const ammp = createPipeline({ ...defaults, maxDepth: 8, maxReadings: 50 });
  const raw = createPipeline({ ...defaults, transform: "raw", recordMeta: ["topic"] });
  const base = encoder.encode(SPEC_PAYLOAD.replace("0.06", "NaN"));
  const check = (payload: Uint8Array) => {
    for (const pipeline of [ammp, raw]) {
      const result = pipeline({ topic: TOPIC, payload, receivedAt: RECEIVED_AT });
      for (const record of result.records) JSON.parse(record);
      for (const rejection of result.rejections) assert.ok(rejection.message.length > 0);
    }
  };
  for (let n = 0; n < 3000; n++) {
    check(new Uint8Array(Math.floor(random() * 64)).map(() => Math.floor(random() * 256)));
    const mutated = base.slice();
    for (let edits = 1 + Math.floor(random() * 4); edits > 0; edits--) {
      mutated[Math.floor(random() * mutated.length)] = Math.floor(random() * 256);
    }
    check(mutated);
  }
});

/** The merge rule as a model: each reading as JSON.parse would see it, minus _ and null, merged in order. */
function modelData(readings: [string, string][][]): string {
  const vendors = new Map<string, Map<string, string>>();
  for (const reading of readings) {
    const object = new Map<string, string>();
    for (const [key, value] of reading) object.set(key, value);
    const vid = object.get("_vid");
    if (vid === undefined || vid === "null") continue;
    const id = JSON.parse(vid) as string;
    if (!vendors.has(id)) vendors.set(id, new Map());
    const fields = vendors.get(id)!;
    for (const [key, value] of object) {
      if (!key.startsWith("_") && value !== "null") fields.set(key, value);
    }
  }
  return "{" +
    [...vendors].map(([id, fields]) =>
      JSON.stringify(id) + ":{" + [...fields].map(([key, value]) => `"${key}":${value}`).join(",") +
      "}"
    ).join(",") + "}";
}

Deno.test("merging agrees with its model on random readings with repeats and nulls", () => {
  const random = randomSource(5);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
  const keys = ["a", "b", "10", "2", "_x", "c"];
  const values = ["1", "null", "2.50", '"s"', "[1,null]", "true"];
  for (let n = 0; n < 3000; n++) {
    const readings: [string, string][][] = [];
    for (let r = Math.floor(random() * 5); r > 0; r--) {
      const reading: [string, string][] = [["_vid", pick(['"v"', '"w"', '"10"', "null"])]];
      for (let f = Math.floor(random() * 6); f > 0; f--) reading.push([pick(keys), pick(values)]);
      // Shuffle so that _vid is not always first.
      reading.sort(() => random() - 0.5);
      readings.push(reading);
    }
    const text = readings.map((reading) =>
      "{" + reading.map(([key, value]) => `"${key}" : ${value}`).join(", ") + "}"
    ).join(", ");
    assert.equal(dataOf(text, { missingVid: "drop" }), modelData(readings), text);
  }
});

// Hostile shapes at sizes where quadratic work would take minutes. These tests
// check the answers only; bench/pipeline_bench.ts times the same shapes at
// growing sizes to show the work grows linearly, and a hang here is caught by
// the test runner, not by a clock in the test.
const LARGE: Partial<PipelineOptions> = {
  maxPayloadBytes: 4 * 1024 * 1024,
  maxReadings: 1_000_000,
};

Deno.test("a million-digit number passes through digit for digit", () => {
  const digits = "9".repeat(1_000_000);
  assert.equal(
    recordOf(`{"t":1625576100,"r":[{"_vid":"m","E":${digits}}]}`, LARGE),
    `{"time":"${TIME}","data":{"m":{"E":${digits}}}}`,
  );
});

Deno.test("a million-digit t is rejected with a message of ordinary length", () => {
  const rejection = rejectionOf(`{"t":${"1".repeat(1_000_000)},"r":[]}`, LARGE);
  assert.equal(rejection.reason, "invalid_time");
  assert.ok(rejection.message.length < 200, rejection.message.slice(0, 300));
});

Deno.test("one field repeated 100 000 times in a reading is one field", () => {
  assert.equal(dataOf(`{"_vid":"m"${',"a":1'.repeat(99_999)},"a":2}`, LARGE), '{"m":{"a":2}}');
});

Deno.test("100 000 readings of one vendor merge into one object", () => {
  const result = run(`{"t":1625576100,"r":[${'{"_vid":"m","a":1},'.repeat(99_999)}{}]}`, LARGE);
  assert.deepEqual(result.records, [`{"time":"${TIME}","data":{"m":{"a":1}}}`]);
  assert.equal(result.rejections.length, 1);
  assert.equal(result.rejections[0].index, 99_999);
});

Deno.test("100 000 vendors each get their object, in order of appearance", () => {
  const ids = Array.from({ length: 100_000 }, (_, i) => i);
  assert.equal(
    dataOf(ids.map((i) => `{"_vid":${i},"v":${i}}`).join(","), LARGE),
    "{" + ids.map((i) => `"${i}":{"v":${i}}`).join(",") + "}",
  );
});

Deno.test("100 000 readings that are not objects are 100 000 rejections, each with its index", () => {
  const result = run(`{"t":1625576100,"r":[${"1,".repeat(99_999)}1]}`, LARGE);
  assert.deepEqual(result.records, [`{"time":"${TIME}","data":{}}`]);
  assert.equal(result.rejections.length, 100_000);
  assert.ok(result.rejections.every((rejection, i) => rejection.index === i));
});

Deno.test("long strings full of escapes, as a key and a value, keep their meaning", () => {
  const key = "\\n".repeat(200_000);
  const value = "\\u00e9".repeat(200_000);
  const data = JSON.parse(dataOf(`{"_vid":"m","${key}":"${value}"}`, LARGE));
  assert.deepEqual(Object.keys(data.m), ["\n".repeat(200_000)]);
  assert.equal(data.m["\n".repeat(200_000)], "é".repeat(200_000));
});

Deno.test("whitespace everywhere is removed from values without changing them", () => {
  assert.equal(
    dataOf(`{"_vid":"m","a":[${"1,          ".repeat(100_000)}1]}`, LARGE),
    `{"m":{"a":[${"1,".repeat(100_000)}1]}}`,
  );
});

Deno.test("nesting exactly at a large MAX_NESTING_DEPTH is accepted and kept whole", () => {
  // payload 1, r 2, reading 3, so the field's value may nest maxDepth - 3 levels.
  const levels = 10_000 - 3;
  const value = "[".repeat(levels) + "]".repeat(levels);
  assert.equal(dataOf(`{"_vid":"m","a":${value}}`, { maxDepth: 10_000 }), `{"m":{"a":${value}}}`);
  assert.equal(
    rejectionOf(`{"t":1,"r":[{"_vid":"m","a":[${value}]}]}`, { maxDepth: 10_000 }).reason,
    "too_deep",
  );
});

Deno.test("rejections carry the reading's own source text, not the whole payload", () => {
  const rejection: Rejection = run('{"t":1,"r":[ { "_d" : "calc" , "P" : 1 } ]}').rejections[0];
  assert.equal(rejection.payload, '{ "_d" : "calc" , "P" : 1 }');
});
