/**
 * What a pipeline run gives back for one message: record texts, rejections
 * (values with a reason, never exceptions) and readings dropped by policy.
 * Every stage speaks these types; `src/pipeline.ts` re-exports them.
 * @module
 */

/**
 * Why a payload or one of its readings was rejected: a short code, used as
 * the `reason` label of `gridrelay_rejected_total`.
 *
 * @example
 * ```ts
 * const reason: RejectionReason = "invalid_json";
 * ```
 */
export type RejectionReason =
  | "invalid_utf8"
  | "payload_too_large"
  | "invalid_json"
  | "not_an_object"
  | "too_deep"
  | "too_many_readings"
  | "invalid_time"
  | "invalid_readings"
  | "invalid_reading"
  | "missing_vid"
  /** Never produced by the stages: the intake's guard if a stage breaks its contract and throws. */
  | "internal_error";

/**
 * A payload, or one reading of it, that cannot become (part of) a record.
 *
 * @example
 * ```ts
 * const rejection: Rejection = {
 *   reason: "invalid_reading",
 *   message: "reading r[1] is a number (42), not an object",
 *   payload: "42",
 *   index: 1,
 * };
 * ```
 */
export interface Rejection {
  /** Short code: the metric label. */
  readonly reason: RejectionReason;
  /** For a person: what is wrong and, where useful, what to do. */
  readonly message: string;
  /**
   * The whole payload's original bytes (for `payload_too_large`, only its first
   * `MAX_PAYLOAD_BYTES`), or for one reading its own JSON source text.
   */
  readonly payload: Uint8Array | string;
  /** For a reading: its index in `r`. */
  readonly index?: number;
  /** The reading's `_d`, when known (for rate-limited logging per device). */
  readonly device?: string;
}

/**
 * A reading left out under `MISSING_VID=drop`: counted and logged at debug,
 * never dead-lettered.
 *
 * @example
 * ```ts
 * const dropped: DroppedReading = { index: 3, device: "calc" };
 * ```
 */
export interface DroppedReading {
  /** Its index in `r`. */
  readonly index: number;
  /** The reading's `_d`, when it has a usable one. */
  readonly device?: string;
}

/**
 * The outcome of one message.
 *
 * @example
 * ```ts
 * const result: PipelineResult = {
 *   records: ['{"time":"2021-07-06T12:55:00+00:00","data":{}}'],
 *   rejections: [],
 *   dropped: [],
 * };
 * ```
 */
export interface PipelineResult {
  /** Each record's JSON text on one line (no newline). */
  readonly records: readonly string[];
  /** Rejected payloads or readings; each belongs in the dead letters. */
  readonly rejections: readonly Rejection[];
  /** Readings dropped under `MISSING_VID=drop`. */
  readonly dropped: readonly DroppedReading[];
}

const NONE: readonly never[] = Object.freeze([]);

/**
 * The result for a payload rejected as a whole.
 *
 * @example
 * ```ts
 * const bytes = new TextEncoder().encode("[]");
 * rejectPayload("not_an_object", "payload is a JSON array, not an object", bytes);
 * ```
 */
export function rejectPayload(
  reason: RejectionReason,
  message: string,
  payload: Uint8Array,
): PipelineResult {
  return { records: NONE, rejections: [{ reason, message, payload }], dropped: NONE };
}

/**
 * The result for an accepted payload: one record, plus whatever its readings
 * contributed in rejections and drops.
 *
 * @example
 * ```ts
 * acceptRecord('{"time":"2021-07-06T12:55:00+00:00","data":{}}');
 * ```
 */
export function acceptRecord(
  record: string,
  rejections: readonly Rejection[] = NONE,
  dropped: readonly DroppedReading[] = NONE,
): PipelineResult {
  return { records: [record], rejections, dropped };
}
