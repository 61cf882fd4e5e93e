/**
 * SPEC §1's example payload and the exact record it must become, and the
 * pipeline options a worker gets from an empty configuration: one copy for
 * every test and benchmark that needs them.
 * @module
 */

import { parseConfig } from "../../src/config.ts";
import type { PipelineOptions } from "../../src/pipeline.ts";

/** SPEC §1's payload, as the spec prints it (indented, with nulls). */
export const SPEC_PAYLOAD = `{
  "t": 1625576100,
  "r": [
    { "_d": "logger", "_vid": "strato-1", "boot_time": 1625563315, "cpu_load": 0.06, "memory_usage": 17.2 },
    { "_d": "logger_strato", "_vid": "strato-1", "cpu_temp": 60.148, "disk_usage": 45.8 },
    { "_d": "diesel_sensor", "_vid": "gamicos-1", "level": 0.5670797228813171, "genset_fuel_volume": 2477.2705366611485 },
    { "_d": "dse855", "_vid": "dse-1", "E": 86744200, "P": 15983, "V_L3": 229.70000000000002, "fuel_used": null, "temp_oil": null }
  ],
  "m": { "snap_rev": 670, "config_id": "c5b2543", "reading_duration": 0.9248790740966797, "reading_offset": 0 }
}`;

/** The record SPEC §1 says the `ammp` transform makes of {@linkcode SPEC_PAYLOAD}, byte for byte. */
export const SPEC_RECORD = '{"time":"2021-07-06T12:55:00+00:00","data":{' +
  '"strato-1":{"boot_time":1625563315,"cpu_load":0.06,"memory_usage":17.2,"cpu_temp":60.148,"disk_usage":45.8},' +
  '"gamicos-1":{"level":0.5670797228813171,"genset_fuel_volume":2477.2705366611485},' +
  '"dse-1":{"E":86744200,"P":15983,"V_L3":229.70000000000002}}}';

/** The pipeline options of a worker whose configuration sets nothing (SPEC §2 defaults). */
export const DEFAULT_PIPELINE_OPTIONS: PipelineOptions = parseConfig({}, { requireBroker: false })
  .pipeline;
