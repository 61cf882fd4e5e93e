/**
 * `RECORD_META`: the extra top-level record keys that say where a record came
 * from (`node_id`, `topic`, `received_at`), as ready-made JSON member texts.
 * @module
 */

import type { Message } from "../record.ts";
import { formatTimestamp } from "./time.ts";

/**
 * A key `RECORD_META` may list.
 *
 * @example
 * ```ts
 * const keys: RecordMetaKey[] = ["node_id", "received_at"];
 * ```
 */
export type RecordMetaKey = "node_id" | "topic" | "received_at";

/**
 * One extra record member: its key and its `"key":value` JSON text.
 *
 * @example
 * ```ts
 * const field: MetaField = { key: "topic", text: '"topic":"a/b827eb2bb2a9/u/data"' };
 * ```
 */
export interface MetaField {
  readonly key: RecordMetaKey;
  readonly text: string;
}

/** Which keys, and where the node id sits in a topic. */
export interface RecordMetaOptions {
  /** The keys to add, in record order. */
  readonly recordMeta: readonly RecordMetaKey[];
  /** The topic level (split on "/", from 0) that holds the node id. */
  readonly topicNodeLevel: number;
}

const NONE: readonly MetaField[] = Object.freeze([]);

/**
 * Builds the function that gives a message's extra record members, in the
 * order `recordMeta` lists them. `node_id` is left out when the topic has no
 * level `topicNodeLevel`: a missing key says "unknown" more plainly than a
 * `null` a consumer might mistake for a value.
 *
 * @example
 * ```ts
 * const metaOf = createRecordMeta({ recordMeta: ["node_id"], topicNodeLevel: 1 });
 * metaOf({ topic: "a/b827eb2bb2a9/u/data", payload: new Uint8Array(), receivedAt: 0 });
 * // [{ key: "node_id", text: '"node_id":"b827eb2bb2a9"' }]
 * ```
 */
export function createRecordMeta(
  options: RecordMetaOptions,
): (message: Message) => readonly MetaField[] {
  const keys = [...new Set(options.recordMeta)];
  const level = options.topicNodeLevel;
  if (keys.length === 0) return () => NONE;
  return (message) => {
    const fields: MetaField[] = [];
    for (const key of keys) {
      if (key === "node_id") {
        const nodeId = message.topic.split("/")[level];
        if (nodeId !== undefined) fields.push({ key, text: `"node_id":${JSON.stringify(nodeId)}` });
      } else if (key === "topic") {
        fields.push({ key, text: `"topic":${JSON.stringify(message.topic)}` });
      } else {
        fields.push({
          key,
          text: `"received_at":"${formatTimestamp(message.receivedAt)}"`,
        });
      }
    }
    return fields;
  };
}
