/**
 * Micro-benchmark of the pure pipeline on SPEC §1's example payload, against
 * a plain `JSON.parse` of the same text as the baseline; and of the `ammp`
 * fast path (src/stages/ammp_bytes.ts) against the pipeline it stands in for.
 * Run: `deno bench bench/pipeline_bench.ts`
 * @module
 */

import { createPipeline, type PipelineOptions } from "../src/pipeline.ts";
import { type ByteOutput, createAmmpBytes, recordMetaText } from "../src/stages/ammp_bytes.ts";
import { createRecordMeta } from "../src/stages/record_meta.ts";
import { DEFAULT_PIPELINE_OPTIONS } from "../tests/_helpers/spec_example.ts";
import { benchPayload } from "./payload.ts";

// SPEC §1's example, as a Python datalogger's json.dumps would send it (", " and ": ").
const specPayload = JSON.stringify(
  {
    t: 1625576100,
    r: [
      {
        _d: "logger",
        _vid: "strato-1",
        boot_time: 1625563315,
        cpu_load: 0.06,
        memory_usage: 17.2,
      },
      { _d: "logger_strato", _vid: "strato-1", cpu_temp: 60.148, disk_usage: 45.8 },
      {
        _d: "diesel_sensor",
        _vid: "gamicos-1",
        level: 0.5670797228813171,
        genset_fuel_volume: 2477.2705366611485,
      },
      {
        _d: "dse855",
        _vid: "dse-1",
        E: 86744200,
        P: 15983,
        V_L3: 229.70000000000002,
        fuel_used: null,
        temp_oil: null,
      },
    ],
    m: {
      snap_rev: 670,
      config_id: "c5b2543",
      reading_duration: 0.9248790740966797,
      reading_offset: 0,
    },
  },
).replaceAll(",", ", ").replaceAll('":', '": ');
const compactPayload = JSON.stringify(JSON.parse(specPayload));
const specBytes = new TextEncoder().encode(specPayload);
const compactBytes = new TextEncoder().encode(compactPayload);

const options: PipelineOptions = DEFAULT_PIPELINE_OPTIONS;
const ammp = createPipeline(options);
const ammpWithMeta = createPipeline({ ...options, recordMeta: ["node_id", "received_at"] });
const raw = createPipeline({ ...options, transform: "raw" });
const decoder = new TextDecoder("utf-8", { fatal: true });
const topic = "a/b827eb2bb2a9/u/data";

Deno.bench("baseline: TextDecoder + JSON.parse (SPEC §1 example)", {
  group: "spec",
  baseline: true,
}, () => {
  JSON.parse(decoder.decode(specBytes));
});

Deno.bench("pipeline ammp (SPEC §1 example)", { group: "spec" }, () => {
  ammp({ topic, payload: specBytes, receivedAt: 1625576100123 });
});

Deno.bench("pipeline ammp + RECORD_META node_id,received_at", { group: "spec" }, () => {
  ammpWithMeta({ topic, payload: specBytes, receivedAt: 1625576100123 });
});

Deno.bench("pipeline raw (SPEC §1 example)", { group: "spec" }, () => {
  raw({ topic, payload: specBytes, receivedAt: 1625576100123 });
});

Deno.bench(
  "baseline: TextDecoder + JSON.parse (compact)",
  { group: "compact", baseline: true },
  () => {
    JSON.parse(decoder.decode(compactBytes));
  },
);

Deno.bench("pipeline ammp (compact)", { group: "compact" }, () => {
  ammp({ topic, payload: compactBytes, receivedAt: 1625576100123 });
});

Deno.bench("pipeline raw (compact)", { group: "compact" }, () => {
  raw({ topic, payload: compactBytes, receivedAt: 1625576100123 });
});

// ---------------------------------------------------------------- hostile shapes (issue #5)
// Each shape at three sizes, a factor of four apart: time per payload should
// grow by about four from one size to the next (linear), never by sixteen.
// These are the shapes tests/pipeline_test.ts checks for correctness at scale.

const hostileOptions: PipelineOptions = {
  ...options,
  maxPayloadBytes: 64 * 1024 * 1024,
  maxReadings: 10_000_000,
};
const hostile = createPipeline(hostileOptions);

/** Each shape, and its sizes: the million digits and 100 000 keys or vendors in the middle. */
const hostileShapes: [string, (n: number) => string, number[]][] = [
  [
    "n-digit number",
    (n) => `{"t":1625576100,"r":[{"_vid":"m","E":${"9".repeat(n)}}]}`,
    [250_000, 1_000_000, 4_000_000],
  ],
  [
    "one key repeated n times",
    (n) => `{"t":1625576100,"r":[{"_vid":"m"${',"a":1'.repeat(n)}}]}`,
    [25_000, 100_000, 400_000],
  ],
  [
    "n vendors",
    (n) =>
      `{"t":1625576100,"r":[${Array.from({ length: n }, (_, i) => `{"_vid":${i}}`).join(",")}]}`,
    [25_000, 100_000, 400_000],
  ],
  [
    "n readings of one vendor",
    (n) => `{"t":1625576100,"r":[${'{"_vid":"m","a":1},'.repeat(n - 1)}{"_vid":"m"}]}`,
    [25_000, 100_000, 400_000],
  ],
  [
    "n escapes in a key and a value",
    (n) => `{"t":1625576100,"r":[{"_vid":"m","${"\\n".repeat(n)}":"${"\\u00e9".repeat(n)}"}]}`,
    [250_000, 1_000_000, 4_000_000],
  ],
];

for (const [shape, make, sizes] of hostileShapes) {
  for (const n of sizes) {
    const payload = new TextEncoder().encode(make(n));
    Deno.bench(`hostile: ${shape}, n = ${n} (${payload.byteLength} bytes)`, {
      group: `hostile: ${shape}`,
      baseline: n === sizes[0],
    }, () => {
      hostile({ topic, payload, receivedAt: 1625576100123 });
    });
  }
}

// Nesting at the limit: a value nested maxDepth - 3 levels (payload, r and the
// reading take three), with MAX_NESTING_DEPTH at its largest allowed values.
for (const maxDepth of [625, 2_500, 10_000]) {
  const nested = createPipeline({ ...options, maxDepth });
  const levels = maxDepth - 3;
  const payload = new TextEncoder().encode(
    `{"t":1625576100,"r":[{"_vid":"m","a":${"[".repeat(levels)}${"]".repeat(levels)}}]}`,
  );
  Deno.bench(`hostile: nesting at MAX_NESTING_DEPTH = ${maxDepth}`, {
    group: "hostile: nesting at the limit",
    baseline: maxDepth === 625,
  }, () => {
    nested({ topic, payload, receivedAt: 1625576100123 });
  });
}

// The default limit, 32 levels, reached many times over in one payload.
const deepMany = createPipeline({ ...hostileOptions, maxDepth: 32 });
for (const n of [1_000, 4_000, 16_000]) {
  const deep = "[".repeat(29) + "]".repeat(29);
  const payload = new TextEncoder().encode(
    `{"t":1625576100,"r":[{"_vid":"m","a":[${Array(n).fill(deep).join(",")}]}]}`,
  );
  Deno.bench(`hostile: ${n} values nested to the default limit of 32`, {
    group: "hostile: many values at depth 32",
    baseline: n === 1_000,
  }, () => {
    deepMany({ topic, payload, receivedAt: 1625576100123 });
  });
}

// ---------------------------------------------------------------- the byte-level fast path
// src/stages/ammp_bytes.ts against the pipeline on the payloads that matter most: SPEC §1's
// example and the load benchmark's (bench/load.ts, about 1 KB, Python's separators), 64 of
// them in turn, each with its own `t`, as a logger's backlog arrives.

const fastAmmp = createAmmpBytes(options);
const fastOutput: ByteOutput = { bytes: new Uint8Array(64 * 1024), length: 0 };
const loadPayloads = Array.from(
  { length: 64 },
  (_, i) => new TextEncoder().encode(benchPayload(1625576100 + i * 60, i)),
);
let nextLoad = 0;
const metaOf = createRecordMeta({ recordMeta: ["node_id", "received_at"], topicNodeLevel: 1 });

Deno.bench("pipeline ammp (SPEC §1 example)", {
  group: "fast path: SPEC §1 example",
  baseline: true,
}, () => {
  ammp({ topic, payload: specBytes, receivedAt: 1625576100123 });
});

Deno.bench("fast path (SPEC §1 example)", { group: "fast path: SPEC §1 example" }, () => {
  fastOutput.length = 0;
  fastAmmp(specBytes, "", fastOutput);
});

Deno.bench("pipeline ammp (benchPayload)", {
  group: "fast path: benchPayload",
  baseline: true,
}, () => {
  ammp({ topic, payload: loadPayloads[nextLoad++ & 63], receivedAt: 1625576100123 });
});

Deno.bench("fast path (benchPayload)", { group: "fast path: benchPayload" }, () => {
  fastOutput.length = 0;
  fastAmmp(loadPayloads[nextLoad++ & 63], "", fastOutput);
});

Deno.bench("pipeline ammp + RECORD_META node_id,received_at (benchPayload)", {
  group: "fast path: benchPayload",
}, () => {
  ammpWithMeta({ topic, payload: loadPayloads[nextLoad++ & 63], receivedAt: 1625576100123 });
});

Deno.bench("fast path + RECORD_META node_id,received_at (benchPayload)", {
  group: "fast path: benchPayload",
}, () => {
  const message = { topic, payload: loadPayloads[nextLoad++ & 63], receivedAt: 1625576100123 };
  fastOutput.length = 0;
  fastAmmp(message.payload, recordMetaText(metaOf(message)), fastOutput);
});
