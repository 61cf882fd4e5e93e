/**
 * The pure pipeline (SPEC §1): one MQTT message in, record texts and
 * rejections out. Stages run in order — decode (src/stages/decode.ts), scan
 * (json_scan.ts), transform (ammp.ts or raw.ts) — with no I/O, clock or logging.
 * @module
 */

import type { Message } from "./record.ts";
import { AMMP_SCAN_DEPTH, createAmmpTransform, type MissingVidPolicy } from "./stages/ammp.ts";
import { decodePayload, utf8Offset } from "./stages/decode.ts";
import { scanJson } from "./stages/json_scan.ts";
import { createRawTransform, rawScanDepth } from "./stages/raw.ts";
import { createRecordMeta, type RecordMetaKey } from "./stages/record_meta.ts";
import { type PipelineResult, rejectPayload } from "./stages/result.ts";
import type { TransformStage } from "./stages/transform.ts";

export type { MissingVidPolicy } from "./stages/ammp.ts";
export type { RecordMetaKey } from "./stages/record_meta.ts";
export type {
  DroppedReading,
  PipelineResult,
  Rejection,
  RejectionReason,
} from "./stages/result.ts";

/**
 * Which record shape to produce: `ammp` (SPEC §1) or `raw` (the payload's JSON unchanged).
 *
 * @example
 * ```ts
 * const transform: Transform = "ammp";
 * ```
 */
export type Transform = "ammp" | "raw";

/**
 * Everything the pipeline needs to know, from the configuration.
 *
 * @example
 * ```ts
 * const options: PipelineOptions = {
 *   transform: "ammp",
 *   missingVid: "reject",
 *   maxPayloadBytes: 262144,
 *   maxDepth: 32,
 *   maxReadings: 10000,
 *   recordMeta: [],
 *   topicNodeLevel: 1,
 * };
 * ```
 */
export interface PipelineOptions {
  readonly transform: Transform;
  readonly missingVid: MissingVidPolicy;
  /** Larger payloads are rejected unread (`payload_too_large`). */
  readonly maxPayloadBytes: number;
  /** Deepest nesting of objects and arrays; the payload object itself is depth 1. */
  readonly maxDepth: number;
  /** Most elements `r` may have. */
  readonly maxReadings: number;
  /** Extra top-level record keys, in this order, after `time` (ammp) or first (raw). */
  readonly recordMeta: readonly RecordMetaKey[];
  /** The topic level (split on "/", from 0) that holds the node id. */
  readonly topicNodeLevel: number;
}

/**
 * Builds the pipeline: a pure function from one message to its records,
 * rejections and dropped readings. It never throws for any payload. The
 * options are checked once here; a bad one throws a `RangeError`.
 *
 * @example
 * ```ts
 * const pipeline = createPipeline({
 *   transform: "ammp",
 *   missingVid: "reject",
 *   maxPayloadBytes: 262144,
 *   maxDepth: 32,
 *   maxReadings: 10000,
 *   recordMeta: ["node_id"],
 *   topicNodeLevel: 1,
 * });
 * const result = pipeline({
 *   topic: "a/b827eb2bb2a9/u/data",
 *   payload: new TextEncoder().encode('{"t":1625576100,"r":[{"_vid":"dse-1","P":15983}]}'),
 *   receivedAt: Date.now(),
 * });
 * result.records[0];
 * // '{"time":"2021-07-06T12:55:00+00:00","node_id":"b827eb2bb2a9","data":{"dse-1":{"P":15983}}}'
 * ```
 */
export function createPipeline(options: PipelineOptions): (message: Message) => PipelineResult {
  checkOptions(options);
  const { maxPayloadBytes, maxDepth } = options;
  const metaOf = createRecordMeta(options);
  let transform: TransformStage;
  let materializeDepth: number;
  if (options.transform === "ammp") {
    transform = createAmmpTransform(options);
    materializeDepth = AMMP_SCAN_DEPTH;
  } else {
    transform = createRawTransform();
    materializeDepth = rawScanDepth(options.recordMeta);
  }
  const scanOptions = { maxDepth, materializeDepth };

  return (message: Message): PipelineResult => {
    const payload = message.payload;
    const decoded = decodePayload(payload, { maxPayloadBytes });
    if (!decoded.ok && decoded.reason === "payload_too_large") {
      // The dead letter keeps a bounded prefix: a whole 100 MB payload, "rejected unread",
      // would otherwise be copied into memory, the spool and the dead-letter file several times over.
      const kept = payloadPrefix(payload, maxPayloadBytes);
      return rejectPayload(
        decoded.reason,
        `${decoded.message} (the dead letter keeps its first ${kept.byteLength} bytes)`,
        kept,
      );
    }
    if (!decoded.ok) return rejectPayload(decoded.reason, decoded.message, payload);
    const text = decoded.text;
    if (text.length === 0) {
      return rejectPayload("invalid_json", "payload is empty; expected a JSON object", payload);
    }
    const scanned = scanJson(text, scanOptions);
    if (!scanned.ok) {
      const at = `at byte ${utf8Offset(text, scanned.index) + decoded.bomBytes}`;
      return scanned.reason === "too_deep"
        ? rejectPayload(
          "too_deep",
          `payload nests deeper than ${maxDepth} levels of objects and arrays (${at}); ` +
            "flatten it or raise MAX_NESTING_DEPTH",
          payload,
        )
        : rejectPayload(
          "invalid_json",
          `payload is not valid JSON: ${scanned.problem} ${at}` +
            (scanned.expected === undefined ? "" : `; expected ${scanned.expected}`),
          payload,
        );
    }
    return transform({ text, root: scanned.root, meta: metaOf(message), payload });
  };
}

/**
 * A copy of the first `maxBytes` bytes of `payload`, cut back to a UTF-8
 * character boundary so that a text payload's prefix is still text. A copy,
 * so the message's large buffer is not kept alive by the rejection.
 */
function payloadPrefix(payload: Uint8Array, maxBytes: number): Uint8Array {
  let end = Math.min(maxBytes, payload.byteLength);
  // payload[end] is the first byte left out; a continuation byte (10xxxxxx) there means
  // the character it belongs to started before the cut.
  for (let back = 0; back < 3 && end > 0 && (payload[end] & 0xc0) === 0x80; back++) end--;
  return payload.slice(0, end);
}

function checkOptions(options: PipelineOptions): void {
  const positive = ["maxPayloadBytes", "maxDepth", "maxReadings"] as const;
  for (const name of positive) {
    const value = options[name];
    if (!Number.isInteger(value) || value < 1) {
      throw new RangeError(
        `pipeline option ${name} is ${value}; expected a whole number of at least 1`,
      );
    }
  }
  if (!Number.isInteger(options.topicNodeLevel) || options.topicNodeLevel < 0) {
    throw new RangeError(
      `pipeline option topicNodeLevel is ${options.topicNodeLevel}; expected a whole number of at least 0`,
    );
  }
  if (options.transform !== "ammp" && options.transform !== "raw") {
    throw new RangeError(
      `pipeline option transform is "${options.transform}"; expected "ammp" or "raw"`,
    );
  }
  if (!["reject", "drop", "device"].includes(options.missingVid)) {
    throw new RangeError(
      `pipeline option missingVid is "${options.missingVid}"; expected "reject", "drop" or "device"`,
    );
  }
  for (const key of options.recordMeta) {
    if (key !== "node_id" && key !== "topic" && key !== "received_at") {
      throw new RangeError(
        `pipeline option recordMeta lists "${key}"; expected "node_id", "topic" or "received_at"`,
      );
    }
  }
}
