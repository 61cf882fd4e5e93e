/**
 * Micro-benchmark of the pure pipeline on SPEC §1's example payload, against
 * a plain `JSON.parse` of the same text as the baseline.
 * Run: `deno bench bench/pipeline_bench.ts`
 * @module
 */

import { createPipeline, type PipelineOptions } from "../src/pipeline.ts";

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

const options: PipelineOptions = {
  transform: "ammp",
  missingVid: "reject",
  maxPayloadBytes: 262144,
  maxDepth: 32,
  maxReadings: 10000,
  recordMeta: [],
  topicNodeLevel: 1,
};
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
