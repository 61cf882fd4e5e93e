/**
 * `deno task demo`: gridrelay end to end with nothing to install. An embedded
 * MQTT broker (aedes, MQTT 3.1.1), a simulated datalogger publishing for three
 * sites every second — now and then with a reading that lacks `_vid` and a
 * malformed payload, so the dead letters have something to show — and the
 * worker, printing records on stdout until Ctrl-C.
 * @module
 */

import { Aedes } from "aedes";
import mqtt from "mqtt";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { parseConfig, readEnvironment, runWorker } from "../mod.ts";
import { setupLogging } from "../src/logging.ts";
import { handleShutdownSignals } from "../src/signals.ts";

const SITES = ["b827eb2bb2a9", "b827eb91c0d2", "dca632f1e7aa"];
const DATA_DIR = "./data/demo";

const broker = await Aedes.createBroker();
const server = createServer(broker.handle);
await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
const { port } = server.address() as AddressInfo;
const url = `mqtt://127.0.0.1:${port}`;

const env = readEnvironment();
const config = parseConfig({
  LOG_LEVEL: env.LOG_LEVEL,
  LOG_FORMAT: env.LOG_FORMAT ?? "pretty",
  STDOUT_FORMAT: env.STDOUT_FORMAT,
  MISSING_VID: env.MISSING_VID,
  RECORD_META: env.RECORD_META ?? "node_id",
  MQTT_URL: url,
  // aedes speaks MQTT 3.1.1 only.
  MQTT_PROTOCOL_VERSION: "4",
  MQTT_CLIENT_ID: "gridrelay-demo",
  SINKS: "stdout",
  DATA_DIR,
});
setupLogging({ level: config.logLevel, format: config.logFormat });
console.error(
  `demo: embedded broker on ${url}; datalogger publishing for ${SITES.length} sites every second.\n` +
    `demo: records follow on stdout; rejected payloads and readings go to ${config.deadLetterPath}.\n` +
    `demo: press Ctrl-C to stop.`,
);

const signal = handleShutdownSignals();

const datalogger = startDatalogger(url, signal);
const code = await runWorker(config, { signal });
await datalogger;
await new Promise<void>((resolve) => broker.close(() => resolve()));
await new Promise<void>((resolve) => server.close(() => resolve()));
console.error(`demo: stopped. Dead letters are in ${config.deadLetterPath}`);
Deno.exit(code);

/** Publishes realistic payloads, one per site per second, until `signal` aborts. */
async function startDatalogger(url: string, signal: AbortSignal): Promise<void> {
  const client = await mqtt.connectAsync(url, {
    protocolVersion: 4,
    clientId: "demo-datalogger",
    reconnectPeriod: 1000,
  });
  let tick = 0;
  const energy = new Map(SITES.map((site, i) => [site, 86744200 + i * 1_000_000]));
  while (!signal.aborted) {
    tick++;
    const t = Math.floor(Date.now() / 1000);
    for (const site of SITES) {
      energy.set(site, energy.get(site)! + Math.round(Math.random() * 50));
      await client.publishAsync(`a/${site}/u/data`, payloadFor(site, t, tick, energy.get(site)!), {
        qos: 1,
      });
    }
    if (tick % 7 === 0) {
      // A datalogger that lost power mid-write.
      await client.publishAsync(`a/${SITES[1]}/u/data`, `{"t":${t},"r":[{"_d":"dse855","_vid"`, {
        qos: 1,
      });
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1000);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    });
  }
  await client.endAsync();
}

function payloadFor(site: string, t: number, tick: number, energy: number): string {
  const jitter = (base: number, spread: number) => base + (Math.random() - 0.5) * spread;
  const readings: string[] = [
    JSON.stringify({
      _d: "logger",
      _vid: "strato-1",
      boot_time: 1625563315,
      cpu_load: Number(jitter(0.06, 0.04).toFixed(2)),
      memory_usage: Number(jitter(17.2, 2).toFixed(1)),
    }),
    JSON.stringify({
      _d: "logger_strato",
      _vid: "strato-1",
      cpu_temp: jitter(60.148, 3),
      disk_usage: 45.8,
    }),
    JSON.stringify({
      _d: "diesel_sensor",
      _vid: "gamicos-1",
      level: jitter(0.567, 0.01),
      genset_fuel_volume: jitter(2477.27, 10),
    }),
    // Written by hand: the counter and the failed float register are what JSON.stringify cannot express.
    `{"_d":"dse855","_vid":"dse-1","E":${energy},"P":${
      Math.round(jitter(15983, 800))
    },"V_L3":229.70000000000002,"fuel_used":null,"temp_oil":${tick % 5 === 0 ? "NaN" : "81.5"}}`,
  ];
  if (tick % 4 === 0) {
    // A calculated virtual device without a vendor id, as real loggers send.
    readings.push(JSON.stringify({ _d: "calc", pv_share: Number(Math.random().toFixed(3)) }));
  }
  return `{"t":${t},"r":[${
    readings.join(",")
  }],"m":{"snap_rev":670,"config_id":"c5b2543","site":"${site}"}}`;
}
