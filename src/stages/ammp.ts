/**
 * The `ammp` transform (SPEC §1): `{t, r: [readings]}` → `{time, data}`, data
 * keyed by vendor id with readings merged, `_`-fields and nulls dropped, and
 * every other value written exactly as the payload wrote it.
 * @module
 */

import { type JsonMember, type JsonNode, jsonText, stringValue } from "./json_scan.ts";
import {
  acceptRecord,
  type DroppedReading,
  type PipelineResult,
  type Rejection,
  rejectPayload,
} from "./result.ts";
import { formatEpochSeconds } from "./time.ts";
import { describeValue, type TransformInput, type TransformStage } from "./transform.ts";

/**
 * What to do with a reading that has no usable `_vid` (missing, `null`, `""`):
 * dead-letter it, drop it, or keep it under its `_d`.
 *
 * @example
 * ```ts
 * const policy: MissingVidPolicy = "device";
 * ```
 */
export type MissingVidPolicy = "reject" | "drop" | "device";

/** How the `ammp` transform treats readings. */
export interface AmmpOptions {
  /** See {@linkcode MissingVidPolicy}. */
  readonly missingVid: MissingVidPolicy;
  /** More readings than this in `r` reject the whole payload. */
  readonly maxReadings: number;
}

/** Depth the scanner must list for this transform: payload, `r`, readings. */
export const AMMP_SCAN_DEPTH = 3;

/** One `data` entry: a vendor id and its merged fields. */
interface Vendor {
  /** The vendor id as a JSON string literal. */
  readonly keyText: string;
  /** Field name → where its value comes from, in order of first appearance. */
  readonly fields: Map<string, FieldSlot>;
}

/**
 * One merged field. The model is: each reading is the object JSON.parse would
 * make of it (a repeated key keeps its first position and last value), minus
 * `_`-fields and nulls, merged into its vendor in reading order. Slots get
 * there in one pass, without a map per reading.
 */
interface FieldSlot {
  readonly name: string;
  /** The member that first gave the field: its key is written as spelled there. */
  readonly first: JsonMember;
  /** The member giving the value; undefined while this reading has set it to null. */
  member: JsonMember | undefined;
  /** The value from earlier readings, restored if this reading ends with null. */
  previous: JsonMember | undefined;
  /** Index of the reading that last touched the slot. */
  reading: number;
}

/**
 * Builds the `ammp` transform. An accepted payload always gives exactly one
 * record, even when every reading was rejected or dropped (`"data":{}`): the
 * record still says the logger reported at `time`. A field named `__proto__`
 * starts with `_` and is dropped like any such field; as a vendor id it is
 * kept like any other.
 *
 * @example
 * ```ts
 * import { scanJson } from "./json_scan.ts";
 * const text = '{"t":1625576100,"r":[{"_vid":"dse-1","P":15983,"Q":null}]}';
 * const scanned = scanJson(text, { maxDepth: 32, materializeDepth: AMMP_SCAN_DEPTH });
 * const ammp = createAmmpTransform({ missingVid: "reject", maxReadings: 10000 });
 * if (scanned.ok) {
 *   ammp({ text, root: scanned.root, meta: [], payload: new TextEncoder().encode(text) }).records;
 *   // ['{"time":"2021-07-06T12:55:00+00:00","data":{"dse-1":{"P":15983}}}']
 * }
 * ```
 */
export function createAmmpTransform(options: AmmpOptions): TransformStage {
  const { missingVid, maxReadings } = options;
  return (input: TransformInput): PipelineResult => {
    const { text, root, payload } = input;
    if (root.kind !== "object") {
      return rejectPayload(
        "not_an_object",
        `payload is ${
          describeValue(text, root)
        }, not a JSON object; expected {"t": ..., "r": [...]}`,
        payload,
      );
    }
    let t: JsonNode | undefined;
    let r: JsonNode | undefined;
    // A repeated key means its last value, as in JSON.parse.
    for (const member of root.members!) {
      if (member.key === "t") t = member.value;
      else if (member.key === "r") r = member.value;
    }

    if (t === undefined) {
      return rejectPayload(
        "invalid_time",
        `"t" is missing; expected Unix epoch seconds such as 1625576100`,
        payload,
      );
    }
    if (t.kind !== "number") {
      return rejectPayload(
        "invalid_time",
        `"t" is ${
          describeValue(text, t)
        }, not a number; expected Unix epoch seconds such as 1625576100`,
        payload,
      );
    }
    const time = formatEpochSeconds(text.slice(t.start, t.end));
    if (!time.ok) {
      return rejectPayload(
        "invalid_time",
        `"t" ${time.problem}; expected Unix epoch seconds such as 1625576100`,
        payload,
      );
    }

    if (r === undefined) {
      return rejectPayload(
        "invalid_readings",
        `"r" is missing; expected an array of readings such as [{"_vid": "meter-1", "P": 15983}]`,
        payload,
      );
    }
    if (r.kind !== "array") {
      return rejectPayload(
        "invalid_readings",
        `"r" is ${describeValue(text, r)}, not an array; expected an array of readings`,
        payload,
      );
    }
    const readings = r.items!;
    if (readings.length > maxReadings) {
      return rejectPayload(
        "too_many_readings",
        `"r" has ${readings.length} readings, more than the limit of ${maxReadings}; ` +
          "split the payload or raise MAX_READINGS",
        payload,
      );
    }

    const vendors = new Map<string, Vendor>();
    let rejections: Rejection[] | undefined;
    let dropped: DroppedReading[] | undefined;
    for (let index = 0; index < readings.length; index++) {
      const reading = readings[index];
      if (reading.kind !== "object") {
        (rejections ??= []).push({
          reason: "invalid_reading",
          message: `reading r[${index}] is ${describeValue(text, reading)}, not an object; ` +
            `expected an object such as {"_vid": "meter-1", "P": 15983}`,
          payload: text.slice(reading.start, reading.end),
          index,
        });
        continue;
      }
      const members = reading.members!;
      let vid: JsonNode | undefined;
      let device: JsonNode | undefined;
      // A repeated key means its last value, as in JSON.parse.
      for (const member of members) {
        if (member.key === "_vid") vid = member.value;
        else if (member.key === "_d") device = member.value;
      }
      let vendorKey = vid && idOf(text, vid);
      if (vendorKey === undefined) {
        const deviceKey = device && idOf(text, device);
        if (missingVid === "device" && deviceKey !== undefined) {
          vendorKey = deviceKey;
        } else if (missingVid === "drop") {
          (dropped ??= []).push(
            deviceKey === undefined ? { index } : { index, device: deviceKey[0] },
          );
          continue;
        } else {
          (rejections ??= []).push(missingVidRejection(text, reading, index, vid, deviceKey));
          continue;
        }
      }
      let vendor = vendors.get(vendorKey[0]);
      if (vendor === undefined) {
        vendor = { keyText: vendorKey[1], fields: new Map() };
        vendors.set(vendorKey[0], vendor);
      }
      mergeReading(vendor.fields, members, index);
    }

    let record = `{"time":"${time.text}"`;
    for (const field of input.meta) record += "," + field.text;
    record += `,"data":{`;
    let firstVendor = true;
    for (const vendor of vendors.values()) {
      record += (firstVendor ? "" : ",") + vendor.keyText + ":{";
      firstVendor = false;
      let firstField = true;
      for (const { first, member } of vendor.fields.values()) {
        record += (firstField ? "" : ",") + text.slice(first.keyStart, first.keyEnd) + ":" +
          jsonText(text, member!.value);
        firstField = false;
      }
      record += "}";
    }
    record += "}}";
    return acceptRecord(record, rejections, dropped);
  };
}

/** Merges one reading's members into its vendor's fields (see {@linkcode FieldSlot}). */
function mergeReading(
  fields: Map<string, FieldSlot>,
  members: readonly JsonMember[],
  reading: number,
): void {
  let nulled: FieldSlot[] | undefined;
  for (const member of members) {
    const name = member.key;
    if (name.charCodeAt(0) === 0x5f /* _ */) continue;
    const isNull = member.value.kind === "null";
    let slot = fields.get(name);
    if (slot === undefined) {
      slot = { name, first: member, member: undefined, previous: undefined, reading };
      fields.set(name, slot);
    } else if (slot.reading !== reading) {
      slot.previous = slot.member;
      slot.reading = reading;
    }
    slot.member = isNull ? undefined : member;
    if (isNull) (nulled ??= []).push(slot);
  }
  if (nulled === undefined) return;
  // A field this reading leaves at null keeps its earlier value, or is not there at all.
  for (const slot of nulled) {
    if (slot.member !== undefined) continue;
    if (slot.previous === undefined) fields.delete(slot.name);
    else slot.member = slot.previous;
  }
}

/**
 * A usable vendor or device id — a non-empty string, or a number taken as its
 * text — as [its value, its JSON string literal]; else undefined.
 */
function idOf(text: string, node: JsonNode): [string, string] | undefined {
  if (node.kind === "string") {
    if (node.end - node.start === 2) return undefined;
    return [stringValue(text, node), text.slice(node.start, node.end)];
  }
  if (node.kind === "number") {
    const digits = text.slice(node.start, node.end);
    return [digits, `"${digits}"`];
  }
  return undefined;
}

function missingVidRejection(
  text: string,
  reading: JsonNode,
  index: number,
  vid: JsonNode | undefined,
  device: [string, string] | undefined,
): Rejection {
  const what = vid === undefined || (vid.kind === "null" && vid.compact)
    ? `has no "_vid"`
    : vid.kind === "string"
    ? `has an empty "_vid"`
    : `has "_vid" ${describeValue(text, vid)}, not a non-empty string or number`;
  const message = device === undefined
    ? `reading r[${index}] ${what} and no usable "_d"; set MISSING_VID=drop to ignore such readings`
    : `reading r[${index}] ${what} (device ${device[1]}); set MISSING_VID=device to keep such ` +
      `readings under their "_d", or MISSING_VID=drop to ignore them`;
  return {
    reason: "missing_vid",
    message,
    payload: text.slice(reading.start, reading.end),
    ...(device === undefined ? {} : { device: device[0] }),
    index,
  };
}
