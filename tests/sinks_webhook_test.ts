/**
 * The webhook sink against a real HTTP server on loopback (`Deno.serve` on
 * port 0): what it sends, byte for byte, and how it reads every kind of answer.
 */

import assert from "node:assert/strict";
import { parseRecord } from "../src/record.ts";
import { MAX_RETRY_AFTER_MS, RecordsRefusedError, RetryLaterError } from "../sinks/sink.ts";
import { createWebhookSink, parseRetryAfter } from "../sinks/webhook.ts";
import denoJson from "../deno.json" with { type: "json" };
import { freePort } from "./_helpers/ports.ts";

const SECRET = "whsec-correct-horse";
const TOKEN = "Bearer tok-9f8e7d6c5b4a";
const RECORD_TEXT =
  '{"time":"2021-07-06T12:55:00+00:00","data":{"dse-1":{"E":18446744073709551615,"V_L3":229.70000000000002}}}';
const SECOND_TEXT = '{"time":"2021-07-06T12:55:01+00:00","data":{"dse-1":{"P":15983}}}';

interface Received {
  readonly at: number;
  readonly headers: Headers;
  readonly body: Uint8Array<ArrayBuffer>;
  readonly text: string;
}

/** A loopback server whose answer a test sets per request; it records every request. */
class TestEndpoint implements AsyncDisposable {
  readonly received: Received[] = [];
  respond: (request: Request, index: number) => Response | Promise<Response> = () =>
    new Response(null, { status: 204 });
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  readonly #held: Array<() => void> = [];

  constructor() {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      async (request) => {
        const body = new Uint8Array(await request.arrayBuffer());
        const index = this.received.length;
        this.received.push({
          at: performance.now(),
          headers: request.headers,
          body,
          text: new TextDecoder().decode(body),
        });
        return await this.respond(request, index);
      },
    );
  }

  /** An answer that never comes until the test ends: a hanging endpoint. */
  hang(): Promise<Response> {
    return new Promise((resolve) => this.#held.push(() => resolve(new Response(null))));
  }

  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}/hook`;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const release of this.#held) release();
    await this.#server.shutdown();
  }
}

async function hexDigest(body: Uint8Array<ArrayBuffer>): Promise<string> {
  return toHex(await crypto.subtle.digest("SHA-256", body));
}

async function hexHmac(secret: string, body: Uint8Array<ArrayBuffer>): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return toHex(await crypto.subtle.sign("HMAC", key, body));
}

function toHex(buffer: ArrayBuffer): string {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

const signal = new AbortController().signal;

Deno.test("one record: the body is its exact JSON text, signed, with an idempotency key and the headers", async () => {
  await using endpoint = new TestEndpoint();
  const sink = await createWebhookSink({
    url: endpoint.url,
    secret: SECRET,
    headers: { Authorization: TOKEN, "X-Site": "lagos-3" },
  });
  assert.equal(sink.name, "webhook");
  assert.equal(sink.batchSize, 1);
  await sink.write([parseRecord(RECORD_TEXT)], signal);

  const [request] = endpoint.received;
  assert.equal(request.text, RECORD_TEXT);
  assert.equal(request.headers.get("content-type"), "application/json");
  assert.equal(request.headers.get("user-agent"), `gridrelay/${denoJson.version}`);
  assert.equal(request.headers.get("authorization"), TOKEN);
  assert.equal(request.headers.get("x-site"), "lagos-3");
  assert.equal(
    request.headers.get("x-gridrelay-signature"),
    `sha256=${await hexHmac(SECRET, request.body)}`,
  );
  assert.equal(request.headers.get("idempotency-key"), await hexDigest(request.body));
  assert.match(request.headers.get("idempotency-key")!, /^[0-9a-f]{64}$/);
});

Deno.test("the same record sent again carries the same idempotency key and signature", async () => {
  await using endpoint = new TestEndpoint();
  const first = await createWebhookSink({ url: endpoint.url, secret: SECRET });
  const second = await createWebhookSink({ url: endpoint.url, secret: SECRET });
  await first.write([parseRecord(RECORD_TEXT)], signal);
  await second.write([parseRecord(RECORD_TEXT)], signal);
  await first.write([parseRecord(SECOND_TEXT)], signal);
  const keys = endpoint.received.map((request) => request.headers.get("idempotency-key"));
  assert.equal(keys[0], keys[1]);
  assert.notEqual(keys[0], keys[2]);
  assert.equal(
    endpoint.received[0].headers.get("x-gridrelay-signature"),
    endpoint.received[1].headers.get("x-gridrelay-signature"),
  );
});

Deno.test("a batch is one JSON array of the records' exact texts, signed and keyed as a whole", async () => {
  await using endpoint = new TestEndpoint();
  const sink = await createWebhookSink({ url: endpoint.url, secret: SECRET, batchSize: 10 });
  assert.equal(sink.batchSize, 10);
  await sink.write([parseRecord(RECORD_TEXT), parseRecord(SECOND_TEXT)], signal);
  await sink.write([parseRecord(SECOND_TEXT)], signal);

  const [batch, single] = endpoint.received;
  assert.equal(batch.text, `[${RECORD_TEXT},${SECOND_TEXT}]`);
  assert.equal(
    batch.headers.get("x-gridrelay-signature"),
    `sha256=${await hexHmac(SECRET, batch.body)}`,
  );
  assert.equal(batch.headers.get("idempotency-key"), await hexDigest(batch.body));
  assert.equal(
    single.text,
    `[${SECOND_TEXT}]`,
    "with a batch size above 1 the body is always an array",
  );
});

Deno.test("more records than the batch size go in several requests, in order", async () => {
  await using endpoint = new TestEndpoint();
  const sink = await createWebhookSink({ url: endpoint.url, batchSize: 1 });
  await sink.write([parseRecord(RECORD_TEXT), parseRecord(SECOND_TEXT)], signal);
  assert.deepEqual(endpoint.received.map((request) => request.text), [RECORD_TEXT, SECOND_TEXT]);
});

Deno.test("writeTexts sends the spooled texts as they are, keyed like write", async () => {
  await using endpoint = new TestEndpoint();
  const sink = await createWebhookSink({ url: endpoint.url, batchSize: 2 });
  await sink.writeTexts!([RECORD_TEXT, SECOND_TEXT], signal);
  await sink.write([parseRecord(RECORD_TEXT), parseRecord(SECOND_TEXT)], signal);
  const [texts, records] = endpoint.received;
  assert.equal(texts.text, `[${RECORD_TEXT},${SECOND_TEXT}]`);
  assert.equal(records.text, texts.text);
  assert.equal(texts.headers.get("idempotency-key"), records.headers.get("idempotency-key"));
});

Deno.test("writeLines sends the spooled lines as the bytes writeTexts sends, request by request", async () => {
  await using endpoint = new TestEndpoint();
  const lines = new TextEncoder().encode(`${RECORD_TEXT}\n${SECOND_TEXT}\n${RECORD_TEXT}\n`);
  for (const batchSize of [1, 2, 10]) {
    const sink = await createWebhookSink({ url: endpoint.url, secret: SECRET, batchSize });
    const from = endpoint.received.length;
    await sink.writeLines!(lines, signal);
    const byLines = endpoint.received.slice(from);
    await sink.writeTexts!([RECORD_TEXT, SECOND_TEXT, RECORD_TEXT], signal);
    const byTexts = endpoint.received.slice(from + byLines.length);
    assert.deepEqual(
      byLines.map((request) => request.text),
      byTexts.map((request) => request.text),
      `batch size ${batchSize}`,
    );
    for (const [index, request] of byLines.entries()) {
      for (const header of ["idempotency-key", "x-gridrelay-signature"]) {
        assert.equal(request.headers.get(header), byTexts[index].headers.get(header), header);
      }
    }
  }
  assert.deepEqual(endpoint.received.slice(0, 3).map((request) => request.text), [
    RECORD_TEXT,
    SECOND_TEXT,
    RECORD_TEXT,
  ]);
  assert.equal(endpoint.received[6].text, `[${RECORD_TEXT},${SECOND_TEXT}]`);
  assert.equal(endpoint.received[7].text, `[${RECORD_TEXT}]`);
});

Deno.test("writeLines refuses by line: the refused request's lines, counted across requests", async () => {
  await using endpoint = new TestEndpoint();
  endpoint.respond = (_request, index) =>
    new Response(index === 1 ? "no" : null, { status: index === 1 ? 400 : 200 });
  const sink = await createWebhookSink({ url: endpoint.url, batchSize: 2 });
  // The last line without its newline is still a record.
  const lines = new TextEncoder().encode(
    `${RECORD_TEXT}\n${SECOND_TEXT}\n${RECORD_TEXT}\n${SECOND_TEXT}\n${RECORD_TEXT}`,
  );
  await assert.rejects(sink.writeLines!(lines, signal), (error: unknown) => {
    assert.ok(error instanceof RecordsRefusedError);
    assert.deepEqual(error.refused.map((refusal) => refusal.index), [2, 3]);
    return true;
  });
  assert.deepEqual(endpoint.received.map((request) => request.text), [
    `[${RECORD_TEXT},${SECOND_TEXT}]`,
    `[${RECORD_TEXT},${SECOND_TEXT}]`,
    `[${RECORD_TEXT}]`,
  ]);
});

Deno.test("without a secret there is no signature header", async () => {
  await using endpoint = new TestEndpoint();
  const sink = await createWebhookSink({ url: endpoint.url });
  await sink.write([parseRecord(RECORD_TEXT)], signal);
  assert.equal(endpoint.received[0].headers.get("x-gridrelay-signature"), null);
  assert.ok(endpoint.received[0].headers.get("idempotency-key"));
});

for (const status of [500, 502, 503, 408, 429]) {
  Deno.test(`${status} without Retry-After is a plain error, retried with back-off`, async () => {
    await using endpoint = new TestEndpoint();
    endpoint.respond = () => new Response("busy", { status });
    const sink = await createWebhookSink({ url: endpoint.url, headers: { Authorization: TOKEN } });
    await assert.rejects(sink.write([parseRecord(RECORD_TEXT)], signal), (error: Error) => {
      assert.ok(!(error instanceof RecordsRefusedError));
      assert.ok(!(error instanceof RetryLaterError));
      assert.match(error.message, new RegExp(`${endpoint.url} answered ${status}`));
      assert.doesNotMatch(error.message, /tok-9f8e7d6c5b4a/);
      return true;
    });
  });
}

Deno.test("429 with Retry-After in seconds asks the runner to wait that long", async () => {
  await using endpoint = new TestEndpoint();
  endpoint.respond = () => new Response(null, { status: 429, headers: { "Retry-After": "2" } });
  const sink = await createWebhookSink({ url: endpoint.url });
  await assert.rejects(sink.write([parseRecord(RECORD_TEXT)], signal), (error: unknown) => {
    assert.ok(error instanceof RetryLaterError, String(error));
    assert.equal(error.retryAfterMs, 2000);
    assert.match(error.message, /answered 429 Too Many Requests and asked to retry after 2/);
    return true;
  });
});

Deno.test("503 with Retry-After as an HTTP date waits until that date", async () => {
  await using endpoint = new TestEndpoint();
  const at = new Date(Date.now() + 30_000).toUTCString();
  endpoint.respond = () => new Response(null, { status: 503, headers: { "Retry-After": at } });
  const sink = await createWebhookSink({ url: endpoint.url });
  await assert.rejects(sink.write([parseRecord(RECORD_TEXT)], signal), (error: unknown) => {
    assert.ok(error instanceof RetryLaterError, String(error));
    // toUTCString drops milliseconds, and some time passes between here and there.
    assert.ok(error.retryAfterMs > 25_000 && error.retryAfterMs <= 30_000, `${error.retryAfterMs}`);
    return true;
  });
});

Deno.test("a Retry-After beyond the cap is held to five minutes", async () => {
  await using endpoint = new TestEndpoint();
  endpoint.respond = () => new Response(null, { status: 503, headers: { "Retry-After": "86400" } });
  const sink = await createWebhookSink({ url: endpoint.url });
  await assert.rejects(sink.write([parseRecord(RECORD_TEXT)], signal), (error: unknown) => {
    assert.ok(error instanceof RetryLaterError);
    assert.equal(error.retryAfterMs, MAX_RETRY_AFTER_MS);
    assert.equal(MAX_RETRY_AFTER_MS, 300_000);
    return true;
  });
});

Deno.test("parseRetryAfter reads delay-seconds and HTTP dates, and nothing else", () => {
  const now = Date.parse("Wed, 21 Oct 2015 07:27:00 GMT");
  assert.equal(parseRetryAfter("0", now), 0);
  assert.equal(parseRetryAfter(" 120 ", now), 120_000);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:28:00 GMT", now), 60_000);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:26:00 GMT", now), 0, "a past date: now");
  assert.equal(parseRetryAfter("-5", now), undefined);
  assert.equal(parseRetryAfter("1.5", now), undefined);
  assert.equal(parseRetryAfter("soon", now), undefined);
  assert.equal(parseRetryAfter("Wed, 99 Foo 2015", now), undefined);
});

Deno.test("400 refuses every record of the request, with the status and the start of the answer", async () => {
  await using endpoint = new TestEndpoint();
  endpoint.respond = () =>
    new Response(`{"error":"field E must be a number"}\n${"x".repeat(2000)}`, { status: 400 });
  const sink = await createWebhookSink({
    url: endpoint.url,
    batchSize: 5,
    headers: { Authorization: TOKEN },
  });
  await assert.rejects(
    sink.write([parseRecord(RECORD_TEXT), parseRecord(SECOND_TEXT)], signal),
    (error: unknown) => {
      assert.ok(error instanceof RecordsRefusedError, String(error));
      assert.deepEqual(error.refused.map((refusal) => refusal.index), [0, 1]);
      const { reason } = error.refused[0];
      assert.match(reason, /^HTTP 400 Bad Request: \{"error":"field E must be a number"\} x+…$/);
      assert.equal(reason.length, "HTTP 400 Bad Request: ".length + 500 + 1);
      assert.doesNotMatch(error.message, /tok-9f8e7d6c5b4a/);
      return true;
    },
  );
});

Deno.test("with several requests in one write, only the refused request's records are refused", async () => {
  await using endpoint = new TestEndpoint();
  endpoint.respond = (_request, index) =>
    new Response(index === 1 ? "no" : null, { status: index === 1 ? 422 : 200 });
  const sink = await createWebhookSink({ url: endpoint.url });
  const texts = [RECORD_TEXT, SECOND_TEXT, RECORD_TEXT];
  await assert.rejects(sink.write(texts.map(parseRecord), signal), (error: unknown) => {
    assert.ok(error instanceof RecordsRefusedError);
    assert.deepEqual(error.refused, [{ index: 1, reason: "HTTP 422 Unprocessable Entity: no" }]);
    return true;
  });
  assert.equal(endpoint.received.length, 3, "the request after the refusal is still sent");
});

Deno.test("a redirect is not followed: it is an error to retry, naming the new location", async () => {
  await using endpoint = new TestEndpoint();
  endpoint.respond = () =>
    new Response(null, { status: 301, headers: { Location: "/v2/hook?token=abc" } });
  const sink = await createWebhookSink({ url: endpoint.url });
  await assert.rejects(sink.write([parseRecord(RECORD_TEXT)], signal), (error: Error) => {
    assert.ok(!(error instanceof RecordsRefusedError));
    assert.match(
      error.message,
      /answered 301 Moved Permanently redirecting to http:\/\/127.*\/v2\/hook;/,
    );
    assert.match(error.message, /set WEBHOOK_URL to the final URL/);
    assert.doesNotMatch(error.message, /token=abc/);
    return true;
  });
  assert.equal(endpoint.received.length, 1);
});

Deno.test("a hanging endpoint: the request times out with an error naming WEBHOOK_TIMEOUT_MS", async () => {
  await using endpoint = new TestEndpoint();
  endpoint.respond = () => endpoint.hang();
  const sink = await createWebhookSink({ url: endpoint.url, timeoutMs: 200 });
  const started = performance.now();
  await assert.rejects(sink.write([parseRecord(RECORD_TEXT)], signal), (error: Error) => {
    assert.ok(!(error instanceof RecordsRefusedError));
    assert.match(error.message, /did not answer within WEBHOOK_TIMEOUT_MS=200 ms/);
    return true;
  });
  assert.ok(performance.now() - started >= 195);
});

Deno.test("the runner's abort ends the request at once and is passed on as is", async () => {
  await using endpoint = new TestEndpoint();
  let arrived!: () => void;
  const inFlight = new Promise<void>((resolve) => (arrived = resolve));
  endpoint.respond = () => {
    arrived();
    return endpoint.hang();
  };
  const sink = await createWebhookSink({ url: endpoint.url, timeoutMs: 60_000 });
  const controller = new AbortController();
  const writing = sink.write([parseRecord(RECORD_TEXT)], controller.signal);
  await inFlight;
  const reason = new Error("shutdown deadline");
  controller.abort(reason);
  await assert.rejects(writing, (error) => error === reason);
});

Deno.test("an unreachable endpoint is a retryable error naming it, without its query string", async () => {
  const url = `http://user:pa55word@127.0.0.1:${freePort()}/hook?token=abc`;
  const sink = await createWebhookSink({ url, headers: { Authorization: TOKEN } });
  await assert.rejects(sink.write([parseRecord(RECORD_TEXT)], signal), (error: Error) => {
    assert.ok(!(error instanceof RecordsRefusedError));
    assert.match(
      error.message,
      /Cannot reach the webhook http:\/\/127\.0\.0\.1:\d+\/hook: .*refused/i,
    );
    assert.doesNotMatch(error.message, /token=abc|pa55word|tok-9f8e7d6c5b4a/);
    return true;
  });
});

Deno.test("bad options fail at creation, naming the setting but never a header's value", async () => {
  await assert.rejects(
    createWebhookSink({ url: "ftp://example.com/x" }),
    /WEBHOOK_URL to be an http:\/\/ or https:\/\/ URL, got a ftp: URL/,
  );
  await assert.rejects(createWebhookSink({ url: "http://x", batchSize: 0 }), /WEBHOOK_BATCH_SIZE/);
  await assert.rejects(createWebhookSink({ url: "http://x", timeoutMs: 0 }), /WEBHOOK_TIMEOUT_MS/);
  await assert.rejects(
    createWebhookSink({ url: "http://x", headers: { "Idempotency-Key": "fixed" } }),
    /WEBHOOK_HEADERS sets Idempotency-Key, which the webhook sink sets itself/,
  );
  await assert.rejects(
    createWebhookSink({ url: "http://x", headers: { Authorization: "Bearer a\nb-secret" } }),
    (error: Error) => {
      assert.match(error.message, /WEBHOOK_HEADERS has an invalid Authorization header/);
      assert.doesNotMatch(error.message, /b-secret/);
      return true;
    },
  );
});
