/**
 * The contract every transform stage (`ammp`, `raw`) fulfils: a scanned,
 * valid payload in, a {@linkcode PipelineResult} out. Pure and synchronous.
 * @module
 */

import type { JsonNode } from "./json_scan.ts";
import type { MetaField } from "./record_meta.ts";
import type { PipelineResult } from "./result.ts";

/**
 * One payload, ready for a transform.
 *
 * @example
 * ```ts
 * import { scanJson } from "./json_scan.ts";
 * const text = '{"t":1625576100,"r":[]}';
 * const scanned = scanJson(text, { maxDepth: 32, materializeDepth: 3 });
 * if (scanned.ok) {
 *   const input: TransformInput = { text, root: scanned.root, meta: [], payload: new TextEncoder().encode(text) };
 * }
 * ```
 */
export interface TransformInput {
  /** The payload's text. */
  readonly text: string;
  /** The scanned top-level value of `text`. */
  readonly root: JsonNode;
  /** The extra record members `RECORD_META` asks for. */
  readonly meta: readonly MetaField[];
  /** The payload's original bytes, for whole-payload rejections. */
  readonly payload: Uint8Array;
}

/**
 * A transform stage.
 *
 * @example
 * ```ts
 * const identity: TransformStage = (input) => ({ records: [input.text], rejections: [], dropped: [] });
 * ```
 */
export type TransformStage = (input: TransformInput) => PipelineResult;

/**
 * A short description of a value for a rejection message: its text when
 * short, else its kind.
 *
 * @example
 * ```ts
 * import { scanJson } from "./json_scan.ts";
 * const scanned = scanJson("[1, 2]", { maxDepth: 32, materializeDepth: 0 });
 * if (scanned.ok) describeValue("[1, 2]", scanned.root); // "an array"
 * ```
 */
export function describeValue(text: string, node: JsonNode): string {
  if (node.kind === "object") return "an object";
  if (node.kind === "array") return "an array";
  const source = text.slice(node.start, node.end);
  const shown = source.length > 40 ? source.slice(0, 37) + "..." : source;
  return node.kind === "string" ? `a string (${shown})` : shown;
}
