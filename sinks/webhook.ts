/**
 * The webhook sink: POSTs records as JSON to an HTTP endpoint, signed with
 * HMAC-SHA256 and keyed for idempotency by the hash of the exact body, and
 * sorts the endpoint's answers into accepted, retry (later) and refused.
 * @module
 */

import denoJson from "../deno.json" with { type: "json" };
import { type OutputRecord, recordText } from "../src/record.ts";
import { namesCertificateProblem } from "../src/tls.ts";
import { type RecordRefusal, RecordsRefusedError, RetryLaterError, type Sink } from "./sink.ts";

/** Default `WEBHOOK_TIMEOUT_MS`: how long one request may take, answer included. */
export const DEFAULT_WEBHOOK_TIMEOUT_MS = 10_000;

/** How much of a refusing endpoint's answer goes into the dead letter's reason. */
const REASON_BODY_CHARS = 500;
// Enough bytes for REASON_BODY_CHARS characters of UTF-8; the rest of the answer is not read.
const REASON_BODY_BYTES = REASON_BODY_CHARS * 4;

const USER_AGENT = `gridrelay/${denoJson.version}`;
// Headers the sink sets itself: the configured ones cannot replace them.
const OWN_HEADERS = ["content-type", "user-agent", "idempotency-key", "x-gridrelay-signature"];

const encoder = new TextEncoder();
const NEWLINE = 0x0a;
const COMMA = 0x2c;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

/**
 * Options of {@linkcode createWebhookSink}.
 *
 * @example
 * ```ts
 * const options: WebhookSinkOptions = {
 *   url: "https://ingest.example.com/readings",
 *   secret: "s3cret",
 *   headers: { Authorization: "Bearer abc" },
 *   batchSize: 1,
 *   timeoutMs: 10_000,
 * };
 * ```
 */
export interface WebhookSinkOptions {
  /** `WEBHOOK_URL`: an `http:` or `https:` URL. */
  readonly url: string;
  /** `WEBHOOK_SECRET`: when set, every request carries `X-Gridrelay-Signature`. */
  readonly secret?: string;
  /** `WEBHOOK_HEADERS`: extra headers, e.g. `Authorization`. Their values never appear in an error. */
  readonly headers?: Readonly<Record<string, string>>;
  /** `WEBHOOK_BATCH_SIZE`: records per request; 1 (default) sends an object, more send an array. */
  readonly batchSize?: number;
  /** `WEBHOOK_TIMEOUT_MS`: the most one request may take (default 10000). */
  readonly timeoutMs?: number;
  /** The sink's name (default `"webhook"`). */
  readonly name?: string;
}

/**
 * Creates the webhook sink. Each request's body is the record's JSON text
 * (batch size 1) or a JSON array of them, exactly as spooled; it carries
 * `Content-Type: application/json`, `User-Agent: gridrelay/<version>`, the
 * configured headers, `Idempotency-Key: <hex SHA-256 of the body>` and, with
 * a secret, `X-Gridrelay-Signature: sha256=<hex HMAC-SHA256 of the body>`.
 *
 * `write` resolves on 2xx. It throws a {@linkcode RetryLaterError} when the
 * answer (408, 429, 5xx) carries `Retry-After`, a plain error on other 408,
 * 429, 5xx and 3xx answers, network errors and timeouts (all retried), and a
 * {@linkcode RecordsRefusedError} on any other 4xx, whose reason carries the
 * status and the start of the answer.
 *
 * @example
 * ```ts
 * const sink = await createWebhookSink({ url: "http://127.0.0.1:8080/hook", secret: "s3cret" });
 * await sink.write([{ time: "2021-07-06T12:55:00+00:00", data: {} }], AbortSignal.timeout(30_000));
 * ```
 */
export async function createWebhookSink(options: WebhookSinkOptions): Promise<Sink> {
  const url = parseEndpoint(options.url);
  const batchSize = options.batchSize ?? 1;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
    throw new RangeError(
      `The webhook sink needs a batch size that is a whole number from 1 (WEBHOOK_BATCH_SIZE), got ${batchSize}.`,
    );
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_WEBHOOK_TIMEOUT_MS;
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) {
    throw new RangeError(
      `The webhook sink needs a timeout that is a whole number of milliseconds from 1 (WEBHOOK_TIMEOUT_MS), got ${timeoutMs}.`,
    );
  }
  const key = options.secret === undefined || options.secret === ""
    ? undefined
    : await crypto.subtle.importKey(
      "raw",
      encoder.encode(options.secret),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
  return new WebhookSink({
    name: options.name ?? "webhook",
    url,
    key,
    headers: configuredHeaders(options.headers ?? {}),
    secrets: secretsOf(options),
    batchSize,
    timeoutMs,
  });
}

/**
 * The wait a `Retry-After` header asks for, in milliseconds: delay-seconds
 * (`"120"`) or an HTTP date, counted from `now`. `undefined` when the value
 * is neither; a date in the past gives 0. Callers cap it.
 *
 * @example
 * ```ts
 * parseRetryAfter("2"); // 2000
 * parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT", Date.parse("Wed, 21 Oct 2015 07:27:00 GMT")); // 60000
 * ```
 */
export function parseRetryAfter(value: string, now: number = Date.now()): number | undefined {
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  // RFC 9110 dates carry a weekday and a zone; a bare number or word is not one.
  if (!/^[A-Za-z]{3},\s/.test(text)) return undefined;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

interface WebhookSinkInit {
  readonly name: string;
  readonly url: URL;
  readonly key?: CryptoKey;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  /** Texts an answer must not carry into a reason: the signing secret and header values. */
  readonly secrets: readonly string[];
  readonly batchSize: number;
  readonly timeoutMs: number;
}

class WebhookSink implements Sink {
  readonly name: string;
  readonly batchSize: number;
  readonly #url: URL;
  readonly #endpoint: string;
  readonly #key?: CryptoKey;
  readonly #headers: ReadonlyArray<readonly [string, string]>;
  readonly #secrets: readonly string[];
  readonly #timeoutMs: number;

  constructor(init: WebhookSinkInit) {
    this.name = init.name;
    this.batchSize = init.batchSize;
    this.#url = init.url;
    this.#endpoint = describeEndpoint(init.url);
    this.#key = init.key;
    this.#headers = init.headers;
    this.#secrets = init.secrets;
    this.#timeoutMs = init.timeoutMs;
  }

  write(records: OutputRecord[], signal: AbortSignal): Promise<void> {
    return this.writeTexts(records.map(recordText), signal);
  }

  // The runner passes at most batchSize records; a direct caller may pass more, and gets one
  // request per batchSize records, refusals collected across them. The spooled texts go out as
  // they are: the body holds every number exactly as received, and nothing is parsed.
  async writeTexts(texts: string[], signal: AbortSignal): Promise<void> {
    const refused: RecordRefusal[] = [];
    for (let start = 0; start < texts.length; start += this.batchSize) {
      const chunk = texts.slice(start, start + this.batchSize);
      const body = encoder.encode(this.batchSize === 1 ? chunk[0] : `[${chunk.join(",")}]`);
      await this.#postRecords(body, start, chunk.length, refused, signal);
    }
    this.#refuse(refused);
  }

  // What the runner calls: the spooled lines become the body with nothing decoded or encoded —
  // the same bytes writeTexts sends ("\n" between records turned into "," inside "[…]").
  async writeLines(lines: Uint8Array, signal: AbortSignal): Promise<void> {
    const refused: RecordRefusal[] = [];
    let index = 0;
    for (let start = 0; start < lines.length;) {
      let end = start;
      let count = 0;
      while (count < this.batchSize && end < lines.length) {
        const newline = lines.indexOf(NEWLINE, end);
        end = newline < 0 ? lines.length : newline + 1;
        count++;
      }
      await this.#postRecords(
        jsonBody(lines, start, end, this.batchSize === 1),
        index,
        count,
        refused,
        signal,
      );
      index += count;
      start = end;
    }
    this.#refuse(refused);
  }

  // Posts records first…first+count−1 of a batch; notes them in `refused` if the endpoint
  // refused them for good.
  async #postRecords(
    body: Uint8Array<ArrayBuffer>,
    first: number,
    count: number,
    refused: RecordRefusal[],
    signal: AbortSignal,
  ): Promise<void> {
    const reason = await this.#post(body, signal);
    if (reason === undefined) return;
    for (let index = first; index < first + count; index++) refused.push({ index, reason });
  }

  #refuse(refused: RecordRefusal[]): void {
    if (refused.length === 0) return;
    throw new RecordsRefusedError(
      `The webhook ${this.#endpoint} refused ${refused.length} record(s): ${refused[0].reason}`,
      { refused },
    );
  }

  // Resolves when the endpoint accepted the body, to a reason when it refused it for good;
  // throws when it should be sent again.
  async #post(body: Uint8Array<ArrayBuffer>, signal: AbortSignal): Promise<string | undefined> {
    signal.throwIfAborted();
    const headers = new Headers(this.#headers as [string, string][]);
    headers.set("content-type", "application/json");
    headers.set("user-agent", USER_AGENT);
    headers.set("idempotency-key", hex(await crypto.subtle.digest("SHA-256", body)));
    if (this.#key) {
      const signature = await crypto.subtle.sign("HMAC", this.#key, body);
      headers.set("x-gridrelay-signature", `sha256=${hex(signature)}`);
    }
    const request = new RequestDeadline(signal, this.#timeoutMs);
    try {
      let response: Response;
      try {
        response = await fetch(this.#url, {
          method: "POST",
          headers,
          body,
          signal: request.signal,
          // A POST must not turn into a GET, nor carry Authorization elsewhere, behind our back.
          redirect: "manual",
        });
      } catch (error) {
        throw this.#requestError(error, signal, request);
      }
      try {
        return await this.#verdict(response);
      } catch (error) {
        if (error instanceof RetryLaterError || error instanceof WebhookError) throw error;
        // Reading the answer failed: the same causes as a failed request.
        throw this.#requestError(error, signal, request);
      } finally {
        // A body left unread holds the connection; cancelling a read one is harmless.
        await response.body?.cancel().catch(() => {});
      }
    } finally {
      request.settled();
    }
  }

  async #verdict(response: Response): Promise<string | undefined> {
    const { status } = response;
    if (status >= 200 && status <= 299) return undefined;
    const answer = `${status}${response.statusText ? ` ${response.statusText}` : ""}`;
    if (status === 408 || status === 429 || status >= 500) {
      const retryAfter = response.headers.get("retry-after");
      const waitMs = retryAfter === null ? undefined : parseRetryAfter(retryAfter);
      const message = `The webhook ${this.#endpoint} answered ${answer}`;
      if (waitMs !== undefined) {
        throw new RetryLaterError(`${message} and asked to retry after ${retryAfter!.trim()}`, {
          retryAfterMs: waitMs,
        });
      }
      throw new WebhookError(`${message}; retrying`);
    }
    if (status >= 300 && status <= 399) {
      const location = response.headers.get("location");
      throw new WebhookError(
        `The webhook ${this.#endpoint} answered ${answer}${
          location ? ` redirecting to ${describeLocation(location, this.#url)}` : ""
        }; redirects are not followed, so set WEBHOOK_URL to the final URL`,
      );
    }
    if (status >= 400 && status <= 499) {
      // An endpoint may echo the credentials it refused; the reason goes to the dead letters.
      let start = await answerStart(response);
      for (const secret of this.#secrets) start = start.replaceAll(secret, "***");
      return `HTTP ${answer}${start === "" ? "" : `: ${start}`}`;
    }
    throw new WebhookError(`The webhook ${this.#endpoint} answered ${answer}, which is not HTTP`);
  }

  #requestError(error: unknown, signal: AbortSignal, request: RequestDeadline): unknown {
    // The runner's abort (shutdown) is passed on as is: it is not a failure of the endpoint.
    if (signal.aborted) return signal.reason;
    if (request.timedOut) {
      return new WebhookError(
        `The webhook ${this.#endpoint} did not answer within WEBHOOK_TIMEOUT_MS=${this.#timeoutMs} ms; retrying`,
      );
    }
    const reason = networkReason(error);
    if (namesCertificateProblem(reason)) {
      return new WebhookError(
        `Cannot reach the webhook ${this.#endpoint}: its TLS certificate was not accepted (${reason}). If a private CA signed it, start the worker with DENO_CERT set to that CA's PEM file (Deno then trusts it besides the CAs it trusts by default), and check that the host in WEBHOOK_URL is one the certificate names; retrying`,
      );
    }
    return new WebhookError(`Cannot reach the webhook ${this.#endpoint}: ${reason}; retrying`);
  }
}

/**
 * One request's signal: aborts when the runner's signal does or when the
 * request has taken `timeoutMs`. Its timer and listener go as soon as the
 * request settles. (`AbortSignal.timeout` would keep its timer, and with it
 * the signals, for the whole timeout after every answer: at hundreds of
 * requests a second, thousands of them alive at once.)
 */
class RequestDeadline {
  readonly #controller = new AbortController();
  readonly #outer: AbortSignal;
  readonly #onAbort: () => void;
  readonly #timer: ReturnType<typeof setTimeout>;
  #timedOut = false;

  constructor(outer: AbortSignal, timeoutMs: number) {
    this.#outer = outer;
    this.#onAbort = () => this.#controller.abort(outer.reason);
    outer.addEventListener("abort", this.#onAbort, { once: true });
    this.#timer = setTimeout(() => {
      this.#timedOut = true;
      this.#controller.abort(new DOMException("The request timed out.", "TimeoutError"));
    }, timeoutMs);
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Whether the request ran out of time (rather than being aborted by the runner). */
  get timedOut(): boolean {
    return this.#timedOut;
  }

  settled(): void {
    clearTimeout(this.#timer);
    this.#outer.removeEventListener("abort", this.#onAbort);
  }
}

// Marks the sink's own, already described errors. No `cause`: fetch's errors name the full URL,
// query string and all, and this message is logged.
class WebhookError extends Error {
  override name = "WebhookError";
}

// Each header value whole and, for values like "Bearer <token>", each longer word of it.
function secretsOf(options: WebhookSinkOptions): string[] {
  const secrets = new Set<string>();
  for (const value of [options.secret ?? "", ...Object.values(options.headers ?? {})]) {
    for (const part of [value, ...value.split(/\s+/)]) if (part.length >= 6) secrets.add(part);
  }
  // Longest first, so a value is masked whole before any word of it.
  return [...secrets].sort((a, b) => b.length - a.length);
}

function parseEndpoint(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TypeError(
      `The webhook sink needs WEBHOOK_URL to be an http:// or https:// URL, got one that does not parse.`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(
      `The webhook sink needs WEBHOOK_URL to be an http:// or https:// URL, got a ${url.protocol} URL.`,
    );
  }
  return url;
}

// Checked once, here, so a bad value fails start-up naming the header, never showing its value.
function configuredHeaders(
  headers: Readonly<Record<string, string>>,
): ReadonlyArray<readonly [string, string]> {
  const entries: [string, string][] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (OWN_HEADERS.includes(name.toLowerCase())) {
      throw new TypeError(
        `WEBHOOK_HEADERS sets ${name}, which the webhook sink sets itself; remove it from WEBHOOK_HEADERS.`,
      );
    }
    try {
      new Headers([[name, value]]);
    } catch {
      throw new TypeError(
        `WEBHOOK_HEADERS has an invalid ${name} header (a bad name, or a value with a line break or control character); fix that entry.`,
      );
    }
    entries.push([name, value]);
  }
  return entries;
}

// The endpoint as messages name it: without userinfo and query string, which may hold secrets.
function describeEndpoint(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

function describeLocation(location: string, base: URL): string {
  try {
    return describeEndpoint(new URL(location, base));
  } catch {
    return "an invalid Location";
  }
}

// The innermost reason of a fetch failure, without the URL that Deno puts in front of it.
function networkReason(error: unknown): string {
  let reason = error instanceof Error ? error.message : String(error);
  let cause = error instanceof Error ? error.cause : undefined;
  while (cause instanceof Error) {
    reason = cause.message;
    cause = cause.cause;
  }
  return reason.replace(/^error sending request for url \([^)]*\):\s*/, "").replace(/\.$/, "");
}

// The first REASON_BODY_CHARS characters of an answer, on one line; only that much is read.
async function answerStart(response: Response): Promise<string> {
  if (response.body === null) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < REASON_BODY_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } finally {
    reader.releaseLock();
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  const text = new TextDecoder().decode(bytes.subarray(0, REASON_BODY_BYTES));
  const start = text.replace(/\s+/g, " ").trim();
  return start.length > REASON_BODY_CHARS ? `${start.slice(0, REASON_BODY_CHARS)}…` : start;
}

function hex(buffer: ArrayBuffer): string {
  return Array.from(new Uint8Array(buffer), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * The body for JSON Lines lines[start, end): the one record itself, or the
 * records as a JSON array. A record holds no raw "\n" (JSON escapes it), so
 * every one in the range ends a record.
 */
function jsonBody(
  lines: Uint8Array,
  start: number,
  end: number,
  single: boolean,
): Uint8Array<ArrayBuffer> {
  const last = end > start && lines[end - 1] === NEWLINE ? end - 1 : end;
  if (single) return lines.slice(start, last);
  const body = new Uint8Array(last - start + 2);
  body[0] = OPEN_BRACKET;
  body.set(lines.subarray(start, last), 1);
  for (let i = body.indexOf(NEWLINE, 1); i >= 0; i = body.indexOf(NEWLINE, i + 1)) body[i] = COMMA;
  body[body.length - 1] = CLOSE_BRACKET;
  return body;
}
