/**
 * MQTT_CA_FILE as an https:// URL: fetched once over verified TLS, cached in
 * DATA_DIR, and used to trust the broker.
 */

import assert from "node:assert/strict";
import { startBroker } from "./_helpers/broker.ts";
import { integrationTest } from "./_helpers/require.ts";
import { startWorker } from "./_helpers/worker.ts";

integrationTest({
  name: "an https:// MQTT_CA_FILE is fetched once, cached in DATA_DIR and trusted for the broker",
  async fn() {
    await using broker = await startBroker({ tls: "server" });
    const certs = broker.certificates!;
    const caPem = await Deno.readTextFile(certs.caFile);
    let fetches = 0;
    await using server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      cert: await Deno.readTextFile(certs.serverCertFile),
      key: await Deno.readTextFile(certs.serverKeyFile),
      onListen: () => {},
    }, () => {
      fetches++;
      return new Response(caPem);
    });
    const caUrl = `https://localhost:${server.addr.port}/ca.pem`;
    const dataDir = await Deno.makeTempDir({ prefix: "gridrelay-ca-url-" });
    try {
      const env = {
        MQTT_URL: broker.url,
        MQTT_CA_FILE: caUrl,
        DATA_DIR: dataDir,
        LOG_FORMAT: "json",
        // The CA server itself is verified too: the test CA signed its certificate.
        DENO_CERT: certs.caFile,
      };
      for (let run = 0; run < 2; run++) {
        await using worker = startWorker(env);
        await worker.waitForStderr(/Subscribed to/);
        assert.equal((await worker.stop()).code, 0);
      }
      assert.equal(fetches, 1, "the second start uses the cached CA");
      assert.equal(await Deno.readTextFile(`${dataDir}/mqtt-ca.pem`), caPem);
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});

integrationTest({
  name: "an https:// MQTT_CA_FILE that cannot be fetched stops start-up with exit code 2 naming it",
  requires: [],
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "gridrelay-ca-url-" });
    try {
      await using worker = startWorker({
        MQTT_URL: "mqtts://localhost:1",
        MQTT_CA_FILE: "https://localhost:1/ca.pem",
        DATA_DIR: dataDir,
        LOG_FORMAT: "json",
      });
      assert.equal((await worker.status).code, 2);
      assert.match(
        worker.stderrLines().join("\n"),
        /MQTT_CA_FILE=\\?"https:\/\/localhost:1\/ca.pem\\?" could not be fetched/,
      );
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
