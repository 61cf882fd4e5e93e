/**
 * The webhook sink end to end: a real mosquitto, the worker as a subprocess,
 * and a real HTTP endpoint on loopback (`Deno.serve`) that the test scripts
 * answer by answer and that records what arrived, and when.
 */

import assert from "node:assert/strict";
import { type Broker, startBroker } from "./_helpers/broker.ts";
import { publish } from "./_helpers/mqtt.ts";
import { LOOPBACK } from "./_helpers/ports.ts";
import { integrationTest } from "./_helpers/require.ts";
import { startWorker, testWorkerEnv, type WorkerProcess } from "./_helpers/worker.ts";
import denoJson from "../deno.json" with { type: "json" };
import { eventually, readLines, tempDir } from "./_helpers/files.ts";
import { createCertificates } from "./_helpers/certs.ts";

const TOPIC = "a/b827eb2bb2a9/u/data";
const SUBSCRIBED = /Subscribed to/;
const SECRET = "whsec-e2e-signing-secret";
const TOKEN = "Bearer tok-e2e-5up3r-s3cret";

/** A payload whose record is recognisable by `t`; its E does not fit a double. */
function numbered(i: number): string {
  return `{"t":${1625576100 + i},"r":[{"_vid":"dse-1","E":184467440737095${51000 + i},"P":${i}}]}`;
}

/** The record the worker makes of `numbered(i)`, byte for byte. */
function recordOf(i: number): string {
  return `{"time":"${timeOf(i)}","data":{"dse-1":{"E":184467440737095${51000 + i},"P":${i}}}}`;
}

function timeOf(i: number): string {
  return new Date((1625576100 + i) * 1000).toISOString().replace(".000Z", "+00:00");
}

function messages(from: number, to: number) {
  return Array.from({ length: to - from + 1 }, (_, i) => ({
    topic: TOPIC,
    payload: numbered(from + i),
  }));
}

/** One request as the endpoint received it. */
interface Received {
  /** `performance.now()` when it arrived. */
  readonly at: number;
  readonly headers: Headers;
  readonly body: Uint8Array<ArrayBuffer>;
  readonly text: string;
  /** `performance.now()` when the endpoint answered, and with what status. */
  answeredAt?: number;
  status?: number;
}

/**
 * A loopback HTTP endpoint: `respond` decides each answer (200 by default),
 * every request is kept, and tests await conditions on them.
 */
class Endpoint implements AsyncDisposable {
  readonly requests: Received[] = [];
  respond: (request: Received, index: number) => Response | Promise<Response> = () =>
    new Response(null, { status: 200 });
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  readonly #held: Array<() => void> = [];
  #waiters = new Set<() => void>();

  readonly #scheme: string;

  /** With `tls`, the endpoint speaks HTTPS, as `localhost`, with that certificate. */
  constructor(tls?: { cert: string; key: string }) {
    this.#scheme = tls ? "https://localhost" : `http://${LOOPBACK}`;
    const options = { hostname: LOOPBACK, port: 0, onListen() {}, ...tls };
    this.#server = Deno.serve(options, async (request) => {
      const body = new Uint8Array(await request.arrayBuffer());
      const received: Received = {
        at: performance.now(),
        headers: request.headers,
        body,
        text: new TextDecoder().decode(body),
      };
      const index = this.requests.push(received) - 1;
      this.#wake();
      const response = await this.respond(received, index);
      received.answeredAt = performance.now();
      received.status = response.status;
      this.#wake();
      return response;
    });
  }

  get url(): string {
    return `${this.#scheme}:${this.#server.addr.port}/ingest`;
  }

  /** Requests answered 2xx, in the order they were answered. */
  accepted(): Received[] {
    return this.requests
      .filter((request) => request.status !== undefined && request.status < 300)
      .sort((a, b) => a.answeredAt! - b.answeredAt!);
  }

  /** An answer that does not come until `release()` or the end of the test: a hanging endpoint. */
  hold(): { response: Promise<Response>; release: (response?: Response) => void } {
    let release!: (response?: Response) => void;
    const response = new Promise<Response>((resolve) => {
      release = (response = new Response(null, { status: 200 })) => resolve(response);
    });
    this.#held.push(() => release(new Response(null, { status: 503 })));
    return { response, release };
  }

  /** Resolves once `check()` holds, re-checked on every request and answer. */
  until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
    if (check()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
      };
      const wake = () => {
        if (!check()) return;
        done();
        resolve();
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      this.#waiters.add(wake);
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const release of this.#held) release();
    await this.#server.shutdown();
  }

  #wake(): void {
    for (const wake of [...this.#waiters]) wake();
  }
}

/** The times of the records in a request body (an object, or an array of them). */
function timesIn(request: Received): string[] {
  const body = JSON.parse(request.text);
  return (Array.isArray(body) ? body : [body]).map((record) => record.time);
}

function key(request: Received): string {
  return request.headers.get("idempotency-key") ?? "";
}

async function hexSha256(body: Uint8Array<ArrayBuffer>): Promise<string> {
  return toHex(await crypto.subtle.digest("SHA-256", body));
}

/** The signature a receiver computes on its own, as the README tells it to. */
async function expectedSignature(body: Uint8Array<ArrayBuffer>): Promise<string> {
  const hmacKey = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(SECRET),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return `sha256=${toHex(await crypto.subtle.sign("HMAC", hmacKey, body))}`;
}

function toHex(buffer: ArrayBuffer): string {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

function webhookEnv(
  broker: Broker,
  dataDir: string,
  endpoint: Endpoint,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    ...testWorkerEnv(broker, dataDir),
    SINKS: "webhook",
    WEBHOOK_URL: endpoint.url,
    WEBHOOK_SECRET: SECRET,
    WEBHOOK_HEADERS: JSON.stringify({ Authorization: TOKEN }),
    ...extra,
  };
}

function assertNoSecrets(worker: WorkerProcess): void {
  const output = [...worker.stdoutLines(), ...worker.stderrLines()].join("\n");
  assert.doesNotMatch(output, /tok-e2e-5up3r-s3cret/, "a header value was logged");
  assert.doesNotMatch(output, /whsec-e2e-signing-secret/, "the signing secret was logged");
}

integrationTest({
  name:
    "one record per request: the exact record as the body, the headers, a signature the receiver can verify, the idempotency key",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    await using endpoint = new Endpoint();
    await using worker = startWorker(webhookEnv(broker, dir, endpoint));
    await worker.waitForStderr(SUBSCRIBED);
    await publish(broker.url, messages(0, 1));
    await endpoint.until("two accepted requests", () => endpoint.accepted().length >= 2);

    const [first, second] = endpoint.requests;
    assert.equal(first.text, recordOf(0));
    assert.equal(second.text, recordOf(1));
    for (const request of [first, second]) {
      assert.equal(request.headers.get("content-type"), "application/json");
      assert.equal(request.headers.get("user-agent"), `gridrelay/${denoJson.version}`);
      assert.equal(request.headers.get("authorization"), TOKEN);
      assert.equal(
        request.headers.get("x-gridrelay-signature"),
        await expectedSignature(request.body),
      );
      assert.equal(key(request), await hexSha256(request.body));
    }
    assert.notEqual(key(first), key(second));
    assert.equal((await worker.stop()).code, 0);
    assertNoSecrets(worker);
  },
});

integrationTest({
  name:
    "an HTTPS webhook signed by a private CA: the log says to set DENO_CERT, and with it the records arrive",
  async fn() {
    await using broker = await startBroker();
    await using certs = await createCertificates();
    await using endpoint = new Endpoint({
      cert: await Deno.readTextFile(certs.serverCertFile),
      key: await Deno.readTextFile(certs.serverKeyFile),
    });
    {
      await using dir = await tempDir();
      await using worker = startWorker(webhookEnv(broker, dir, endpoint));
      await worker.waitForStderr(SUBSCRIBED);
      await publish(broker.url, messages(0, 0));
      const line = await worker.waitForStderr(/Cannot reach the webhook/);
      assert.match(line, /https:\/\/localhost:\d+\/ingest: its TLS certificate was not accepted/);
      assert.match(line, /UnknownIssuer/);
      assert.match(line, /DENO_CERT/);
      assert.equal(endpoint.requests.length, 0);
    }
    await using dir = await tempDir();
    await using worker = startWorker(
      webhookEnv(broker, dir, endpoint, { DENO_CERT: certs.caFile }),
    );
    await worker.waitForStderr(SUBSCRIBED);
    await publish(broker.url, messages(1, 1));
    await endpoint.until("an accepted request", () => endpoint.accepted().length >= 1);
    assert.equal(endpoint.requests[0].text, recordOf(1));
    assert.equal((await worker.stop()).code, 0);
  },
});

integrationTest({
  name: "WEBHOOK_BATCH_SIZE=3: records go as a JSON array, signed and keyed as a whole",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    await using endpoint = new Endpoint();
    const filePath = `${dir}/readings.jsonl`;
    // The first request is held until three more records are spooled (the file sink has them),
    // so the next batch is full.
    const first = endpoint.hold();
    endpoint.respond = (_request, index) =>
      index === 0 ? first.response : new Response(null, { status: 200 });
    await using worker = startWorker(
      webhookEnv(broker, dir, endpoint, {
        SINKS: "file,webhook",
        FILE_PATH: filePath,
        WEBHOOK_BATCH_SIZE: "3",
      }),
    );
    await worker.waitForStderr(SUBSCRIBED);
    await publish(broker.url, messages(0, 0));
    await endpoint.until("the first request", () => endpoint.requests.length >= 1);
    await publish(broker.url, messages(1, 3));
    await eventually("four records in the file", async () => {
      return (await readLines(filePath)).length >= 4 || undefined;
    });
    first.release();
    await endpoint.until("two accepted requests", () => endpoint.accepted().length >= 2);

    const [single, batch] = endpoint.requests;
    assert.equal(single.text, `[${recordOf(0)}]`);
    assert.equal(batch.text, `[${recordOf(1)},${recordOf(2)},${recordOf(3)}]`);
    assert.equal(batch.headers.get("x-gridrelay-signature"), await expectedSignature(batch.body));
    assert.equal(key(batch), await hexSha256(batch.body));
    assert.equal(batch.headers.get("content-type"), "application/json");
  },
});

integrationTest({
  name:
    "503 for a while, then 200: every record arrives once, in order, and the file sink had them all before the webhook recovered",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    await using endpoint = new Endpoint();
    const filePath = `${dir}/readings.jsonl`;
    let down = true;
    endpoint.respond = () => new Response("maintenance", { status: down ? 503 : 200 });
    await using worker = startWorker(
      webhookEnv(broker, dir, endpoint, { SINKS: "file,webhook", FILE_PATH: filePath }),
    );
    await worker.waitForStderr(SUBSCRIBED);
    const total = 20;
    await publish(broker.url, messages(0, total - 1));

    const fileLines = await eventually(`${total} records in the file`, async () => {
      const lines = await readLines(filePath);
      return lines.length >= total ? lines : undefined;
    });
    assert.deepEqual(fileLines, Array.from({ length: total }, (_, i) => recordOf(i)));
    await endpoint.until("a retried request", () => endpoint.requests.length >= 2);
    assert.equal(endpoint.accepted().length, 0, "the webhook is still down");
    assert.deepEqual(
      new Set(endpoint.requests.map((request) => request.text)),
      new Set([recordOf(0)]),
      "while it fails, the first record is retried and nothing after it is sent",
    );
    await worker.waitForStderr(/Delivery to sink webhook failed .*answered 503/);

    down = false;
    await endpoint.until(`${total} accepted records`, () => endpoint.accepted().length >= total);
    assert.deepEqual(
      endpoint.accepted().map((request) => request.text),
      Array.from({ length: total }, (_, i) => recordOf(i)),
    );
    await worker.waitForStderr(/Delivery to sink webhook recovered/);
    assert.equal((await worker.stop()).code, 0);
    assertNoSecrets(worker);
  },
});

integrationTest({
  name: "429 with Retry-After: 2: no request comes before the two seconds are up",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    await using endpoint = new Endpoint();
    endpoint.respond = (_request, index) =>
      index === 0
        ? new Response("slow down", { status: 429, headers: { "Retry-After": "2" } })
        : new Response(null, { status: 200 });
    await using worker = startWorker(webhookEnv(broker, dir, endpoint));
    await worker.waitForStderr(SUBSCRIBED);
    await publish(broker.url, messages(0, 0));
    await endpoint.until("the retried request accepted", () => endpoint.accepted().length >= 1);

    const [limited, retried] = endpoint.requests;
    assert.equal(limited.status, 429);
    const waitedMs = retried.at - limited.answeredAt!;
    assert.ok(waitedMs >= 2000, `the retry came ${waitedMs.toFixed(0)} ms after the 429`);
    assert.equal(key(retried), key(limited));
    assert.equal(endpoint.requests.length, 2);
  },
});

integrationTest({
  name:
    "400: the record goes to the dead letters with the status, the answer and the sink, and the next records go through",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    await using endpoint = new Endpoint();
    endpoint.respond = (request) =>
      request.text === recordOf(1)
        ? new Response('{"error":"P must not be 1"}', { status: 400 })
        : new Response(null, { status: 200 });
    await using worker = startWorker(webhookEnv(broker, dir, endpoint));
    await worker.waitForStderr(SUBSCRIBED);
    await publish(broker.url, messages(0, 3));
    await endpoint.until("three accepted records", () => endpoint.accepted().length >= 3);
    assert.deepEqual(endpoint.accepted().map(timesIn).flat(), [timeOf(0), timeOf(2), timeOf(3)]);
    assert.equal(endpoint.requests.length, 4, "a refusal is final: the record is not sent again");

    const [letter] = await eventually("a dead letter", async () => {
      const lines = await readLines(`${dir}/dead-letter.jsonl`);
      return lines.length >= 1 ? lines.map((line) => JSON.parse(line)) : undefined;
    });
    assert.equal(letter.sink, "webhook");
    assert.equal(letter.code, "sink_refused");
    assert.equal(letter.topic, TOPIC);
    assert.equal(letter.reason, 'HTTP 400 Bad Request: {"error":"P must not be 1"}');
    assert.equal(letter.payload, recordOf(1));
    await worker.waitForStderr(/Sink webhook refused 1 record\(s\) for good/);
    assert.equal((await worker.stop()).code, 0);
    assertNoSecrets(worker);
  },
});

integrationTest({
  name: "a hanging endpoint: WEBHOOK_TIMEOUT_MS fires and the same request is sent again",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    await using endpoint = new Endpoint();
    const hung = endpoint.hold();
    endpoint.respond = (_request, index) =>
      index === 0 ? hung.response : new Response(null, { status: 200 });
    await using worker = startWorker(
      webhookEnv(broker, dir, endpoint, { WEBHOOK_TIMEOUT_MS: "300" }),
    );
    await worker.waitForStderr(SUBSCRIBED);
    await publish(broker.url, messages(0, 0));
    await endpoint.until("the retried request accepted", () => endpoint.accepted().length >= 1);

    const [hanging, retried] = endpoint.requests;
    assert.ok(retried.at - hanging.at >= 300, "not retried before the timeout");
    assert.equal(retried.text, recordOf(0));
    assert.equal(key(retried), key(hanging));
    await worker.waitForStderr(/did not answer within WEBHOOK_TIMEOUT_MS=300 ms/);
  },
});

integrationTest({
  name:
    "SIGKILL while requests fail, then a restart: nothing is lost, and a re-sent record carries the same idempotency key",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    await using endpoint = new Endpoint();
    let down = true;
    endpoint.respond = () => new Response(null, { status: down ? 502 : 200 });
    const env = webhookEnv(broker, dir, endpoint);
    const total = 5;
    {
      await using worker = startWorker(env);
      await worker.waitForStderr(SUBSCRIBED);
      await publish(broker.url, messages(0, total - 1));
      await endpoint.until("a retried request", () => endpoint.requests.length >= 2);
      worker.kill("SIGKILL");
      await worker.status;
    }
    const keyBefore = key(endpoint.requests[0]);
    assert.equal(endpoint.requests[0].text, recordOf(0));
    const failed = endpoint.requests.length;

    down = false;
    await using restarted = startWorker(env);
    await endpoint.until(`${total} accepted records`, () => endpoint.accepted().length >= total);
    assert.deepEqual(
      endpoint.accepted().map((request) => request.text),
      Array.from({ length: total }, (_, i) => recordOf(i)),
    );
    const resent = endpoint.requests[failed];
    assert.equal(resent.text, recordOf(0));
    assert.equal(key(resent), keyBefore);
    assert.equal((await restarted.stop()).code, 0);
  },
});

integrationTest({
  name:
    "shutdown: an in-flight request gets the rest of SHUTDOWN_TIMEOUT_MS; one that outlasts it is aborted and sent again after a restart",
  async fn() {
    await using broker = await startBroker();
    await using dir = await tempDir();
    await using endpoint = new Endpoint();
    const env = webhookEnv(broker, dir, endpoint, { SHUTDOWN_TIMEOUT_MS: "1500" });
    const slow = endpoint.hold();
    const hung = endpoint.hold();
    endpoint.respond = (_request, index) =>
      index === 0 ? slow.response : index === 1 ? hung.response : new Response(null);
    {
      // Answered within the shutdown window: delivered, never sent again.
      await using worker = startWorker(env);
      await worker.waitForStderr(SUBSCRIBED);
      await publish(broker.url, messages(0, 0));
      await endpoint.until("the first request", () => endpoint.requests.length >= 1);
      worker.kill("SIGTERM");
      await worker.waitForStderr(/Shutting down/);
      slow.release();
      assert.equal((await worker.status).code, 0);
    }
    {
      // Still unanswered at the deadline: aborted, and the record stays spooled.
      await using worker = startWorker(env);
      await worker.waitForStderr(SUBSCRIBED);
      await publish(broker.url, messages(1, 1));
      await endpoint.until("the second request", () => endpoint.requests.length >= 2);
      const signalled = performance.now();
      worker.kill("SIGTERM");
      assert.equal((await worker.status).code, 0);
      const tookMs = performance.now() - signalled;
      assert.ok(tookMs >= 1400, `exited ${tookMs.toFixed(0)} ms after SIGTERM`);
      await worker.waitForStderr(/Undelivered records stay in the spool.*webhook: 1/);
    }
    await using restarted = startWorker(env);
    await endpoint.until("the re-sent record", () => endpoint.requests.length >= 3);
    const [first, aborted, resent] = endpoint.requests;
    assert.equal(first.text, recordOf(0));
    assert.equal(aborted.text, recordOf(1));
    assert.equal(resent.text, recordOf(1));
    assert.equal(key(resent), key(aborted));
    await endpoint.until("the re-sent record accepted", () => resent.status !== undefined);
    assert.equal((await restarted.stop()).code, 0);
    assert.equal(endpoint.requests.length, 3, "the record answered during shutdown is not re-sent");
  },
});
