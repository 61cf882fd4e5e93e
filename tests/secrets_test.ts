/**
 * Secrets stay secret (issue #5): full runs of the worker with every kind of
 * secret configured — broker password, client private key, webhook signing
 * secret, an Authorization header — at LOG_LEVEL=debug, including failures
 * (a wrong password, a webhook that answers 401 and echoes the token back,
 * one that answers 500). Every output is searched for each secret, as is and
 * base64-encoded: stdout, stderr, the dead letters, the file sink's output,
 * /metrics, /healthz and /readyz, and every file in DATA_DIR (the spool too).
 */

import assert from "node:assert/strict";
import { type Broker, startBroker } from "./_helpers/broker.ts";
import { publish } from "./_helpers/mqtt.ts";
import { freePort, LOOPBACK } from "./_helpers/ports.ts";
import { integrationTest } from "./_helpers/require.ts";
import { startWorker } from "./_helpers/worker.ts";
import { eventually, readLines, tempDir } from "./_helpers/files.ts";

const TOPIC = "a/b827eb2bb2a9/u/data";
const USERNAME = "relay";
const PASSWORD = "pw-Br0ker-7f1c9e04";
const WRONG_PASSWORD = "pw-Wr0ng-3b8d21aa";
const URL_PASSWORD = "pw-1nUrl-c41f0b77";
const WEBHOOK_SECRET = "whsec-H4mac-9a2e5c13";
const TOKEN = "tok-B3arer-55d0aa8e";
const AUTHORIZATION = `Bearer ${TOKEN}`;

const encoder = new TextEncoder();

/**
 * The ways a secret could show up: as is, and base64-encoded at each of the
 * three alignments it could have inside a longer base64 text (standard and
 * URL-safe alphabets), plus the Basic-auth form of the broker credentials.
 */
function secretForms(secret: string): string[] {
  const forms = [secret];
  for (let shift = 0; shift < 3; shift++) {
    const encoded = btoa("\0".repeat(shift) + secret);
    // Only the characters that depend on the secret's bytes alone.
    const from = Math.ceil((8 * shift) / 6);
    const to = Math.floor((8 * (shift + secret.length)) / 6);
    const form = encoded.slice(from, to);
    forms.push(form, form.replaceAll("+", "-").replaceAll("/", "_"));
  }
  return [...new Set(forms)];
}

/** Every secret the runs configure, with its name for the failure message. */
async function secretsOf(keyFile: string): Promise<[string, string][]> {
  const secrets: [string, string][] = [
    ["MQTT_PASSWORD", PASSWORD],
    ["the wrong MQTT_PASSWORD", WRONG_PASSWORD],
    ["the password in MQTT_URL", URL_PASSWORD],
    ["WEBHOOK_SECRET", WEBHOOK_SECRET],
    ["the Authorization token", TOKEN],
    ["Basic credentials", `${USERNAME}:${PASSWORD}`],
  ];
  // The private key: each line of its base64 body (a line is 64 characters of key material).
  const pem = await Deno.readTextFile(keyFile);
  const body = pem.split("\n").filter((line) => line !== "" && !line.startsWith("-----"));
  assert.ok(body.length > 0, `no key material in ${keyFile}`);
  for (const line of body) secrets.push(["MQTT_KEY_FILE's key material", line]);
  return secrets;
}

/** Searches `text` (one output, named `where`) for every form of every secret. */
function assertNoSecret(where: string, text: string, secrets: [string, string][]): void {
  assert.ok(!text.includes("PRIVATE KEY"), `${where} contains a PEM private key`);
  for (const [name, secret] of secrets) {
    for (const form of secretForms(secret)) {
      if (form.length < 8) continue;
      const at = text.indexOf(form);
      assert.equal(
        at,
        -1,
        `${where} contains ${name}${form === secret ? "" : " (encoded)"}: …${
          text.slice(Math.max(0, at - 80), at + form.length + 20)
        }…`,
      );
    }
  }
}

/** Every file under `dir`, as text (bytes read one to one, so binary files are searched too). */
async function filesUnder(dir: string): Promise<[string, string][]> {
  const files: [string, string][] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) files.push(...await filesUnder(path));
    else if (entry.isFile) {
      const bytes = await Deno.readFile(path);
      files.push([path, new TextDecoder("latin1").decode(bytes)]);
    }
  }
  return files;
}

/** One request the endpoint received. */
interface Received {
  readonly authorization: string | null;
  readonly signature: string | null;
  readonly body: Uint8Array<ArrayBuffer>;
  readonly text: string;
  status?: number;
}

/**
 * A webhook endpoint on loopback: a record with `"P":401` is refused with a
 * 401 whose body echoes the Authorization header (as careless servers do); one
 * with `"P":500` fails once with a 500; everything else is accepted.
 */
class Endpoint implements AsyncDisposable {
  readonly requests: Received[] = [];
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  #failedOnce = false;

  constructor() {
    this.#server = Deno.serve({ hostname: LOOPBACK, port: 0, onListen() {} }, async (request) => {
      const body = new Uint8Array(await request.arrayBuffer());
      const received: Received = {
        authorization: request.headers.get("authorization"),
        signature: request.headers.get("x-gridrelay-signature"),
        body,
        text: new TextDecoder().decode(body),
      };
      this.requests.push(received);
      let response: Response;
      if (received.text.includes('"P":401')) {
        response = new Response(`invalid credentials: ${received.authorization}`, {
          status: 401,
          headers: { "www-authenticate": `Bearer error="invalid_token"` },
        });
      } else if (received.text.includes('"P":500') && !this.#failedOnce) {
        this.#failedOnce = true;
        response = new Response(`upstream failed for ${received.authorization}`, { status: 500 });
      } else {
        response = new Response(null, { status: 204 });
      }
      received.status = response.status;
      return response;
    });
  }

  get url(): string {
    return `http://${LOOPBACK}:${this.#server.addr.port}/ingest`;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#server.shutdown();
  }
}

async function hmacHex(secret: string, body: Uint8Array<ArrayBuffer>): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const signature = new Uint8Array(await crypto.subtle.sign("HMAC", key, body));
  return Array.from(signature, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

async function httpText(port: number, path: string): Promise<string> {
  const response = await fetch(`http://${LOOPBACK}:${port}${path}`);
  return `${response.status}\n${await response.text()}`;
}

function payload(p: number): string {
  return `{"t":1625576100,"r":[{"_vid":"dse-1","P":${p}}]}`;
}

/** The environment every run shares: mutual TLS, a password, all three sinks, debug logs. */
function workerEnv(broker: Broker, dir: string, endpoint: Endpoint): Record<string, string> {
  const certificates = broker.certificates!;
  return {
    MQTT_URL: broker.url,
    MQTT_CA_FILE: certificates.caFile,
    MQTT_CERT_FILE: certificates.clientCertFile,
    MQTT_KEY_FILE: certificates.clientKeyFile,
    MQTT_USERNAME: USERNAME,
    MQTT_PASSWORD: PASSWORD,
    MQTT_RECONNECT_MIN_MS: "100",
    MQTT_RECONNECT_MAX_MS: "500",
    SINKS: "stdout,file,webhook",
    STDOUT_FORMAT: "jsonl",
    FILE_PATH: `${dir}/out/readings.jsonl`,
    WEBHOOK_URL: endpoint.url,
    WEBHOOK_SECRET,
    WEBHOOK_HEADERS: JSON.stringify({ Authorization: AUTHORIZATION }),
    DATA_DIR: `${dir}/data`,
    LOG_LEVEL: "debug",
    LOG_FORMAT: "json",
    SHUTDOWN_TIMEOUT_MS: "5000",
  };
}

integrationTest({
  name:
    "no secret in any output of a full run: stdout, stderr, dead letters, file sink, /metrics, the spool",
  async fn() {
    await using broker = await startBroker({ tls: "mutual", users: { [USERNAME]: PASSWORD } });
    const certificates = broker.certificates!;
    await using dir = await tempDir();
    await using endpoint = new Endpoint();
    const httpPort = freePort();
    const env = { ...workerEnv(broker, dir, endpoint), HTTP_PORT: String(httpPort) };
    await using worker = startWorker(env);
    await worker.waitForStderr(/Subscribed to/);

    const client = {
      ca: certificates.caFile,
      cert: certificates.clientCertFile,
      key: certificates.clientKeyFile,
      username: USERNAME,
      password: PASSWORD,
    };
    await publish(broker.url, [
      { topic: TOPIC, payload: payload(1) },
      { topic: TOPIC, payload: payload(401) },
      { topic: TOPIC, payload: payload(500) },
      { topic: TOPIC, payload: `{"t":1625576100,"r":[{"_vid":"dse-1","P":2}` },
      { topic: TOPIC, payload: `{"t":1625576100,"r":[{"P":3}]}` },
    ], client);

    // The refused record and the two rejections reach the dead letters; the 500 is retried.
    const deadLetterPath = `${dir}/data/dead-letter.jsonl`;
    const deadLetters = await eventually("three dead letters", async () => {
      const lines = await readLines(deadLetterPath);
      return lines.length >= 3 ? lines : undefined;
    });
    await eventually("the retried record accepted", () =>
      Promise.resolve(
        endpoint.requests.some((r) => r.text.includes('"P":500') && r.status === 204)
          ? true
          : undefined,
      ));
    const metrics = await httpText(httpPort, "/metrics");
    const health = await httpText(httpPort, "/healthz") + await httpText(httpPort, "/readyz");
    assert.equal((await worker.stop()).code, 0);

    // The secrets were really in use: otherwise finding none of them would prove nothing.
    assert.ok(endpoint.requests.length >= 4);
    for (const request of endpoint.requests) {
      assert.equal(request.authorization, AUTHORIZATION);
      assert.equal(request.signature, `sha256=${await hmacHex(WEBHOOK_SECRET, request.body)}`);
    }
    assert.ok(deadLetters.some((line) => JSON.parse(line).sink === "webhook"));
    assert.match(worker.stderrLines().join("\n"), /answered 500/);

    const secrets = await secretsOf(certificates.clientKeyFile);
    assertNoSecret("stdout", worker.stdoutLines().join("\n"), secrets);
    assertNoSecret("stderr", worker.stderrLines().join("\n"), secrets);
    assertNoSecret("/metrics", metrics, secrets);
    assertNoSecret("/healthz and /readyz", health, secrets);
    for (const request of endpoint.requests) {
      assertNoSecret("a webhook request body", request.text, secrets);
    }
    const files = await filesUnder(`${dir}`);
    assert.ok(files.some(([path]) => path.endsWith("spool.db")), "the spool was searched");
    assert.ok(files.some(([path]) => path.endsWith("readings.jsonl")), "the file sink's output");
    assert.ok(files.some(([path]) => path.endsWith("dead-letter.jsonl")), "the dead letters");
    for (const [path, text] of files) assertNoSecret(path, text, secrets);
  },
});

integrationTest({
  name: "a wrong password, in MQTT_PASSWORD or in MQTT_URL, appears in no output of the failed run",
  async fn() {
    await using broker = await startBroker({ tls: "mutual", users: { [USERNAME]: PASSWORD } });
    const certificates = broker.certificates!;
    await using endpoint = new Endpoint();
    const secrets = await secretsOf(certificates.clientKeyFile);
    const url = new URL(broker.url);
    url.username = USERNAME;
    url.password = URL_PASSWORD;
    const variants: [string, Record<string, string>][] = [
      ["MQTT_PASSWORD", { MQTT_PASSWORD: WRONG_PASSWORD }],
      ["MQTT_URL", { MQTT_URL: url.href, MQTT_USERNAME: "", MQTT_PASSWORD: "" }],
    ];
    for (const [where, wrong] of variants) {
      await using dir = await tempDir();
      await using worker = startWorker({ ...workerEnv(broker, dir, endpoint), ...wrong });
      const status = await worker.status;
      const stderr = worker.stderrLines().join("\n");
      assert.equal(status.code, 3, `a wrong password in ${where}: exit 3; stderr:\n${stderr}`);
      assert.match(stderr, /MQTT_USERNAME and MQTT_PASSWORD/);
      await worker.stop();
      assertNoSecret(
        `stdout (wrong password in ${where})`,
        worker.stdoutLines().join("\n"),
        secrets,
      );
      assertNoSecret(`stderr (wrong password in ${where})`, stderr, secrets);
      for (const [path, text] of await filesUnder(`${dir}`)) assertNoSecret(path, text, secrets);
    }
  },
});
