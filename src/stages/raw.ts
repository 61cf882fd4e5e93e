/**
 * The `raw` transform: the payload's JSON object unchanged, as one compact
 * line (numbers, keys and order as written; `NaN`-like tokens as `null`),
 * with any `RECORD_META` members first, replacing payload keys of that name.
 * @module
 */

import { jsonText } from "./json_scan.ts";
import { acceptRecord, type PipelineResult, rejectPayload } from "./result.ts";
import { describeValue, type TransformInput, type TransformStage } from "./transform.ts";

/**
 * Depth the scanner must list for this transform: the payload's own members,
 * but only when record meta keys are to replace some of them.
 *
 * @example
 * ```ts
 * rawScanDepth(["topic"]); // 1
 * ```
 */
export function rawScanDepth(recordMeta: readonly unknown[]): number {
  return recordMeta.length > 0 ? 1 : 0;
}

/**
 * Builds the `raw` transform.
 *
 * @example
 * ```ts
 * import { scanJson } from "./json_scan.ts";
 * const text = '{ "t": 1625576100, "x": NaN }';
 * const scanned = scanJson(text, { maxDepth: 32, materializeDepth: 0 });
 * if (scanned.ok) {
 *   createRawTransform()({ text, root: scanned.root, meta: [], payload: new TextEncoder().encode(text) })
 *     .records; // ['{"t":1625576100,"x":null}']
 * }
 * ```
 */
export function createRawTransform(): TransformStage {
  return (input: TransformInput): PipelineResult => {
    const { text, root, meta } = input;
    if (root.kind !== "object") {
      return rejectPayload(
        "not_an_object",
        `payload is ${
          describeValue(text, root)
        }, not a JSON object; TRANSFORM=raw passes on objects only`,
        input.payload,
      );
    }
    if (meta.length === 0) return acceptRecord(jsonText(text, root));
    let record = "{";
    for (const field of meta) record += (record.length > 1 ? "," : "") + field.text;
    for (const member of root.members!) {
      if (meta.some((field) => field.key === member.key)) continue;
      record += "," + text.slice(member.keyStart, member.keyEnd) + ":" +
        jsonText(text, member.value);
    }
    return acceptRecord(record + "}");
  };
}
