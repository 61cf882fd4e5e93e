/**
 * TLS as a security boundary (issue #5): a private key that other users can
 * read is reported at start-up, and certificate verification stays on — no
 * configuration variable turns it off, nor does Node's
 * NODE_TLS_REJECT_UNAUTHORIZED=0 in the environment.
 */

import assert from "node:assert/strict";
import { type Broker, startBroker } from "./_helpers/broker.ts";
import { integrationTest } from "./_helpers/require.ts";
import { startWorker } from "./_helpers/worker.ts";
import { CONFIG_VARIABLES } from "../src/config.ts";
import { tempDir } from "./_helpers/files.ts";

const KEY_WARNING = /private key .* can be read by other users/;

/** A copy of the broker's client key with `mode`, and the worker's mutual-TLS environment. */
async function mutualTlsEnv(
  broker: Broker,
  dir: string,
  mode: number,
): Promise<{ env: Record<string, string>; keyFile: string }> {
  const certificates = broker.certificates!;
  const keyFile = `${dir}/client.key`;
  await Deno.copyFile(certificates.clientKeyFile, keyFile);
  await Deno.chmod(keyFile, mode);
  return {
    keyFile,
    env: {
      MQTT_URL: broker.url,
      MQTT_CA_FILE: certificates.caFile,
      MQTT_CERT_FILE: certificates.clientCertFile,
      MQTT_KEY_FILE: keyFile,
      DATA_DIR: `${dir}/data`,
      SINKS: "stdout",
      STDOUT_FORMAT: "jsonl",
      LOG_FORMAT: "json",
      SHUTDOWN_TIMEOUT_MS: "5000",
    },
  };
}

integrationTest({
  name: "a private key readable by others warns at start-up, naming the file and chmod 600",
  async fn() {
    await using broker = await startBroker({ tls: "mutual" });
    await using dir = await tempDir();
    const { env, keyFile } = await mutualTlsEnv(broker, dir, 0o644);
    await using worker = startWorker(env);
    const warning = JSON.parse(await worker.waitForStderr(KEY_WARNING));
    assert.equal(warning.level, "warning");
    assert.match(warning.message, /mode 644/);
    assert.ok(warning.message.includes(`chmod 600 ${keyFile}`), warning.message);
    // A warning, not a refusal: the worker goes on.
    await worker.waitForStderr(/Subscribed to/);
    assert.equal((await worker.stop()).code, 0);
  },
});

integrationTest({
  name: "a private key only its owner can read starts without the warning",
  async fn() {
    await using broker = await startBroker({ tls: "mutual" });
    await using dir = await tempDir();
    const { env } = await mutualTlsEnv(broker, dir, 0o600);
    await using worker = startWorker(env);
    await worker.waitForStderr(/Subscribed to/);
    assert.equal((await worker.stop()).code, 0);
    assert.ok(!worker.stderrLines().some((line) => KEY_WARNING.test(line)));
  },
});

integrationTest({
  name: "NODE_TLS_REJECT_UNAUTHORIZED=0 does not turn off certificate verification",
  async fn() {
    await using broker = await startBroker({ tls: "server" });
    await using dir = await tempDir();
    await using worker = startWorker({
      MQTT_URL: broker.url,
      MQTT_CA_FILE: broker.certificates!.untrustedCaFile,
      DATA_DIR: `${dir}/data`,
      LOG_FORMAT: "json",
      NODE_TLS_REJECT_UNAUTHORIZED: "0",
    });
    const status = await worker.status;
    const stderr = worker.stderrLines().join("\n");
    assert.equal(status.code, 3, stderr);
    assert.match(stderr, /not trusted.*MQTT_CA_FILE/);
  },
});

Deno.test("no configuration variable can turn TLS verification off", () => {
  const switches = CONFIG_VARIABLES.filter((name) =>
    /INSECURE|VERIFY|REJECT|UNAUTHORI[SZ]ED|SKIP|IGNORE|ALLOW_UNTRUSTED/.test(name)
  );
  assert.deepEqual(switches, []);
});

integrationTest({
  name: "over WebSockets too (wss://), an untrusted server certificate stops start-up with exit 3",
  async fn() {
    await using broker = await startBroker({ tls: "server", websockets: true });
    await using dir = await tempDir();
    await using worker = startWorker({
      MQTT_URL: broker.wsUrl!,
      MQTT_CA_FILE: broker.certificates!.untrustedCaFile,
      MQTT_CONNECT_ATTEMPTS: "2",
      MQTT_RECONNECT_MIN_MS: "100",
      DATA_DIR: `${dir}/data`,
      LOG_FORMAT: "json",
    });
    const status = await worker.status;
    const stderr = worker.stderrLines().join("\n");
    assert.equal(status.code, 3, stderr);
    assert.doesNotMatch(stderr, /Subscribed to/);
    assert.match(stderr, /not trusted.*MQTT_CA_FILE/);
  },
});
