/**
 * First stage: payload bytes → text. Rejects oversized payloads unread and
 * anything that is not valid UTF-8. A leading UTF-8 byte order mark is
 * accepted and skipped: some serialisers (.NET, PowerShell) write one, and it
 * carries no data.
 * @module
 */

import type { RejectionReason } from "./result.ts";

/**
 * The decoded text, or why there is none.
 *
 * @example
 * ```ts
 * const decoded: Decoded = { ok: true, text: "{}", bomBytes: 0 };
 * ```
 */
export type Decoded =
  | {
    readonly ok: true;
    /** The payload as text, without a byte order mark. */
    readonly text: string;
    /** 3 when a byte order mark was skipped, else 0: add it to offsets in `text` to get byte offsets. */
    readonly bomBytes: number;
  }
  | {
    readonly ok: false;
    readonly reason: Extract<RejectionReason, "payload_too_large" | "invalid_utf8">;
    readonly message: string;
  };

/** How big a payload may be. */
export interface DecodeOptions {
  /** Larger payloads are rejected without being read. */
  readonly maxPayloadBytes: number;
}

// Stateless between calls when not streaming, so one instance serves every pipeline.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Decodes a payload as strict UTF-8, after checking its size.
 *
 * @example
 * ```ts
 * const decoded = decodePayload(new TextEncoder().encode('{"t":1}'), { maxPayloadBytes: 262144 });
 * if (decoded.ok) decoded.text; // '{"t":1}'
 * ```
 */
export function decodePayload(payload: Uint8Array, options: DecodeOptions): Decoded {
  if (payload.byteLength > options.maxPayloadBytes) {
    return {
      ok: false,
      reason: "payload_too_large",
      message: `payload is ${payload.byteLength} bytes, more than MAX_PAYLOAD_BYTES ` +
        `(${options.maxPayloadBytes}); raise MAX_PAYLOAD_BYTES if such payloads are expected`,
    };
  }
  const bomBytes = payload.byteLength >= 3 && payload[0] === 0xef && payload[1] === 0xbb &&
      payload[2] === 0xbf
    ? 3
    : 0;
  try {
    return { ok: true, text: utf8.decode(bomBytes ? payload.subarray(3) : payload), bomBytes };
  } catch (error) {
    // TextDecoder signals invalid input only by throwing a TypeError; anything else is ours.
    if (!(error instanceof TypeError)) throw error;
    return { ok: false, reason: "invalid_utf8", message: describeInvalidUtf8(payload) };
  }
}

/**
 * The UTF-8 byte offset of `index`, a UTF-16 offset into `text`: what a
 * person counting bytes of the payload would find.
 *
 * @example
 * ```ts
 * utf8Offset("é}", 1); // 2
 * ```
 */
export function utf8Offset(text: string, index: number): number {
  let bytes = 0;
  for (let i = 0; i < index && i < text.length; i++) {
    const c = text.charCodeAt(i);
    // A surrogate pair is 4 bytes: 2 counted for each half.
    bytes += c < 0x80 ? 1 : c < 0x800 || (c >= 0xd800 && c <= 0xdfff) ? 2 : 3;
  }
  return bytes;
}

/** Finds the first byte that breaks UTF-8, for the message only. */
function describeInvalidUtf8(bytes: Uint8Array): string {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i];
    let need = 0;
    let min = 0;
    if (b < 0x80) {
      i++;
      continue;
    } else if (b >= 0xc2 && b <= 0xdf) {
      need = 1;
      min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      min = 0x10000;
    } else {
      return invalidAt(bytes, i);
    }
    let codePoint = b & (0x3f >> need);
    for (let k = 1; k <= need; k++) {
      const next = bytes[i + k];
      if (next === undefined || (next & 0xc0) !== 0x80) return invalidAt(bytes, i);
      codePoint = (codePoint << 6) | (next & 0x3f);
    }
    if (codePoint < min || codePoint > 0x10ffff || (codePoint >= 0xd800 && codePoint <= 0xdfff)) {
      return invalidAt(bytes, i);
    }
    i += need + 1;
  }
  return "payload is not valid UTF-8; the datalogger must send JSON encoded as UTF-8";
}

function invalidAt(bytes: Uint8Array, offset: number): string {
  const hex = bytes[offset].toString(16).padStart(2, "0");
  return `payload is not valid UTF-8: invalid byte 0x${hex} at byte ${offset}; ` +
    "the datalogger must send JSON encoded as UTF-8";
}
