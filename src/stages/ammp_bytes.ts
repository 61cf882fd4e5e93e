/**
 * A fast path for the `ammp` transform (SPEC §1): one pass over the payload's
 * bytes — no decoding, no tree of nodes, no object per value — writing the
 * record straight into a byte buffer as UTF-8. It only ever says yes to the
 * plain case, a payload the pipeline accepts with one record and no rejected
 * or dropped readings, and then its bytes are exactly the pipeline's record.
 * For anything else it says no and the caller runs the pipeline
 * (src/pipeline.ts), which stays the reference and explains every rejection.
 * @module
 */

import type { MissingVidPolicy } from "./ammp.ts";
import type { MetaField } from "./record_meta.ts";
import { formatEpochSeconds } from "./time.ts";

/**
 * A growable output buffer: `bytes[0, length)` are written. The fast path
 * writes at `length` and replaces `bytes` with a bigger copy when it must.
 *
 * @example
 * ```ts
 * const out: ByteOutput = { bytes: new Uint8Array(64 * 1024), length: 0 };
 * ```
 */
export interface ByteOutput {
  bytes: Uint8Array;
  length: number;
}

/**
 * The pipeline options the fast path must agree with (see `PipelineOptions`).
 *
 * @example
 * ```ts
 * const options: AmmpBytesOptions = {
 *   missingVid: "reject",
 *   maxPayloadBytes: 262144,
 *   maxDepth: 32,
 *   maxReadings: 10000,
 * };
 * ```
 */
export interface AmmpBytesOptions {
  /** See {@linkcode MissingVidPolicy}; under `"device"` a reading may be keyed by its `_d`. */
  readonly missingVid: MissingVidPolicy;
  /** Larger payloads are left to the pipeline. */
  readonly maxPayloadBytes: number;
  /** Deepest nesting of objects and arrays; the payload object itself is depth 1. */
  readonly maxDepth: number;
  /** Most elements `r` may have. */
  readonly maxReadings: number;
}

/**
 * The `metaText` argument of the function {@linkcode createAmmpBytes} returns:
 * `RECORD_META`'s members, each preceded by a comma, as the `ammp` transform
 * inserts them after `time`.
 *
 * @example
 * ```ts
 * recordMetaText([{ key: "node_id", text: '"node_id":"b827eb2bb2a9"' }]);
 * // ',"node_id":"b827eb2bb2a9"'
 * ```
 */
export function recordMetaText(meta: readonly MetaField[]): string {
  let text = "";
  for (const field of meta) text += "," + field.text;
  return text;
}

/**
 * Builds the fast path. The function it returns writes, at `out.length`, the
 * UTF-8 bytes of exactly the record the pipeline (`createPipeline` with
 * transform `"ammp"` and the same options) gives for `payload`, advances
 * `out.length` and returns true — but only when the pipeline would accept the
 * payload with one record and no rejected or dropped readings. Otherwise it
 * returns false and leaves `out.length` and the bytes before it as they were
 * (bytes past it may have changed, and `out.bytes` may be a bigger copy): the
 * caller runs the pipeline instead. It also says no to what is merely unusual
 * and left to the pipeline: a byte order mark, `NaN`-like tokens, escapes in
 * the payload's or a reading's keys or in `_vid` (or in a `_d` that keys a
 * reading). It keeps scratch buffers between calls: one instance serves one
 * thread.
 *
 * @example
 * ```ts
 * const fastAmmp = createAmmpBytes({
 *   missingVid: "reject",
 *   maxPayloadBytes: 262144,
 *   maxDepth: 32,
 *   maxReadings: 10000,
 * });
 * const out: ByteOutput = { bytes: new Uint8Array(1024), length: 0 };
 * const payload = new TextEncoder().encode('{"t": 1625576100, "r": [{"_vid": "dse-1", "P": 15983, "Q": null}]}');
 * if (fastAmmp(payload, ',"node_id":"b827eb2bb2a9"', out)) {
 *   new TextDecoder().decode(out.bytes.subarray(0, out.length));
 *   // '{"time":"2021-07-06T12:55:00+00:00","node_id":"b827eb2bb2a9","data":{"dse-1":{"P":15983}}}'
 * }
 * ```
 */
export function createAmmpBytes(
  options: AmmpBytesOptions,
): (payload: Uint8Array, metaText: string, out: ByteOutput) => boolean {
  for (const name of ["maxPayloadBytes", "maxDepth", "maxReadings"] as const) {
    const value = options[name];
    if (!Number.isInteger(value) || value < 1) {
      throw new RangeError(`option ${name} is ${value}; expected a whole number of at least 1`);
    }
  }
  if (!["reject", "drop", "device"].includes(options.missingVid)) {
    throw new RangeError(
      `option missingVid is "${options.missingVid}"; expected "reject", "drop" or "device"`,
    );
  }
  const scanner = new AmmpByteScanner(options);
  return (payload, metaText, out) => scanner.run(payload, metaText, out);
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const MINUS = 0x2d;
const UNDERSCORE = 0x5f;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
/** `{` + 2 is `}` and `[` + 2 is `]`: a container's closer from its opener. */
const OPENER_TO_CLOSER = 2;

/** Bits of a value's flags. */
const COMPACT = 1;
const NULL = 2;

const FNV_OFFSET = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;

// Records in Int32Arrays, one stride each, so the hot path allocates nothing.
/** Collecting: a reading member with a field name (not `_`-prefixed), kept for the whole of `r`. */
const MEMBER = 6;
const MEMBER_KEY_START = 0; // offset of the key's opening quote
const MEMBER_KEY_END = 1; // offset just after its closing quote
const MEMBER_KEY_HASH = 2;
const MEMBER_VALUE_START = 3;
const MEMBER_VALUE_END = 4;
const MEMBER_FLAGS = 5;

/** Collecting: a field of a vendor, as `FieldSlot` in ammp.ts; members by index, -1 for none. */
const SLOT = 9;
const SLOT_KEY_START = 0; // the key as its first member spells it
const SLOT_KEY_END = 1;
const SLOT_MEMBER = 2; // the member giving the value; -1 while this reading has set it to null
const SLOT_PREVIOUS = 3; // the value from earlier readings, restored if this reading ends with null
const SLOT_READING = 4; // the reading that last touched the slot
const SLOT_NEXT = 5; // the vendor's next slot, in order of first appearance
const SLOT_VENDOR = 6;
const SLOT_HASH = 7;
const SLOT_DEAD = 8; // 1 once the field was left at null with no earlier value

/** A `data` entry: its id's text (a string's content or a number's digits) and its slots. */
const VENDOR = 4;
const VENDOR_ID_START = 0;
const VENDOR_ID_END = 1;
const VENDOR_FIRST_SLOT = 2;
const VENDOR_LAST_SLOT = 3;

/** Streaming: a field of the open vendor. */
const FIELD = 4;
const FIELD_KEY_START = 0;
const FIELD_KEY_END = 1;
const FIELD_READING = 2; // the reading that last gave the field
const FIELD_WRITTEN = 3; // 1 once its value is written
/** Streaming: most fields a vendor may have, each looked up one by one on a hash bit match. */
const FIELD_LIMIT = 256;
const SEEN_BITS = 1024;
/** What #repeatedField says to do. */
const WRITE = 1;
const SKIP = 0;

/** What #idMember found. */
const VID = 1;
const DEVICE = 2;

/** The table starts each `r` this small; it doubles while more than half full. */
const INITIAL_BUCKETS = 128;

/**
 * Two ways through the same scanner. Streaming writes the record while it
 * scans, which is right when the merge has nothing to move: `t` before `r`,
 * each reading's `_vid` before its fields, a vendor's readings one after the
 * other, no key twice in a reading and no field given a value twice. Anything
 * else makes it start over collecting: readings into records first, merged as
 * ammp.ts merges them, then written.
 */
type Mode = "stream" | "collect";

class AmmpByteScanner {
  readonly #missingVid: MissingVidPolicy;
  readonly #maxPayloadBytes: number;
  readonly #maxDepth: number;
  readonly #maxReadings: number;

  #mode: Mode = "stream";
  /** Set when streaming gave up on a payload that collecting may still take. */
  #retry = false;

  /** The payload being scanned and a view of it for four-byte copies, only during run(). */
  #p: Uint8Array = EMPTY;
  #n = 0;
  #from: DataView = EMPTY_VIEW;
  /** The record's output, only during run(); #o is where the next byte goes. */
  #out: ByteOutput = NO_OUTPUT;
  #metaText = "";
  #bytes: Uint8Array = EMPTY;
  #to: DataView = EMPTY_VIEW;
  #o = 0;

  /** Set by #key: the key's hash. Set by #value: the value's flags. */
  #hash = 0;
  #flags = 0;
  /** Opener of each open container in #container, by depth. */
  #openers: Uint8Array = new Uint8Array(64);

  #members: Int32Array = new Int32Array(64 * MEMBER);
  #memberCount = 0;
  #slots: Int32Array = new Int32Array(64 * SLOT);
  #slotCount = 0;
  #vendors: Int32Array = new Int32Array(16 * VENDOR);
  #vendorCount = 0;
  #nulled: Int32Array = new Int32Array(16);
  /** Streaming: the vendor being written, and whether it has a field yet. */
  #openVendor = -1;
  #vendorHasField = false;
  /** Streaming: the open vendor's fields so far, and a bit per key hash for those it has. */
  #fields: Int32Array = new Int32Array(FIELD_LIMIT * FIELD);
  #fieldCount = 0;
  #seen: Int32Array = new Int32Array(SEEN_BITS / 32);
  /** Streaming: fields compared by #repeatedField in this payload so far. */
  #lookups = 0;

  // One open-addressing table for vendors (entry ~index) and slots (entry index). A bucket is
  // in use only when its stamp is the current one: starting over costs a counter, not a clear.
  #entries: Int32Array = new Int32Array(INITIAL_BUCKETS);
  #hashes: Int32Array = new Int32Array(INITIAL_BUCKETS);
  #stamps: Int32Array = new Int32Array(INITIAL_BUCKETS);
  #stamp = 0;
  #mask = INITIAL_BUCKETS - 1;
  #used = 0;
  /** Set by #findSlot and #findVendor: the bucket of the entry found, or the empty one for it. */
  #bucket = 0;

  /** The `time` text of this payload's `t`, as bytes (at most 32: fractions have six digits). */
  #time: Uint8Array = new Uint8Array(32);
  #timeLength = 0;
  /** The last whole-second day formatted, and its `YYYY-MM-DDT`: a day holds 1440 minutes of `t`. */
  #day = -1;
  #datePrefix: Uint8Array = new Uint8Array(11);

  /** The output buffer last seen and a view of it. */
  #viewedBytes: Uint8Array = EMPTY;
  #view: DataView = EMPTY_VIEW;

  /** Content range of the reading's last usable `_vid` and `_d` (start -1: none). */
  #vidStart = -1;
  #vidEnd = -1;
  #deviceStart = -1;
  #deviceEnd = -1;

  /** The payload's last `t` (-1 when it is not a number) and whether its last `r` is an array. */
  #tStart = -1;
  #tEnd = -1;
  #readingsFound = false;

  constructor(options: AmmpBytesOptions) {
    this.#missingVid = options.missingVid;
    this.#maxPayloadBytes = options.maxPayloadBytes;
    this.#maxDepth = options.maxDepth;
    this.#maxReadings = options.maxReadings;
  }

  run(payload: Uint8Array, metaText: string, out: ByteOutput): boolean {
    if (payload.length > this.#maxPayloadBytes) return false;
    this.#p = payload;
    this.#n = payload.length;
    this.#from = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    this.#out = out;
    this.#metaText = metaText;
    try {
      this.#mode = "stream";
      this.#retry = false;
      if (this.#payload()) {
        out.length = this.#o;
        return true;
      }
      if (!this.#retry) return false;
      this.#mode = "collect";
      if (!this.#payload() || !this.#formatTime()) return false;
      this.#writeCollected();
      out.length = this.#o;
      return true;
    } finally {
      // Not keeping the caller's buffers alive: a payload may be large, and transferred.
      this.#p = EMPTY;
      this.#n = 0;
      this.#from = EMPTY_VIEW;
      this.#out = NO_OUTPUT;
      this.#bytes = EMPTY;
      this.#to = EMPTY_VIEW;
    }
  }

  /** Streaming gives up: collecting will look again. Returns -1, as a failed scan does. */
  #giveUp(): number {
    this.#retry = true;
    return -1;
  }

  /** #giveUp for #payload. */
  #stopStreaming(): false {
    this.#retry = true;
    return false;
  }

  // ------------------------------------------------------------------ the payload object

  /** Scans the whole payload; true when it is the plain case. Streaming, the record is written. */
  #payload(): boolean {
    const p = this.#p;
    const n = this.#n;
    const streaming = this.#mode === "stream";
    this.#tStart = -1;
    this.#readingsFound = false;
    this.#lookups = 0;
    this.#startReadings();
    let tSeen = false;
    let readingsSeen = false;
    let i = this.#ws(0);
    if (i >= n || p[i] !== OPEN_BRACE) return false;
    i = this.#ws(i + 1);
    if (i >= n || p[i] === CLOSE_BRACE) return false;
    for (;;) {
      if (p[i] !== QUOTE) return false;
      const keyStart = i;
      i = this.#key(i);
      if (i < 0) return false;
      const isOneLetter = i - keyStart === 3;
      i = this.#ws(i);
      if (i >= n || p[i] !== COLON) return false;
      i = this.#ws(i + 1);
      if (i >= n) return false;
      const c = p[i];
      // A repeated "t" or "r" means its last value, as in JSON.parse; streaming leaves it.
      if (isOneLetter && p[keyStart + 1] === 0x74 /* t */) {
        if (streaming && tSeen) return this.#stopStreaming();
        tSeen = true;
        const start = i;
        i = this.#value(i, 1);
        if (i < 0) return false;
        this.#tStart = c === MINUS || (c >= 0x30 && c <= 0x39) ? start : -1;
        this.#tEnd = i;
        if (streaming && (this.#tStart < 0 || !this.#formatTime())) return this.#stopStreaming();
        if (streaming) this.#openRecord();
      } else if (isOneLetter && p[keyStart + 1] === 0x72 /* r */) {
        if (streaming && (readingsSeen || !tSeen)) return this.#stopStreaming();
        readingsSeen = true;
        this.#readingsFound = c === OPEN_BRACKET;
        this.#startReadings();
        i = c === OPEN_BRACKET ? this.#readings(i) : this.#value(i, 1);
      } else {
        i = this.#value(i, 1);
      }
      if (i < 0) return false;
      i = this.#ws(i);
      if (i >= n) return false;
      if (p[i] === COMMA) {
        i = this.#ws(i + 1);
        if (i >= n) return false;
        continue;
      }
      if (p[i] !== CLOSE_BRACE) return false;
      break;
    }
    if (this.#ws(i + 1) !== n || this.#tStart < 0 || !this.#readingsFound) return false;
    if (streaming) this.#closeRecord();
    return true;
  }

  /**
   * Puts the `time` text of `t` in #time: `formatEpochSeconds` on its text,
   * except that whole seconds on the day it formatted last only need the
   * time of day. False when `t` cannot be a time.
   */
  #formatTime(): boolean {
    const p = this.#p;
    const start = this.#tStart;
    const end = this.#tEnd;
    const time = this.#time;
    // Whole seconds as formatEpochSeconds's own fast path takes them: 1 to 12 digits, no leading 0.
    let seconds = -1;
    if (end - start <= 12 && (p[start] !== 0x30 || end - start === 1)) {
      seconds = 0;
      for (let k = start; k < end && seconds >= 0; k++) {
        seconds = DIGITS[p[k]] === 1 ? seconds * 10 + p[k] - 0x30 : -1;
      }
    }
    if (seconds >= 0 && Math.floor(seconds / 86400) === this.#day) {
      const ofDay = seconds % 86400;
      for (let k = 0; k < 11; k++) time[k] = this.#datePrefix[k];
      writeTwoDigits(time, 11, Math.floor(ofDay / 3600));
      time[13] = COLON;
      writeTwoDigits(time, 14, Math.floor(ofDay / 60) % 60);
      time[16] = COLON;
      writeTwoDigits(time, 17, ofDay % 60);
      writeAscii(time, 19, "+00:00");
      this.#timeLength = 25;
      return true;
    }
    let text = "";
    for (let k = start; k < end; k++) text += String.fromCharCode(p[k]);
    const formatted = formatEpochSeconds(text);
    if (!formatted.ok) return false;
    this.#timeLength = writeAscii(time, 0, formatted.text);
    if (seconds >= 0 && this.#timeLength === 25) {
      this.#day = Math.floor(seconds / 86400);
      this.#datePrefix.set(time.subarray(0, 11));
    }
    return true;
  }

  /**
   * Makes room for the record at out.length and writes its start,
   * `{"time":"…"<meta>,"data":{`. The room is enough for any record of this
   * payload: its data is at most as long as the payload. Each field written
   * takes a key and a value of the payload's members, each member serving one
   * field at most, plus ":" and ",", which the member's ":" and separator pay
   * for; each vendor writes its id and `"":{},`, which its first reading's
   * `{`, `"_vid":` or `"_d":` and quotes pay for.
   */
  #openRecord(): void {
    const out = this.#out;
    const room = 32 + this.#timeLength + 3 * this.#metaText.length + this.#n;
    let bytes = out.bytes;
    if (out.length + room > bytes.length) {
      const bigger = new Uint8Array(Math.max(out.length + room, bytes.length * 2));
      bigger.set(bytes.subarray(0, out.length));
      bytes = out.bytes = bigger;
    }
    if (this.#viewedBytes !== bytes) {
      this.#viewedBytes = bytes;
      this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    }
    this.#bytes = bytes;
    this.#to = this.#view;
    let o = copyBytes(TIME_OPEN, bytes, out.length);
    for (let k = 0; k < this.#timeLength; k++) bytes[o++] = this.#time[k];
    bytes[o++] = QUOTE;
    o = writeUtf8(bytes, o, this.#metaText);
    this.#o = copyBytes(DATA_OPEN, bytes, o);
  }

  /** Ends the record: the open vendor, `data` and the record itself. */
  #closeRecord(): void {
    const bytes = this.#bytes;
    if (this.#openVendor >= 0) bytes[this.#o++] = CLOSE_BRACE;
    bytes[this.#o++] = CLOSE_BRACE;
    bytes[this.#o++] = CLOSE_BRACE;
  }

  // ------------------------------------------------------------------ readings

  /** Forgets the readings of an earlier `r`: a new payload or a repeated `r` starts over. */
  #startReadings(): void {
    this.#memberCount = 0;
    this.#slotCount = 0;
    this.#vendorCount = 0;
    this.#openVendor = -1;
    this.#clearTable(INITIAL_BUCKETS);
  }

  /** Scans `r` at i (its `[`); returns the offset after it, or -1 for anything but plain readings. */
  #readings(i: number): number {
    if (this.#maxDepth < 2) return -1;
    const p = this.#p;
    const n = this.#n;
    i = this.#ws(i + 1);
    if (i >= n) return -1;
    if (p[i] === CLOSE_BRACKET) return i + 1;
    for (let index = 0;; index++) {
      // A reading that is not an object, or one too many, is the pipeline's to reject.
      if (p[i] !== OPEN_BRACE || index >= this.#maxReadings) return -1;
      i = this.#mode === "stream" ? this.#streamReading(i, index) : this.#reading(i, index);
      if (i < 0) return -1;
      i = this.#ws(i);
      if (i >= n) return -1;
      if (p[i] === CLOSE_BRACKET) return i + 1;
      if (p[i] !== COMMA) return -1;
      i = this.#ws(i + 1);
      if (i >= n) return -1;
    }
  }

  /**
   * Streaming: scans reading `index` at i (its `{`) and writes its fields
   * straight after its vendor's earlier ones. Returns the offset after it, or
   * -1. The hot loop of the fast path, so it keeps its state in locals.
   */
  #streamReading(i: number, index: number): number {
    if (this.#maxDepth < 3) return -1;
    const p = this.#p;
    const n = this.#n;
    const seen = this.#seen;
    let vendor = -1; // known once `_vid` is
    this.#vidStart = -1;
    this.#deviceStart = -1;
    // Whitespace is skipped only where there is some: most separators have none, or one space
    // (Python's json.dumps writes ", " and ": ").
    i++;
    if (i < n && p[i] <= 0x20) i = this.#ws(i);
    if (i >= n) return -1;
    if (p[i] !== CLOSE_BRACE) {
      for (;;) {
        if (p[i] !== QUOTE) return -1;
        const keyStart = i;
        i = this.#key(i);
        if (i < 0) return -1;
        const keyEnd = i;
        const keyHash = this.#hash;
        if (i < n && p[i] <= 0x20) i = this.#ws(i);
        if (i >= n || p[i] !== COLON) return -1;
        i++;
        if (i < n && p[i] <= 0x20) i = oneSpace(p, i, n) ? i + 1 : this.#ws(i);
        if (i >= n) return -1;
        const valueStart = i;
        const c = p[i];
        if (c === MINUS || (c >= 0x30 && c <= 0x39)) {
          i = this.#number(i);
          this.#flags = COMPACT;
        } else {
          i = this.#value(i, 3);
        }
        if (i < 0) return -1;
        if (p[keyStart + 1] !== UNDERSCORE || keyEnd - keyStart === 2) {
          if (vendor < 0) return this.#giveUp(); // a field before `_vid`
          const isNull = (this.#flags & NULL) !== 0;
          // A key the vendor may have had is looked up; one it cannot have had is just noted.
          const bit = (keyHash ^ (keyHash >>> 15)) & (SEEN_BITS - 1);
          let write = !isNull;
          if ((seen[bit >>> 5] & (1 << (bit & 31))) === 0) {
            seen[bit >>> 5] |= 1 << (bit & 31);
            if (!this.#noteField(keyStart, keyEnd, index, write)) return this.#giveUp();
          } else {
            const action = this.#repeatedField(keyStart, keyEnd, index, isNull);
            if (action < 0) return this.#giveUp();
            write = action === WRITE;
          }
          if (write) this.#writeField(keyStart, keyEnd, valueStart, i);
        } else {
          const idKey = this.#idMember(keyStart, keyEnd, valueStart, i);
          if (idKey < 0) return -1;
          if (idKey === VID) {
            // A second `_vid` would move what was written; an unusable one leaves it to `_d`.
            if (vendor >= 0 || this.#vidStart < 0) return this.#giveUp();
            vendor = this.#openVendorOf(this.#vidStart, this.#vidEnd);
            if (vendor < 0) return this.#giveUp();
          }
        }
        if (i < n && p[i] <= 0x20) i = this.#ws(i);
        if (i >= n) return -1;
        if (p[i] === COMMA) {
          i++;
          if (i < n && p[i] <= 0x20) i = oneSpace(p, i, n) ? i + 1 : this.#ws(i);
          if (i >= n) return -1;
          continue;
        }
        if (p[i] !== CLOSE_BRACE) return -1;
        break;
      }
    }
    if (vendor < 0) {
      // Rejected or dropped by the pipeline, unless kept under its `_d`.
      if (this.#missingVid !== "device" || this.#deviceStart < 0) return -1;
      return this.#giveUp();
    }
    return i + 1;
  }

  /** Streaming: writes `"key":value` (the value's flags in #flags) into the open vendor. */
  #writeField(keyStart: number, keyEnd: number, start: number, end: number): void {
    const bytes = this.#bytes;
    let o = this.#o;
    if (this.#vendorHasField) bytes[o++] = COMMA;
    this.#vendorHasField = true;
    o = copy(this.#from, keyStart, keyEnd, this.#to, o);
    bytes[o++] = COLON;
    this.#o = (this.#flags & COMPACT) !== 0
      ? copy(this.#from, start, end, this.#to, o)
      : copyCompacted(this.#p, start, end, bytes, o);
  }

  /**
   * Streaming: notes a field of the open vendor, first seen in reading
   * `reading`. False past FIELD_LIMIT fields, where looking them up one by
   * one would cost too much: collecting has a table for that.
   */
  #noteField(keyStart: number, keyEnd: number, reading: number, written: boolean): boolean {
    const at = this.#fieldCount * FIELD;
    if (at === FIELD_LIMIT * FIELD) return false;
    const fields = this.#fields;
    fields[at + FIELD_KEY_START] = keyStart;
    fields[at + FIELD_KEY_END] = keyEnd;
    fields[at + FIELD_READING] = reading;
    fields[at + FIELD_WRITTEN] = written ? 1 : 0;
    this.#fieldCount++;
    return true;
  }

  /**
   * Streaming: a field whose key the open vendor may have had already. WRITE
   * or SKIP it as the merge would, or -1 when the merge has work to do: the
   * key is repeated in the reading (first position, last value), or a value
   * follows one an earlier reading wrote.
   */
  #repeatedField(keyStart: number, keyEnd: number, reading: number, isNull: boolean): number {
    const p = this.#p;
    const fields = this.#fields;
    const length = keyEnd - keyStart;
    // Keys made to share bits could make this quadratic: past a budget linear in the payload's
    // length, collecting's table takes over.
    this.#lookups += this.#fieldCount;
    if (this.#lookups > this.#n) return -1;
    for (let at = 0; at < this.#fieldCount * FIELD; at += FIELD) {
      const start = fields[at + FIELD_KEY_START];
      if (fields[at + FIELD_KEY_END] - start !== length) continue;
      let k = 1; // both open with a quote
      while (k < length && p[start + k] === p[keyStart + k]) k++;
      if (k < length) continue;
      if (fields[at + FIELD_READING] === reading) return -1;
      fields[at + FIELD_READING] = reading;
      // Written by an earlier reading: a null keeps that value. Only null so far: not there yet.
      if (fields[at + FIELD_WRITTEN] === 1) return isNull ? SKIP : -1;
      if (isNull) return SKIP;
      fields[at + FIELD_WRITTEN] = 1;
      return WRITE;
    }
    // Another key with the same bit.
    if (!this.#noteField(keyStart, keyEnd, reading, !isNull)) return -1;
    return isNull ? SKIP : WRITE;
  }

  /**
   * Collecting: scans reading `index` at i (its `{`) into member records and
   * merges them into its vendor. Returns the offset after it, or -1.
   */
  #reading(i: number, index: number): number {
    if (this.#maxDepth < 3) return -1;
    const p = this.#p;
    const n = this.#n;
    const firstMember = this.#memberCount;
    this.#vidStart = -1;
    this.#deviceStart = -1;
    i = this.#ws(i + 1);
    if (i >= n) return -1;
    if (p[i] !== CLOSE_BRACE) {
      for (;;) {
        if (p[i] !== QUOTE) return -1;
        const keyStart = i;
        i = this.#key(i);
        if (i < 0) return -1;
        const keyEnd = i;
        const keyHash = this.#hash;
        i = this.#ws(i);
        if (i >= n || p[i] !== COLON) return -1;
        i = this.#ws(i + 1);
        if (i >= n) return -1;
        const valueStart = i;
        i = this.#value(i, 3);
        if (i < 0) return -1;
        if (p[keyStart + 1] !== UNDERSCORE || keyEnd - keyStart === 2) {
          this.#addMember(keyStart, keyEnd, keyHash, valueStart, i);
        } else if (this.#idMember(keyStart, keyEnd, valueStart, i) < 0) {
          return -1;
        }
        i = this.#ws(i);
        if (i >= n) return -1;
        if (p[i] === COMMA) {
          i = this.#ws(i + 1);
          if (i >= n) return -1;
          continue;
        }
        if (p[i] !== CLOSE_BRACE) return -1;
        break;
      }
    }
    let vendorStart = this.#vidStart;
    let vendorEnd = this.#vidEnd;
    if (vendorStart < 0) {
      // Rejected or dropped by the pipeline, unless kept under its `_d`.
      if (this.#missingVid !== "device" || this.#deviceStart < 0) return -1;
      vendorStart = this.#deviceStart;
      vendorEnd = this.#deviceEnd;
    }
    this.#merge(this.#vendor(vendorStart, vendorEnd), firstMember, index);
    return i + 1;
  }

  /**
   * Takes note of a `_`-member's value p[start, end) when it is the `_vid` or
   * `_d`: the content range of a usable id, a non-empty string or a number,
   * else -1. A repeated key means its last value. Returns VID, DEVICE or 0
   * for another key, or -1 when the payload is the pipeline's to read.
   */
  #idMember(keyStart: number, keyEnd: number, start: number, end: number): number {
    const p = this.#p;
    const idKey = this.#idKey(keyStart, keyEnd);
    if (idKey === 0) return 0;
    const c = p[start];
    if (c === QUOTE) {
      if (end - start === 2) {
        start = end = -1;
      } else {
        start++;
        end--;
        for (let k = start; k < end; k++) {
          if (p[k] !== BACKSLASH) continue;
          // An escaped id compares by its decoded value. As a `_d` it only matters when the
          // reading has no `_vid`, and then an unusable `_d` says no too.
          if (idKey === VID) return -1;
          start = end = -1;
          break;
        }
      }
    } else if (c !== MINUS && (c < 0x30 || c > 0x39)) {
      start = end = -1;
    }
    if (idKey === VID) {
      this.#vidStart = start;
      this.#vidEnd = end;
    } else {
      this.#deviceStart = start;
      this.#deviceEnd = end;
    }
    return idKey;
  }

  /** VID for the key `"_vid"`, DEVICE for `"_d"`, else 0. */
  #idKey(keyStart: number, keyEnd: number): number {
    const p = this.#p;
    if (keyEnd - keyStart === 6) {
      return p[keyStart + 2] === 0x76 && p[keyStart + 3] === 0x69 && p[keyStart + 4] === 0x64
        ? VID
        : 0;
    }
    return keyEnd - keyStart === 4 && p[keyStart + 2] === 0x64 ? DEVICE : 0;
  }

  /** The vendor whose id has the text p[start, end), added when new. */
  #vendor(start: number, end: number): number {
    const p = this.#p;
    let hash = FNV_OFFSET;
    for (let k = start; k < end; k++) hash = Math.imul(hash ^ p[k], FNV_PRIME);
    hash = mix(hash);
    const found = this.#findVendor(hash, start, end);
    if (found >= 0) return found;
    const vendor = this.#vendorCount++;
    let vendors = this.#vendors;
    const base = vendor * VENDOR;
    if (base + VENDOR > vendors.length) vendors = this.#vendors = grown(vendors, base + VENDOR);
    vendors[base + VENDOR_ID_START] = start;
    vendors[base + VENDOR_ID_END] = end;
    vendors[base + VENDOR_FIRST_SLOT] = -1;
    vendors[base + VENDOR_LAST_SLOT] = -1;
    this.#put(~vendor, hash);
    return vendor;
  }

  /** Adds a slot for the key p[keyStart, keyEnd) in #bucket, last of its vendor's. */
  #addSlot(vendor: number, hash: number, keyStart: number, keyEnd: number): number {
    const slot = this.#slotCount++;
    let slots = this.#slots;
    const at = slot * SLOT;
    if (at + SLOT > slots.length) slots = this.#slots = grown(slots, at + SLOT);
    slots[at + SLOT_KEY_START] = keyStart;
    slots[at + SLOT_KEY_END] = keyEnd;
    slots[at + SLOT_MEMBER] = -1;
    slots[at + SLOT_PREVIOUS] = -1;
    slots[at + SLOT_READING] = -1;
    slots[at + SLOT_NEXT] = -1;
    slots[at + SLOT_VENDOR] = vendor;
    slots[at + SLOT_HASH] = hash;
    slots[at + SLOT_DEAD] = 0;
    const vendors = this.#vendors;
    const last = vendors[vendor * VENDOR + VENDOR_LAST_SLOT];
    if (last < 0) vendors[vendor * VENDOR + VENDOR_FIRST_SLOT] = slot;
    else slots[last * SLOT + SLOT_NEXT] = slot;
    vendors[vendor * VENDOR + VENDOR_LAST_SLOT] = slot;
    this.#put(slot, hash);
    return slot;
  }

  // ------------------------------------------------------------------ streaming

  /**
   * Streaming: the vendor of a reading, written as the next `data` entry when
   * new. -1 when it is an earlier one that another came after: merging it is
   * collecting's work.
   */
  #openVendorOf(start: number, end: number): number {
    const known = this.#vendorCount;
    const vendor = this.#vendor(start, end);
    if (vendor < known) return vendor === this.#openVendor ? vendor : -1;
    const bytes = this.#bytes;
    let o = this.#o;
    if (this.#openVendor >= 0) {
      bytes[o++] = CLOSE_BRACE;
      bytes[o++] = COMMA;
    }
    bytes[o++] = QUOTE;
    o = copy(this.#from, start, end, this.#to, o);
    bytes[o++] = QUOTE;
    bytes[o++] = COLON;
    bytes[o++] = OPEN_BRACE;
    this.#o = o;
    this.#openVendor = vendor;
    this.#vendorHasField = false;
    this.#fieldCount = 0;
    this.#seen.fill(0);
    return vendor;
  }

  // ------------------------------------------------------------------ collecting

  #addMember(keyStart: number, keyEnd: number, hash: number, start: number, end: number): void {
    let members = this.#members;
    const at = this.#memberCount * MEMBER;
    if (at + MEMBER > members.length) members = this.#members = grown(members, at + MEMBER);
    members[at + MEMBER_KEY_START] = keyStart;
    members[at + MEMBER_KEY_END] = keyEnd;
    members[at + MEMBER_KEY_HASH] = hash;
    members[at + MEMBER_VALUE_START] = start;
    members[at + MEMBER_VALUE_END] = end;
    members[at + MEMBER_FLAGS] = this.#flags;
    this.#memberCount++;
  }

  /**
   * Merges one reading's fields into its vendor: `mergeReading` in ammp.ts,
   * on records instead of objects. Each reading is the object JSON.parse
   * would make of it (a repeated key keeps its first position and last
   * value), minus nulls, merged in reading order.
   */
  #merge(vendor: number, firstMember: number, reading: number): void {
    const members = this.#members;
    const vendorSeed = Math.imul(vendor + 1, 0x9e3779b1);
    let nulledCount = 0;
    for (let m = firstMember; m < this.#memberCount; m++) {
      const member = m * MEMBER;
      const keyStart = members[member + MEMBER_KEY_START];
      const keyEnd = members[member + MEMBER_KEY_END];
      const hash = mix(members[member + MEMBER_KEY_HASH] + vendorSeed);
      let slot = this.#findSlot(vendor, hash, keyStart, keyEnd);
      // A field deleted by an earlier reading comes back at the end, as a Map entry would.
      if (slot < 0 || this.#slots[slot * SLOT + SLOT_DEAD] === 1) {
        slot = this.#addSlot(vendor, hash, keyStart, keyEnd);
        this.#slots[slot * SLOT + SLOT_READING] = reading;
      }
      const slots = this.#slots;
      const at = slot * SLOT;
      if (slots[at + SLOT_READING] !== reading) {
        slots[at + SLOT_PREVIOUS] = slots[at + SLOT_MEMBER];
        slots[at + SLOT_READING] = reading;
      }
      if ((members[member + MEMBER_FLAGS] & NULL) === 0) {
        slots[at + SLOT_MEMBER] = m;
      } else {
        slots[at + SLOT_MEMBER] = -1;
        if (nulledCount === this.#nulled.length) {
          this.#nulled = grown(this.#nulled, nulledCount + 1);
        }
        this.#nulled[nulledCount++] = slot;
      }
    }
    // A field this reading leaves at null keeps its earlier value, or is not there at all.
    const slots = this.#slots;
    for (let k = 0; k < nulledCount; k++) {
      const at = this.#nulled[k] * SLOT;
      if (slots[at + SLOT_MEMBER] >= 0) continue;
      if (slots[at + SLOT_PREVIOUS] < 0) slots[at + SLOT_DEAD] = 1;
      else slots[at + SLOT_MEMBER] = slots[at + SLOT_PREVIOUS];
    }
  }

  /** Collecting: writes the record of the merged vendors at out.length. */
  #writeCollected(): void {
    this.#openRecord();
    const bytes = this.#bytes;
    const from = this.#from;
    const to = this.#to;
    const vendors = this.#vendors;
    const slots = this.#slots;
    const members = this.#members;
    let o = this.#o;
    for (let vendor = 0; vendor < this.#vendorCount; vendor++) {
      const base = vendor * VENDOR;
      if (vendor > 0) bytes[o++] = COMMA;
      bytes[o++] = QUOTE;
      o = copy(from, vendors[base + VENDOR_ID_START], vendors[base + VENDOR_ID_END], to, o);
      bytes[o++] = QUOTE;
      bytes[o++] = COLON;
      bytes[o++] = OPEN_BRACE;
      let firstField = true;
      for (let slot = vendors[base + VENDOR_FIRST_SLOT]; slot >= 0;) {
        const at = slot * SLOT;
        if (slots[at + SLOT_DEAD] === 0) {
          if (!firstField) bytes[o++] = COMMA;
          firstField = false;
          o = copy(from, slots[at + SLOT_KEY_START], slots[at + SLOT_KEY_END], to, o);
          bytes[o++] = COLON;
          const member = slots[at + SLOT_MEMBER] * MEMBER;
          const start = members[member + MEMBER_VALUE_START];
          const end = members[member + MEMBER_VALUE_END];
          o = (members[member + MEMBER_FLAGS] & COMPACT) !== 0
            ? copy(from, start, end, to, o)
            : copyCompacted(this.#p, start, end, bytes, o);
        }
        slot = slots[at + SLOT_NEXT];
      }
      bytes[o++] = CLOSE_BRACE;
    }
    this.#o = o;
    this.#openVendor = -1;
    this.#closeRecord();
  }

  // ------------------------------------------------------------------ the table

  #clearTable(buckets: number): void {
    if (this.#entries.length < buckets) {
      this.#entries = new Int32Array(buckets);
      this.#hashes = new Int32Array(buckets);
      this.#stamps = new Int32Array(buckets);
      this.#stamp = 0;
    }
    if (this.#stamp === 0x7fffffff) {
      this.#stamps.fill(0);
      this.#stamp = 0;
    }
    this.#stamp++;
    this.#mask = buckets - 1;
    this.#used = 0;
  }

  /** The slot of this key in `vendor`, or -1; either way #bucket is where it is or goes. */
  #findSlot(vendor: number, hash: number, keyStart: number, keyEnd: number): number {
    const p = this.#p;
    const entries = this.#entries;
    const hashes = this.#hashes;
    const stamps = this.#stamps;
    const stamp = this.#stamp;
    const mask = this.#mask;
    const slots = this.#slots;
    const length = keyEnd - keyStart;
    for (let b = hash & mask;; b = (b + 1) & mask) {
      if (stamps[b] !== stamp) {
        this.#bucket = b;
        return -1;
      }
      const slot = entries[b];
      if (hashes[b] !== hash || slot < 0 || slots[slot * SLOT + SLOT_VENDOR] !== vendor) continue;
      const start = slots[slot * SLOT + SLOT_KEY_START];
      if (slots[slot * SLOT + SLOT_KEY_END] - start !== length) continue;
      let k = 1; // both open with a quote
      while (k < length && p[start + k] === p[keyStart + k]) k++;
      if (k === length) {
        this.#bucket = b;
        return slot;
      }
    }
  }

  /** The vendor whose id has the text p[start, end), or -1 with #bucket where it goes. */
  #findVendor(hash: number, start: number, end: number): number {
    const p = this.#p;
    const entries = this.#entries;
    const stamps = this.#stamps;
    const stamp = this.#stamp;
    const mask = this.#mask;
    const vendors = this.#vendors;
    const length = end - start;
    for (let b = hash & mask;; b = (b + 1) & mask) {
      if (stamps[b] !== stamp) {
        this.#bucket = b;
        return -1;
      }
      const entry = entries[b];
      if (this.#hashes[b] !== hash || entry >= 0) continue;
      const at = vendors[~entry * VENDOR + VENDOR_ID_START];
      if (vendors[~entry * VENDOR + VENDOR_ID_END] - at !== length) continue;
      let k = 0;
      while (k < length && p[at + k] === p[start + k]) k++;
      if (k === length) return ~entry;
    }
  }

  /** Puts an entry in #bucket (a new one, or the one a dead slot held); grows a full table. */
  #put(entry: number, hash: number): void {
    const b = this.#bucket;
    if (this.#stamps[b] !== this.#stamp) {
      this.#stamps[b] = this.#stamp;
      this.#used++;
    }
    this.#entries[b] = entry;
    this.#hashes[b] = hash;
    if (this.#used * 2 > this.#mask + 1) this.#rehash();
  }

  /** Doubles the table and puts back every vendor and every live slot. */
  #rehash(): void {
    this.#clearTable((this.#mask + 1) * 2);
    const stamps = this.#stamps;
    const entries = this.#entries;
    const hashes = this.#hashes;
    const stamp = this.#stamp;
    const mask = this.#mask;
    const put = (entry: number, hash: number) => {
      let b = hash & mask;
      while (stamps[b] === stamp) b = (b + 1) & mask;
      stamps[b] = stamp;
      entries[b] = entry;
      hashes[b] = hash;
      this.#used++;
    };
    const p = this.#p;
    const vendors = this.#vendors;
    for (let vendor = 0; vendor < this.#vendorCount; vendor++) {
      let hash = FNV_OFFSET;
      const end = vendors[vendor * VENDOR + VENDOR_ID_END];
      for (let k = vendors[vendor * VENDOR + VENDOR_ID_START]; k < end; k++) {
        hash = Math.imul(hash ^ p[k], FNV_PRIME);
      }
      put(~vendor, mix(hash));
    }
    const slots = this.#slots;
    for (let slot = 0; slot < this.#slotCount; slot++) {
      if (slots[slot * SLOT + SLOT_DEAD] === 0) put(slot, slots[slot * SLOT + SLOT_HASH]);
    }
  }

  // ------------------------------------------------------------------ JSON tokens

  #ws(i: number): number {
    const p = this.#p;
    const n = this.#n;
    while (i < n) {
      const c = p[i];
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
      i++;
    }
    return i;
  }

  /**
   * Scans a key at i (its opening quote) whose value matters: no escapes,
   * since keys compare by their decoded value. Sets #hash; returns the
   * offset after the closing quote, or -1.
   */
  #key(i: number): number {
    const p = this.#p;
    const n = this.#n;
    let hash = FNV_OFFSET;
    let j = i + 1;
    for (;;) {
      if (j >= n) return -1;
      const c = p[j];
      if (PLAIN[c] === 1) {
        hash = Math.imul(hash ^ c, FNV_PRIME);
        j++;
        continue;
      }
      if (c === QUOTE) break;
      if (c < 0x80) return -1;
      const end = this.#utf8(j);
      if (end < 0) return -1;
      for (; j < end; j++) hash = Math.imul(hash ^ p[j], FNV_PRIME);
    }
    this.#hash = hash;
    return j + 1;
  }

  /**
   * Scans any JSON value at i whose container is at `depth`; sets #flags
   * (COMPACT when it has no whitespace to remove, NULL for `null`). Returns
   * the offset after it, or -1: not JSON, nested deeper than maxDepth, or a
   * `NaN`-like token.
   */
  #value(i: number, depth: number): number {
    const p = this.#p;
    const c = p[i];
    this.#flags = COMPACT;
    if (c === QUOTE) return this.#string(i);
    if (c === MINUS || (c >= 0x30 && c <= 0x39)) return this.#number(i);
    if (c === OPEN_BRACE || c === OPEN_BRACKET) return this.#container(i, depth);
    const n = this.#n;
    if (c === 0x6e) { // null
      if (i + 4 > n || p[i + 1] !== 0x75 || p[i + 2] !== 0x6c || p[i + 3] !== 0x6c) return -1;
      this.#flags = COMPACT | NULL;
      return i + 4;
    }
    if (c === 0x74) { // true
      return i + 4 <= n && p[i + 1] === 0x72 && p[i + 2] === 0x75 && p[i + 3] === 0x65 ? i + 4 : -1;
    }
    if (c === 0x66) { // false
      return i + 5 <= n && p[i + 1] === 0x61 && p[i + 2] === 0x6c && p[i + 3] === 0x73 &&
          p[i + 4] === 0x65
        ? i + 5
        : -1;
    }
    return -1;
  }

  /** Scans an object or array at i, iteratively (nesting may be thousands deep). */
  #container(i: number, depth: number): number {
    const p = this.#p;
    const n = this.#n;
    const outer = depth;
    let compact = true;
    for (;;) {
      // A value starts at i, and i < n.
      const c = p[i];
      if (c === OPEN_BRACE || c === OPEN_BRACKET) {
        if (++depth > this.#maxDepth) return -1;
        if (depth >= this.#openers.length) this.#openers = grownBytes(this.#openers, depth + 1);
        this.#openers[depth] = c;
        let j = this.#ws(i + 1);
        if (j !== i + 1) compact = false;
        if (j >= n) return -1;
        if (p[j] === c + OPENER_TO_CLOSER) {
          depth--;
          i = j + 1;
        } else {
          if (c === OPEN_BRACE) {
            j = this.#memberKey(j);
            if (j < 0) return -1;
            if (this.#flags === 0) compact = false;
          }
          i = j;
          continue;
        }
      } else {
        i = this.#value(i, depth);
        if (i < 0) return -1;
      }
      // After a value: close containers, or find where the next value starts.
      for (;;) {
        if (depth === outer) {
          this.#flags = compact ? COMPACT : 0;
          return i;
        }
        let j = this.#ws(i);
        if (j !== i) compact = false;
        if (j >= n) return -1;
        const opener = this.#openers[depth];
        if (p[j] === opener + OPENER_TO_CLOSER) {
          depth--;
          i = j + 1;
          continue;
        }
        if (p[j] !== COMMA) return -1;
        const k = this.#ws(j + 1);
        if (k !== j + 1) compact = false;
        if (k >= n) return -1;
        j = k;
        if (opener === OPEN_BRACE) {
          j = this.#memberKey(j);
          if (j < 0) return -1;
          if (this.#flags === 0) compact = false;
        }
        i = j;
        break;
      }
    }
  }

  /**
   * Scans `"key" :` of a nested object at i, where keys are only copied, so
   * escapes are fine. Returns where the value starts (< n), or -1; #flags is
   * 0 when whitespace was skipped.
   */
  #memberKey(i: number): number {
    const p = this.#p;
    const n = this.#n;
    if (p[i] !== QUOTE) return -1;
    let j = this.#string(i);
    if (j < 0) return -1;
    let flags = COMPACT;
    let k = this.#ws(j);
    if (k !== j) flags = 0;
    if (k >= n || p[k] !== COLON) return -1;
    j = k + 1;
    k = this.#ws(j);
    if (k !== j) flags = 0;
    if (k >= n) return -1;
    this.#flags = flags;
    return k;
  }

  /** Scans a string literal at i (its opening quote); returns the offset after it, or -1. */
  #string(i: number): number {
    const p = this.#p;
    const n = this.#n;
    let j = i + 1;
    for (;;) {
      if (j >= n) return -1;
      const c = p[j];
      if (PLAIN[c] === 1) {
        j++;
        continue;
      }
      if (c === QUOTE) return j + 1;
      if (c < 0x20) return -1;
      if (c === BACKSLASH) {
        if (j + 1 >= n) return -1;
        const e = p[j + 1];
        if (
          e === QUOTE || e === BACKSLASH || e === 0x2f || e === 0x62 || e === 0x66 ||
          e === 0x6e || e === 0x72 || e === 0x74
        ) {
          j += 2;
        } else if (
          e === 0x75 && j + 5 < n && isHexDigit(p[j + 2]) && isHexDigit(p[j + 3]) &&
          isHexDigit(p[j + 4]) && isHexDigit(p[j + 5])
        ) {
          j += 6;
        } else {
          return -1;
        }
      } else {
        j = this.#utf8(j);
        if (j < 0) return -1;
      }
    }
  }

  /**
   * Checks the UTF-8 sequence at j (a byte ≥ 0x80) as TextDecoder's fatal
   * mode does: shortest form, no surrogates, at most U+10FFFF. Returns the
   * offset after it, or -1.
   */
  #utf8(j: number): number {
    const p = this.#p;
    const n = this.#n;
    const c = p[j];
    if (c >= 0xc2 && c <= 0xdf) {
      return j + 1 < n && (p[j + 1] & 0xc0) === 0x80 ? j + 2 : -1;
    }
    if (c >= 0xe0 && c <= 0xef) {
      if (j + 2 >= n) return -1;
      const d = p[j + 1];
      const low = c === 0xe0 ? 0xa0 : 0x80;
      const high = c === 0xed ? 0x9f : 0xbf;
      return d >= low && d <= high && (p[j + 2] & 0xc0) === 0x80 ? j + 3 : -1;
    }
    if (c >= 0xf0 && c <= 0xf4) {
      if (j + 3 >= n) return -1;
      const d = p[j + 1];
      const low = c === 0xf0 ? 0x90 : 0x80;
      const high = c === 0xf4 ? 0x8f : 0xbf;
      return d >= low && d <= high && (p[j + 2] & 0xc0) === 0x80 && (p[j + 3] & 0xc0) === 0x80
        ? j + 4
        : -1;
    }
    return -1;
  }

  /** Scans a number at i as RFC 8259 writes it; returns the offset after it, or -1. */
  #number(i: number): number {
    const p = this.#p;
    const n = this.#n;
    let j = i;
    if (p[j] === MINUS) j++;
    if (j >= n) return -1;
    if (p[j] === 0x30) {
      j++;
    } else if (p[j] >= 0x31 && p[j] <= 0x39) {
      do j++; while (j < n && DIGITS[p[j]] === 1);
    } else {
      return -1;
    }
    if (j < n && p[j] === 0x2e) {
      j++;
      if (j >= n || !isDigit(p[j])) return -1;
      do j++; while (j < n && DIGITS[p[j]] === 1);
    }
    if (j < n && (p[j] === 0x65 || p[j] === 0x45)) {
      j++;
      if (j < n && (p[j] === 0x2b || p[j] === MINUS)) j++;
      if (j >= n || !isDigit(p[j])) return -1;
      do j++; while (j < n && DIGITS[p[j]] === 1);
    }
    return j;
  }
}

const EMPTY = new Uint8Array(0);
const EMPTY_VIEW = new DataView(new ArrayBuffer(0));
/** Where run() keeps its output between calls: nowhere. */
const NO_OUTPUT: ByteOutput = Object.freeze({ bytes: EMPTY, length: 0 });
// Byte classes as tables: one load and one comparison per byte in the scanning loops.
/** 1 for a byte a string holds as it is: ASCII, not a control character, `"` or `\\`. */
const PLAIN = new Uint8Array(256).map((_, c) =>
  c >= 0x20 && c < 0x80 && c !== QUOTE && c !== BACKSLASH ? 1 : 0
);
/** 1 for a decimal digit. */
const DIGITS = new Uint8Array(256).map((_, c) => c >= 0x30 && c <= 0x39 ? 1 : 0);
const TIME_OPEN = new TextEncoder().encode('{"time":"');
const DATA_OPEN = new TextEncoder().encode(',"data":{');

/** Whether p[i] is a space with no whitespace after it. */
function oneSpace(p: Uint8Array, i: number, n: number): boolean {
  return p[i] === 0x20 && i + 1 < n && p[i + 1] > 0x20;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function isHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x66);
}

/** Spreads a hash's bits over the low ones the table indexes by (murmur3's finaliser). */
function mix(hash: number): number {
  hash ^= hash >>> 16;
  hash = Math.imul(hash, 0x85ebca6b);
  hash ^= hash >>> 13;
  hash = Math.imul(hash, 0xc2b2ae35);
  return hash ^ (hash >>> 16);
}

function grown(array: Int32Array, least: number): Int32Array {
  const bigger = new Int32Array(Math.max(least, array.length * 2));
  bigger.set(array);
  return bigger;
}

function grownBytes(array: Uint8Array, least: number): Uint8Array {
  const bigger = new Uint8Array(Math.max(least, array.length * 2));
  bigger.set(array);
  return bigger;
}

/**
 * Copies from[start, end) to to[o…], four bytes at a time, the last four
 * overlapping: keys and values are short, too short for set() on a subarray
 * (which allocates), and a byte loop costs four times the loads.
 */
function copy(from: DataView, start: number, end: number, to: DataView, o: number): number {
  const length = end - start;
  if (length < 4) {
    for (let k = 0; k < length; k++) to.setUint8(o + k, from.getUint8(start + k));
    return o + length;
  }
  for (let k = 0; k < length - 4; k += 4) to.setUint32(o + k, from.getUint32(start + k));
  to.setUint32(o + length - 4, from.getUint32(end - 4));
  return o + length;
}

function copyBytes(from: Uint8Array, to: Uint8Array, o: number): number {
  for (let k = 0; k < from.length; k++) to[o++] = from[k];
  return o;
}

function writeTwoDigits(to: Uint8Array, o: number, value: number): void {
  to[o] = 0x30 + Math.floor(value / 10);
  to[o + 1] = 0x30 + (value % 10);
}

/** Copies a validated JSON value without the whitespace outside its strings (`compactJson`). */
function copyCompacted(
  from: Uint8Array,
  start: number,
  end: number,
  to: Uint8Array,
  o: number,
): number {
  for (let k = start; k < end;) {
    const c = from[k++];
    if (c === QUOTE) {
      to[o++] = c;
      for (;;) {
        const d = from[k++];
        to[o++] = d;
        if (d === QUOTE) break;
        if (d === BACKSLASH) to[o++] = from[k++];
      }
    } else if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) {
      to[o++] = c;
    }
  }
  return o;
}

function writeAscii(to: Uint8Array, o: number, text: string): number {
  for (let k = 0; k < text.length; k++) to[o++] = text.charCodeAt(k);
  return o;
}

/** Writes text as UTF-8, a lone surrogate as U+FFFD, as TextEncoder does. */
function writeUtf8(to: Uint8Array, o: number, text: string): number {
  for (let k = 0; k < text.length; k++) {
    let c = text.charCodeAt(k);
    if (c < 0x80) {
      to[o++] = c;
    } else if (c < 0x800) {
      to[o++] = 0xc0 | (c >> 6);
      to[o++] = 0x80 | (c & 0x3f);
    } else if (c < 0xd800 || c > 0xdfff) {
      to[o++] = 0xe0 | (c >> 12);
      to[o++] = 0x80 | ((c >> 6) & 0x3f);
      to[o++] = 0x80 | (c & 0x3f);
    } else {
      const next = k + 1 < text.length ? text.charCodeAt(k + 1) : 0;
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
        k++;
        to[o++] = 0xf0 | (c >> 18);
        to[o++] = 0x80 | ((c >> 12) & 0x3f);
        to[o++] = 0x80 | ((c >> 6) & 0x3f);
        to[o++] = 0x80 | (c & 0x3f);
      } else {
        to[o++] = 0xef;
        to[o++] = 0xbf;
        to[o++] = 0xbd;
      }
    }
  }
  return o;
}
