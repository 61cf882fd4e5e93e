/**
 * A single-pass, iterative JSON scanner that keeps source positions instead of
 * values, so numbers, key order and nested text survive exactly as written.
 * Strict RFC 8259, except that bare `NaN`, `Infinity` and `-Infinity` tokens
 * read as `null`. Never throws, never recurses, linear in the text's length.
 * @module
 */

/**
 * The kind of a JSON value. A `NaN`, `Infinity` or `-Infinity` token is `"null"`.
 *
 * @example
 * ```ts
 * const kind: JsonKind = "number";
 * ```
 */
export type JsonKind = "object" | "array" | "string" | "number" | "true" | "false" | "null";

/**
 * One value of the scanned text, as a range of the source. Objects and arrays
 * above the scan's `materializeDepth` list their members or items; deeper
 * ones are only a range.
 *
 * @example
 * ```ts
 * const scanned = scanJson('{"a": 1}', { maxDepth: 32, materializeDepth: 1 });
 * if (scanned.ok) scanned.root.members?.[0].value.kind; // "number"
 * ```
 */
export interface JsonNode {
  readonly kind: JsonKind;
  /** Offset of the value's first character in the scanned text. */
  readonly start: number;
  /** Offset just after the value's last character. */
  readonly end: number;
  /** The source range is already compact JSON: no whitespace, no `NaN`-like tokens. */
  readonly compact: boolean;
  /** For a string: it contains backslash escapes, so its text is not its value. */
  readonly escaped: boolean;
  /** For a materialized object: its members in source order, duplicates kept. */
  readonly members: readonly JsonMember[] | null;
  /** For a materialized array: its items. */
  readonly items: readonly JsonNode[] | null;
}

/**
 * One `"key": value` of an object.
 *
 * @example
 * ```ts
 * const scanned = scanJson('{"a\\u0062": 1}', { maxDepth: 32, materializeDepth: 1 });
 * if (scanned.ok) scanned.root.members?.[0].key; // "ab"
 * ```
 */
export interface JsonMember {
  /** The key's value (escapes decoded). */
  readonly key: string;
  /** Offset of the key's opening quote. */
  readonly keyStart: number;
  /** Offset just after the key's closing quote. */
  readonly keyEnd: number;
  readonly value: JsonNode;
}

/**
 * How deep to look and how much to keep.
 *
 * @example
 * ```ts
 * const options: ScanOptions = { maxDepth: 32, materializeDepth: 3 };
 * ```
 */
export interface ScanOptions {
  /** Deepest nesting of objects and arrays allowed; the top-level value is depth 1. */
  readonly maxDepth: number;
  /** Objects and arrays down to this depth list their contents; 0 lists nothing. */
  readonly materializeDepth: number;
}

/**
 * The scanned tree, or where and why the text is not acceptable JSON.
 *
 * @example
 * ```ts
 * const failed: ScanResult = { ok: false, reason: "invalid_json", problem: 'unexpected "}"', index: 7 };
 * ```
 */
export type ScanResult =
  | { readonly ok: true; readonly root: JsonNode }
  | {
    readonly ok: false;
    readonly reason: "invalid_json" | "too_deep";
    /** What is wrong, without the position, e.g. `unexpected "}"`. */
    readonly problem: string;
    /** What would have been right there, when that helps, e.g. `a key`. */
    readonly expected?: string;
    /** UTF-16 offset in the text where the problem is. */
    readonly index: number;
  };

interface MutableNode {
  kind: JsonKind;
  start: number;
  end: number;
  compact: boolean;
  escaped: boolean;
  members: JsonMember[] | null;
  items: JsonNode[] | null;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const MINUS = 0x2d;

/**
 * Scans JSON text into a tree of source ranges.
 *
 * @example
 * ```ts
 * const text = '{"E": 18446744073709551615}';
 * const scanned = scanJson(text, { maxDepth: 32, materializeDepth: 1 });
 * if (scanned.ok) {
 *   const value = scanned.root.members![0].value;
 *   text.slice(value.start, value.end); // "18446744073709551615"
 * }
 * ```
 */
export function scanJson(text: string, options: ScanOptions): ScanResult {
  return new Scanner(text, options).scan();
}

/**
 * The value of a JSON node as compact JSON text: whitespace outside strings
 * removed, `NaN`-like tokens written as `null`, everything else as written.
 *
 * @example
 * ```ts
 * const text = '[1.50, NaN, {"b" : 2}]';
 * const scanned = scanJson(text, { maxDepth: 32, materializeDepth: 0 });
 * if (scanned.ok) jsonText(text, scanned.root); // '[1.50,null,{"b":2}]'
 * ```
 */
export function jsonText(text: string, node: JsonNode): string {
  return node.compact ? text.slice(node.start, node.end) : compactJson(text, node.start, node.end);
}

/**
 * The value of a string node (escapes decoded).
 *
 * @example
 * ```ts
 * const text = '"a\\u0062"';
 * const scanned = scanJson(text, { maxDepth: 32, materializeDepth: 0 });
 * if (scanned.ok) stringValue(text, scanned.root); // "ab"
 * ```
 */
export function stringValue(text: string, node: JsonNode): string {
  // The scanner has validated the literal, so JSON.parse cannot fail here.
  return node.escaped
    ? JSON.parse(text.slice(node.start, node.end)) as string
    : text.slice(node.start + 1, node.end - 1);
}

/** Compacts a range the scanner has already validated. */
function compactJson(text: string, start: number, end: number): string {
  let out = "";
  let chunk = start;
  let i = start;
  while (i < end) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      i++;
      for (let d = text.charCodeAt(i); d !== QUOTE; d = text.charCodeAt(i)) {
        i += d === BACKSLASH ? 2 : 1;
      }
      i++;
    } else if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
      out += text.slice(chunk, i);
      while (i < end && isWhitespace(text.charCodeAt(i))) i++;
      chunk = i;
    } else if (
      c === 0x4e /* N */ || c === 0x49 /* I */ || (c === MINUS && text.charCodeAt(i + 1) === 0x49)
    ) {
      // Outside strings, N and I only start NaN and Infinity, which read as null.
      out += text.slice(chunk, i) + "null";
      i += c === 0x4e ? 3 : c === 0x49 ? 8 : 9;
      chunk = i;
    } else {
      i++;
    }
  }
  return out + text.slice(chunk, end);
}

function isWhitespace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function isHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x66);
}

function describeChar(text: string, index: number): string {
  const c = text.codePointAt(index)!;
  if (c < 0x20 || c === 0x7f || c === 0x2028 || c === 0x2029 || c === 0xfeff) {
    return `U+${c.toString(16).toUpperCase().padStart(4, "0")}`;
  }
  return JSON.stringify(String.fromCodePoint(c));
}

type Failure = Extract<ScanResult, { ok: false }>;

class Scanner {
  readonly #text: string;
  readonly #maxDepth: number;
  readonly #materializeDepth: number;
  /** Bumped whenever the scan passes whitespace or a NaN-like token, to tell compact ranges. */
  #dirty = 0;
  /** Set by #string: whether the last string scanned had escapes. */
  #escaped = false;
  /** Set by #key: where the last key's literal starts and ends. */
  #keyStart = 0;
  #keyEnd = 0;
  #failure: Failure | null = null;

  constructor(text: string, options: ScanOptions) {
    this.#text = text;
    this.#maxDepth = options.maxDepth;
    this.#materializeDepth = options.materializeDepth;
  }

  scan(): ScanResult {
    const text = this.#text;
    const length = text.length;
    const materializeDepth = this.#materializeDepth;
    // Per open container, indexed by depth (1-based): explicit stacks instead of recursion.
    const isObjectAt: boolean[] = [false];
    const nodeAt: (MutableNode | null)[] = [null];
    const dirtyAt: number[] = [0];
    let depth = 0;
    let root: MutableNode | null = null;
    // The key waiting for its value, when the enclosing object is materialized.
    let key = "";
    let keyStart = 0;
    let keyEnd = 0;
    let i = this.#skipWhitespace(0);

    for (;;) {
      // A value starts at i.
      if (i >= length) return this.#fail("invalid_json", "unexpected end of payload", i);
      const c = text.charCodeAt(i);
      const parent = depth > 0 && depth <= materializeDepth ? nodeAt[depth]! : null;
      if (c === OPEN_BRACE || c === OPEN_BRACKET) {
        depth++;
        if (depth > this.#maxDepth) {
          return this.#fail("too_deep", `nesting deeper than ${this.#maxDepth} levels`, i);
        }
        const isObject = c === OPEN_BRACE;
        let node: MutableNode | null = null;
        if (depth <= materializeDepth + 1) {
          node = {
            kind: isObject ? "object" : "array",
            start: i,
            end: i,
            compact: true,
            escaped: false,
            members: isObject && depth <= materializeDepth ? [] : null,
            items: !isObject && depth <= materializeDepth ? [] : null,
          };
          if (parent) attach(parent, node, key, keyStart, keyEnd);
          else if (depth === 1) root = node;
        }
        isObjectAt[depth] = isObject;
        nodeAt[depth] = node;
        dirtyAt[depth] = this.#dirty;
        i = this.#skipWhitespace(i + 1);
        const close = isObject ? CLOSE_BRACE : CLOSE_BRACKET;
        if (text.charCodeAt(i) !== close) {
          if (isObject) {
            i = this.#key(i);
            if (i < 0) return this.#failure!;
            if (node?.members) {
              keyStart = this.#keyStart;
              keyEnd = this.#keyEnd;
              key = this.#keyValue(keyStart, keyEnd);
            }
          }
          continue;
        }
        // An empty container: fall through to close it below.
      } else {
        const start = i;
        let kind: JsonKind;
        let escaped = false;
        let compact = true;
        if (c === QUOTE) {
          i = this.#string(i);
          if (i < 0) return this.#failure!;
          kind = "string";
          escaped = this.#escaped;
        } else if (c === MINUS || isDigit(c)) {
          if (c === MINUS && text.startsWith("-Infinity", i)) {
            i += 9;
            kind = "null";
            compact = false;
          } else {
            i = this.#number(i);
            if (i < 0) return this.#failure!;
            kind = "number";
          }
        } else if (c === 0x74 && text.startsWith("true", i)) {
          i += 4;
          kind = "true";
        } else if (c === 0x66 && text.startsWith("false", i)) {
          i += 5;
          kind = "false";
        } else if (c === 0x6e && text.startsWith("null", i)) {
          i += 4;
          kind = "null";
        } else if (c === 0x4e && text.startsWith("NaN", i)) {
          i += 3;
          kind = "null";
          compact = false;
        } else if (c === 0x49 && text.startsWith("Infinity", i)) {
          i += 8;
          kind = "null";
          compact = false;
        } else {
          return this.#fail("invalid_json", `unexpected ${describeChar(text, i)}`, i, "a value");
        }
        if (!compact) this.#dirty++;
        if (parent || depth === 0) {
          const node: MutableNode = {
            kind,
            start,
            end: i,
            compact,
            escaped,
            members: null,
            items: null,
          };
          if (parent) attach(parent, node, key, keyStart, keyEnd);
          else root = node;
        }
      }

      // After a value: close containers and find the next value, or the end.
      for (;;) {
        if (depth === 0) {
          i = this.#skipWhitespace(i);
          if (i < length) {
            return this.#fail(
              "invalid_json",
              `unexpected ${describeChar(text, i)} after the end`,
              i,
            );
          }
          return { ok: true, root: root! };
        }
        if (text.charCodeAt(i) !== (isObjectAt[depth] ? CLOSE_BRACE : CLOSE_BRACKET)) {
          i = this.#skipWhitespace(i);
        }
        if (i >= length) return this.#fail("invalid_json", "unexpected end of payload", i);
        const c = text.charCodeAt(i);
        if (c === (isObjectAt[depth] ? CLOSE_BRACE : CLOSE_BRACKET)) {
          const node = nodeAt[depth];
          if (node) {
            node.end = i + 1;
            node.compact = this.#dirty === dirtyAt[depth];
          }
          depth--;
          i++;
          continue;
        }
        if (c !== COMMA) {
          const expected = isObjectAt[depth] ? '"," or "}"' : '"," or "]"';
          return this.#fail("invalid_json", `unexpected ${describeChar(text, i)}`, i, expected);
        }
        i = this.#skipWhitespace(i + 1);
        if (isObjectAt[depth]) {
          i = this.#key(i);
          if (i < 0) return this.#failure!;
          if (depth <= materializeDepth) {
            keyStart = this.#keyStart;
            keyEnd = this.#keyEnd;
            key = this.#keyValue(keyStart, keyEnd);
          }
        }
        break;
      }
    }
  }

  /** Scans `"key" :` at i; returns the offset of the value after it, or -1. */
  #key(i: number): number {
    const text = this.#text;
    if (text.charCodeAt(i) !== QUOTE) {
      if (i >= text.length) return this.#failAt("invalid_json", "unexpected end of payload", i);
      return this.#failAt("invalid_json", `unexpected ${describeChar(text, i)}`, i, "a key");
    }
    const end = this.#string(i);
    if (end < 0) return -1;
    this.#keyStart = i;
    this.#keyEnd = end;
    let j = this.#skipWhitespace(end);
    if (text.charCodeAt(j) !== COLON) {
      if (j >= text.length) return this.#failAt("invalid_json", "unexpected end of payload", j);
      return this.#failAt("invalid_json", `unexpected ${describeChar(text, j)}`, j, '":"');
    }
    j = this.#skipWhitespace(j + 1);
    return j;
  }

  #keyValue(start: number, end: number): string {
    return this.#escaped
      ? JSON.parse(this.#text.slice(start, end)) as string
      : this.#text.slice(start + 1, end - 1);
  }

  /** Scans a string literal at i (the opening quote); returns the offset after it, or -1. */
  #string(i: number): number {
    const text = this.#text;
    const length = text.length;
    let escaped = false;
    let j = i + 1;
    for (;;) {
      if (j >= length) return this.#failAt("invalid_json", "unterminated string", i);
      const c = text.charCodeAt(j);
      if (c === QUOTE) break;
      if (c === BACKSLASH) {
        escaped = true;
        const e = text.charCodeAt(j + 1);
        if (
          e === QUOTE || e === BACKSLASH || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e ||
          e === 0x72 || e === 0x74
        ) {
          j += 2;
        } else if (
          e === 0x75 && isHexDigit(text.charCodeAt(j + 2)) && isHexDigit(text.charCodeAt(j + 3)) &&
          isHexDigit(text.charCodeAt(j + 4)) && isHexDigit(text.charCodeAt(j + 5))
        ) {
          j += 6;
        } else {
          if (j + 1 >= length) return this.#failAt("invalid_json", "unterminated string", i);
          const escape = e === 0x75
            ? "\\u escape"
            : `escape "\\${String.fromCodePoint(text.codePointAt(j + 1)!)}"`;
          return this.#failAt("invalid_json", `invalid ${escape} in a string`, j);
        }
      } else if (c < 0x20) {
        return this.#failAt(
          "invalid_json",
          `unescaped control character ${describeChar(text, j)} in a string`,
          j,
        );
      } else {
        j++;
      }
    }
    this.#escaped = escaped;
    return j + 1;
  }

  /** Scans a number at i; returns the offset after it, or -1. */
  #number(i: number): number {
    const text = this.#text;
    let j = i;
    if (text.charCodeAt(j) === MINUS) j++;
    let c = text.charCodeAt(j);
    if (c === 0x30) {
      j++;
    } else if (c >= 0x31 && c <= 0x39) {
      do j++; while (isDigit(text.charCodeAt(j)));
    } else {
      return this.#badNumber(j);
    }
    if (text.charCodeAt(j) === 0x2e) {
      j++;
      if (!isDigit(text.charCodeAt(j))) return this.#badNumber(j);
      do j++; while (isDigit(text.charCodeAt(j)));
    }
    c = text.charCodeAt(j);
    if (c === 0x65 || c === 0x45) {
      j++;
      c = text.charCodeAt(j);
      if (c === 0x2b || c === MINUS) j++;
      if (!isDigit(text.charCodeAt(j))) return this.#badNumber(j);
      do j++; while (isDigit(text.charCodeAt(j)));
    }
    return j;
  }

  #badNumber(j: number): number {
    if (j >= this.#text.length) return this.#failAt("invalid_json", "unexpected end of payload", j);
    return this.#failAt(
      "invalid_json",
      `unexpected ${describeChar(this.#text, j)} in a number`,
      j,
    );
  }

  #skipWhitespace(i: number): number {
    const text = this.#text;
    const start = i;
    while (isWhitespace(text.charCodeAt(i))) i++;
    if (i !== start) this.#dirty++;
    return i;
  }

  #fail(reason: Failure["reason"], problem: string, index: number, expected?: string): Failure {
    return expected === undefined
      ? { ok: false, reason, problem, index }
      : { ok: false, reason, problem, index, expected };
  }

  #failAt(reason: Failure["reason"], problem: string, index: number, expected?: string): -1 {
    this.#failure = this.#fail(reason, problem, index, expected);
    return -1;
  }
}

function attach(
  parent: MutableNode,
  node: MutableNode,
  key: string,
  keyStart: number,
  keyEnd: number,
): void {
  if (parent.members) parent.members.push({ key, keyStart, keyEnd, value: node });
  else parent.items!.push(node);
}
