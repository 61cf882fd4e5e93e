/**
 * Writes generated JSON values as text, the way different dataloggers might:
 * whitespace, `\uXXXX` and short escapes chosen by a seeded generator, so a
 * property test's failing case is reproducible from its seed.
 * @module
 */

/**
 * A value to write: strings are escaped by the writer, arrays and objects
 * laid out by it, and any other kind is written as its `text`, unchanged
 * (numbers digit for digit, literals, bare `NaN`).
 *
 * @example
 * ```ts
 * const value: WritableJson = { kind: "object", members: [["P", { kind: "number", text: "1.50" }]] };
 * ```
 */
export type WritableJson =
  | { readonly kind: "string"; readonly value: string }
  | { readonly kind: "array"; readonly items: readonly WritableJson[] }
  | { readonly kind: "object"; readonly members: readonly (readonly [string, WritableJson])[] }
  | { readonly kind: string; readonly text: string };

/** How the writer lays text out. */
export interface JsonWriterOptions {
  /** Seeds the generator (xorshift32); the same seed writes the same text. */
  readonly seed: number;
  /** How often a place that may hold whitespace holds none (0 to 1). */
  readonly compactRate: number;
  /** How often a character that needs no escape is written as `\uXXXX` anyway (0 to 1). */
  readonly escapeRate: number;
  /** Whether `"`, `\` and newline are sometimes written as `\"`, `\\` and `\n` rather than `\uXXXX`. */
  readonly shortEscapes: boolean;
}

/**
 * The writer. Characters JSON requires escaped (quote, backslash, control
 * characters) and lone surrogates are always escaped.
 *
 * @example
 * ```ts
 * const writer = new JsonWriter({ seed: 7, compactRate: 0.7, escapeRate: 0.1, shortEscapes: false });
 * writer.value({ kind: "string", value: "µ" }); // '"µ"' or '"\\u00b5"'
 * ```
 */
export class JsonWriter {
  readonly #options: JsonWriterOptions;
  #seed: number;

  constructor(options: JsonWriterOptions) {
    this.#options = options;
    this.#seed = options.seed >>> 0 || 1;
  }

  /** 0 ≤ n < 1, xorshift32. */
  next(): number {
    let x = this.#seed;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#seed = x >>> 0;
    return this.#seed / 4294967296;
  }

  /** Nothing, or some JSON whitespace. */
  space(): string {
    const n = this.next();
    if (n < this.#options.compactRate) return "";
    const rest = (n - this.#options.compactRate) / (1 - this.#options.compactRate);
    return rest < 0.34 ? " " : rest < 0.67 ? "\n  " : rest < 0.84 ? "\t" : "\r\n";
  }

  /** A JSON string literal for `value`. */
  string(value: string): string {
    const { escapeRate, shortEscapes } = this.#options;
    let out = '"';
    for (let i = 0; i < value.length; i++) {
      const c = value.charCodeAt(i);
      const high = c >= 0xd800 && c <= 0xdbff;
      const low = c >= 0xdc00 && c <= 0xdfff;
      const paired = high && i + 1 < value.length &&
        value.charCodeAt(i + 1) >= 0xdc00 && value.charCodeAt(i + 1) <= 0xdfff;
      const unicode = "\\u" + c.toString(16).padStart(4, "0");
      if (c === 0x22 || c === 0x5c) {
        out += shortEscapes && this.next() < 0.5 ? "\\" + value[i] : unicode;
      } else if (c < 0x20 || ((high || low) && !paired) || this.next() < escapeRate) {
        out += shortEscapes && c === 0x0a && this.next() < 0.5 ? "\\n" : unicode;
      } else if (paired) {
        out += value[i] + value[i + 1];
        i++;
      } else {
        out += value[i];
      }
    }
    return out + '"';
  }

  /** `value` as JSON text. */
  value(value: WritableJson): string {
    if ("text" in value) return value.text;
    if ("value" in value) return this.string(value.value);
    if ("items" in value) {
      return "[" + this.space() +
        value.items.map((item) => this.value(item) + this.space()).join("," + this.space()) +
        "]";
    }
    return "{" + this.space() +
      value.members.map(([key, member]) =>
        this.string(key) + this.space() + ":" + this.space() + this.value(member) + this.space()
      ).join("," + this.space()) + "}";
  }
}
