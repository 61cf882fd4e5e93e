/**
 * Tests of the integration-test toolkit itself (tests/_helpers): a real
 * mosquitto per test with TLS, passwords, restarts and persistence, and the
 * worker-process runner. If these fail, every integration test is suspect.
 * @module
 */

import assert from "node:assert/strict";
import { startBroker } from "./_helpers/broker.ts";
import { createCertificates } from "./_helpers/certs.ts";
import { connectClient, publish, subscribe, subscribeCollect } from "./_helpers/mqtt.ts";
import { freePort, waitForPort } from "./_helpers/ports.ts";
import { integrationTest } from "./_helpers/require.ts";
import { startWorker } from "./_helpers/worker.ts";

Deno.test("freePort returns a port nothing listens on, and waitForPort sees a listener", async () => {
  const port = freePort();
  assert.ok(port > 0 && port < 65536);
  await assert.rejects(waitForPort(port, { timeoutMs: 50 }), /Nothing accepted connections/);
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  await waitForPort(port, { timeoutMs: 1000 });
  listener.close();
});

integrationTest({
  name: "createCertificates makes a server certificate for localhost signed by the CA",
  requires: ["openssl"],
  async fn() {
    const certificates = await createCertificates();
    const verify = await new Deno.Command("openssl", {
      args: ["verify", "-CAfile", certificates.caFile, certificates.serverCertFile],
    }).output();
    assert.ok(verify.success, new TextDecoder().decode(verify.stderr));
    const untrusted = await new Deno.Command("openssl", {
      args: ["verify", "-CAfile", certificates.untrustedCaFile, certificates.serverCertFile],
    }).output();
    assert.ok(!untrusted.success);
    const text = await new Deno.Command("openssl", {
      args: ["x509", "-in", certificates.serverCertFile, "-noout", "-text"],
    }).output();
    assert.match(new TextDecoder().decode(text.stdout), /DNS:localhost, IP Address:127\.0\.0\.1/);
    await certificates.remove();
    await assert.rejects(Deno.stat(certificates.dir), Deno.errors.NotFound);
  },
});

integrationTest({
  name: "a plain broker carries a message from publisher to subscriber",
  async fn() {
    await using mosquitto = await startBroker();
    assert.equal(mosquitto.url, `mqtt://127.0.0.1:${mosquitto.port}`);
    await using subscription = await subscribe(mosquitto.url, "a/+/u/data");
    await publish(mosquitto.url, [
      { topic: "a/node-1/u/data", payload: '{"t":1,"r":[]}' },
      { topic: "a/node-2/u/data", payload: new Uint8Array([0xff, 0x00]), qos: 2 },
    ]);
    const messages = await subscription.waitForMessages(2);
    assert.deepEqual(messages.map((m) => [m.topic, m.qos]), [
      ["a/node-1/u/data", 1],
      ["a/node-2/u/data", 1],
    ]);
    assert.equal(messages[0].text, '{"t":1,"r":[]}');
    assert.deepEqual(messages[1].payload, new Uint8Array([0xff, 0x00]));
  },
});

integrationTest({
  name: "a TLS broker accepts a client that trusts its CA and refuses one that trusts another",
  async fn() {
    await using mosquitto = await startBroker({ tls: "server" });
    const certificates = mosquitto.certificates!;
    assert.equal(mosquitto.url, `mqtts://localhost:${mosquitto.port}`);

    const trusted = await connectClient(mosquitto.url, { ca: certificates.caFile });
    assert.ok(trusted.connected);
    await trusted.endAsync();

    await assert.rejects(
      connectClient(mosquitto.url, { ca: certificates.untrustedCaFile }),
      /certificate|issuer|unknown/i,
    );
  },
});

integrationTest({
  name: "a TLS broker with websockets serves wss:// with the same certificate",
  async fn() {
    await using mosquitto = await startBroker({ tls: "server", websockets: true });
    assert.match(mosquitto.wsUrl!, /^wss:\/\/localhost:\d+\/$/);
    await using subscription = await subscribe(mosquitto.url, "t/#", {
      ca: mosquitto.certificates!.caFile,
    });
    await publish(mosquitto.wsUrl!, [{ topic: "t/ws", payload: "over wss" }], {
      ca: mosquitto.certificates!.caFile,
    });
    const [message] = await subscription.waitForMessages(1);
    assert.equal(message.text, "over wss");
  },
});

integrationTest({
  name: "a mutual-TLS broker refuses a client without a certificate and accepts one with it",
  async fn() {
    await using mosquitto = await startBroker({ tls: "mutual" });
    const { caFile, clientCertFile, clientKeyFile } = mosquitto.certificates!;

    await assert.rejects(
      connectClient(mosquitto.url, { ca: caFile, connectTimeoutMs: 3000 }),
      /certificate|closed before CONNACK/i,
    );

    const client = await connectClient(mosquitto.url, {
      ca: caFile,
      cert: clientCertFile,
      key: clientKeyFile,
    });
    await client.publishAsync("t/1", "hello", { qos: 1 });
    await client.endAsync();
  },
});

integrationTest({
  name: "a broker with users refuses a wrong password and accepts the right one",
  async fn() {
    await using mosquitto = await startBroker({ users: { alice: "s3cret" } });
    await assert.rejects(
      connectClient(mosquitto.url, { username: "alice", password: "wrong" }),
      /Not authorized|Bad username or password/i,
    );
    await assert.rejects(connectClient(mosquitto.url), /Not authorized/i);
    await publish(mosquitto.url, [{ topic: "t", payload: "x" }], {
      username: "alice",
      password: "s3cret",
    });
  },
});

integrationTest({
  name: "restart() comes back on the same port",
  async fn() {
    await using mosquitto = await startBroker({ websockets: true });
    const { port, wsUrl } = mosquitto;
    await mosquitto.restart();
    assert.equal(mosquitto.port, port);
    assert.equal(mosquitto.wsUrl, wsUrl);
    await publish(mosquitto.url, [{ topic: "t", payload: "after restart" }]);
    await publish(wsUrl!, [{ topic: "t", payload: "over websockets" }]);
  },
});

integrationTest({
  name:
    "with persistence, a QoS 1 message queued for an offline persistent session survives restart()",
  async fn() {
    await using mosquitto = await startBroker({ persistence: true });
    const session = { clientId: "gridrelay-persistent", clean: false } as const;
    const subscription = await subscribe(mosquitto.url, "a/+/u/data", session);
    await subscription.close();

    await publish(mosquitto.url, [{ topic: "a/n1/u/data", payload: "queued while away" }]);
    await mosquitto.restart();

    const [message] = await subscribeCollect(mosquitto.url, "a/+/u/data", 1, session);
    assert.equal(message.text, "queued while away");
  },
});

integrationTest({
  name: "kill() crashes the broker and start() brings it back with the files kept",
  async fn() {
    await using mosquitto = await startBroker();
    await mosquitto.kill();
    assert.equal(mosquitto.running, false);
    await assert.rejects(connectClient(mosquitto.url, { connectTimeoutMs: 1000 }));
    await mosquitto.start();
    assert.equal(mosquitto.running, true);
    await publish(mosquitto.url, [{ topic: "t", payload: "back" }]);
    assert.match(mosquitto.log(), /running/);
  },
});

integrationTest({
  name: "stop() removes the broker's temp files and can be called twice",
  async fn() {
    const mosquitto = await startBroker({ tls: "server" });
    const dir = mosquitto.configFile.replace(/\/mosquitto\.conf$/, "");
    await mosquitto.stop();
    await mosquitto.stop();
    await assert.rejects(Deno.stat(dir), Deno.errors.NotFound);
    await assert.rejects(Deno.stat(mosquitto.certificates!.dir), Deno.errors.NotFound);
    await assert.rejects(mosquitto.start(), /stopped/);
  },
});

const FIXTURE = new URL("./_helpers/fixtures/echo_worker.ts", import.meta.url).pathname;

Deno.test("startWorker streams stdout lines, passes only the given environment, and ends on SIGTERM", async () => {
  Deno.env.set("GRIDRELAY_TEST_LEAK", "must not reach the child");
  try {
    await using worker = startWorker({ GREETING: "hello" }, { entry: FIXTURE, args: ["3"] });
    const lines = await worker.waitForStdoutLines(4);
    assert.deepEqual(lines.slice(0, 3), ["hello 0", "hello 1", "hello 2"]);
    await worker.waitForStderr(/ready/);
    const env = JSON.parse(lines[3]);
    assert.equal(env.GRIDRELAY_TEST_LEAK, undefined);
    assert.equal(env.NO_COLOR, "1");
    worker.kill("SIGTERM");
    const status = await worker.status;
    assert.equal(status.code, 0);
    assert.match(worker.stderrLines().join("\n"), /bye/);
  } finally {
    Deno.env.delete("GRIDRELAY_TEST_LEAK");
  }
});

Deno.test("waitForStdoutLines rejects with the stderr tail when the lines do not come", async () => {
  await using worker = startWorker({ GREETING: "hi" }, { entry: FIXTURE, args: ["1"] });
  await assert.rejects(worker.waitForStdoutLines(10, 300), /ready/);
});

const MISSING_TOOL_FIXTURE = new URL("./_helpers/fixtures/needs_missing_tool.ts", import.meta.url);

async function runMissingToolFixture(ci: string): Promise<{ code: number; output: string }> {
  const env: Record<string, string> = { CI: ci, NO_COLOR: "1" };
  for (const name of ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME"]) {
    const value = Deno.env.get(name);
    if (value !== undefined) env[name] = value;
  }
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["test", "--allow-env", "--allow-read", MISSING_TOOL_FIXTURE.pathname],
    clearEnv: true,
    env,
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return { code, output: decoder.decode(stdout) + decoder.decode(stderr) };
}

Deno.test("outside CI, a test whose tool is missing is skipped with what to install", async () => {
  const { code, output } = await runMissingToolFixture("");
  assert.equal(code, 0, output);
  assert.match(output, /SKIPPING integration tests: gridrelay-no-such-tool not found on PATH/);
  assert.match(output, /1 ignored/);
});

Deno.test("under CI=true, a test whose tool is missing fails and says why", async () => {
  const { code, output } = await runMissingToolFixture("true");
  assert.notEqual(code, 0, output);
  assert.match(output, /CI=true and this integration test cannot run: gridrelay-no-such-tool/);
});
