/**
 * Typed access to `JSON.rawJSON` and `JSON.isRawJSON` (ES2026, in Deno's V8),
 * which TypeScript's bundled libraries do not declare yet.
 * @module
 */

/** A JSON value whose text `JSON.stringify` writes verbatim. */
export type RawJSON = { readonly rawJSON: string };

const json = JSON as unknown as {
  rawJSON(text: string): RawJSON;
  isRawJSON(value: unknown): value is RawJSON;
};

/**
 * Wraps JSON text (a number, string, `true`, `false` or `null`) so that
 * `JSON.stringify` writes it exactly as given.
 *
 * @example
 * ```ts
 * JSON.stringify({ E: rawJSON("18446744073709551615") }); // '{"E":18446744073709551615}'
 * ```
 */
export function rawJSON(text: string): RawJSON {
  return json.rawJSON(text);
}

/**
 * Whether `value` came from {@linkcode rawJSON}.
 *
 * @example
 * ```ts
 * isRawJSON(rawJSON("1.50")); // true
 * ```
 */
export function isRawJSON(value: unknown): value is RawJSON {
  return json.isRawJSON(value);
}
