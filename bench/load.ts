/**
 * The benchmark's load: datalogger payloads shaped like SPEC §1's example
 * (about 1 KB, four devices, some nulls, each with its own `t`), persistent
 * sessions to queue them for, and publishers that wait for every PUBACK.
 * @module
 */

import { Buffer } from "node:buffer";
import mqtt from "mqtt";
import type { MqttClient } from "mqtt";

/** The topic filter every benchmark session subscribes to. */
export const BENCH_TOPIC_FILTER = "a/+/u/data";

/** Sites the load is spread over: one topic each, as one worker usually serves many. */
const SITES = 20;
const FIRST_T = 1625576100;

/**
 * The topic and payload of message `index` of a run: sites take turns, and
 * each site's `t` advances by a minute per message, as a logger draining a
 * backlog would send it.
 *
 * @example
 * ```ts
 * const { topic, payload } = benchMessage(0);
 * topic; // "a/b827eb000000/u/data"
 * payload.length; // about 1 KB
 * ```
 */
export function benchMessage(index: number): { topic: string; payload: Uint8Array } {
  const site = index % SITES;
  const t = FIRST_T + Math.floor(index / SITES) * 60;
  return {
    topic: `a/b827eb${site.toString(16).padStart(6, "0")}/u/data`,
    payload: Buffer.from(benchPayload(t, index)),
  };
}

/**
 * One payload as a Python datalogger's `json.dumps` writes it (", " and ": "):
 * SPEC §1's four devices, with more registers so it weighs about 1 KB, values
 * that vary with `seed`, and two `null` registers.
 *
 * @example
 * ```ts
 * JSON.parse(benchPayload(1625576100, 7)).r.length; // 4
 * ```
 */
export function benchPayload(t: number, seed: number): string {
  // A small deterministic generator (mulberry32): every register gets its own full-precision value.
  let state = seed | 0;
  const v = (base: number, spread: number) => {
    state = (state + 0x6d2b79f5) | 0;
    let x = Math.imul(state ^ (state >>> 15), 1 | state);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return base + (((x ^ (x >>> 14)) >>> 0) / 4294967296) * spread;
  };
  const payload = {
    t,
    r: [
      {
        _d: "logger",
        _vid: "strato-1",
        boot_time: 1625563315,
        cpu_load: Number(v(0.01, 0.9).toFixed(2)),
        memory_usage: Number(v(15, 10).toFixed(1)),
        rssi: -Math.round(v(50, 40)),
      },
      {
        _d: "logger_strato",
        _vid: "strato-1",
        cpu_temp: v(55, 10),
        disk_usage: 45.8,
      },
      {
        _d: "diesel_sensor",
        _vid: "gamicos-1",
        level: v(0.2, 0.7),
        genset_fuel_volume: v(1000, 2000),
      },
      {
        _d: "dse855",
        _vid: "dse-1",
        E: 86744200 + seed,
        P: Math.round(v(10000, 8000)),
        Q: Math.round(v(100, 900)),
        S: Math.round(v(10000, 8000)),
        V_L1: v(225, 10),
        V_L2: v(225, 10),
        V_L3: 229.70000000000002,
        I_L1: v(20, 5),
        I_L2: v(20, 5),
        I_L3: v(20, 5),
        freq: v(49.9, 0.2),
        pf: v(0.9, 0.1),
        run_hours: 12044 + seed,
        E_day: v(0, 500),
        fuel_used: null,
        temp_oil: null,
        temp_coolant: v(70, 20),
        oil_pressure: v(3, 2),
        battery_voltage: v(24, 4),
      },
    ],
    m: {
      snap_rev: 670,
      config_id: "c5b2543",
      reading_duration: 0.9248790740966797,
      reading_offset: 0,
    },
  };
  return JSON.stringify(payload).replaceAll(",", ", ").replaceAll('":', '": ');
}

/**
 * Connects a client and resolves on CONNACK; rejects on the first error.
 *
 * @example
 * ```ts
 * const client = await connectBenchClient("mqtt://127.0.0.1:1883", { clientId: "p1", clean: true });
 * await client.endAsync();
 * ```
 */
export function connectBenchClient(
  url: string,
  options: { clientId: string; clean: boolean },
): Promise<MqttClient> {
  const client = mqtt.connect(url, {
    clientId: options.clientId,
    clean: options.clean,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
  });
  return new Promise((resolve, reject) => {
    client.once("connect", () => resolve(client));
    client.once("error", (error) => {
      client.end(true);
      reject(error);
    });
  });
}

/**
 * Creates a persistent session subscribed to {@linkcode BENCH_TOPIC_FILTER}
 * at QoS 1 for each client id, then disconnects: from then on the broker
 * queues every matching message for those ids.
 *
 * @example
 * ```ts
 * await createSessions(broker.url, ["bench-bare", "bench-file"]);
 * ```
 */
export async function createSessions(url: string, clientIds: readonly string[]): Promise<void> {
  for (const clientId of clientIds) {
    const client = await connectBenchClient(url, { clientId, clean: false });
    try {
      await client.subscribeAsync(BENCH_TOPIC_FILTER, { qos: 1 });
    } finally {
      await client.endAsync();
    }
  }
}

/**
 * Options of {@linkcode publishBacklog}.
 *
 * @example
 * ```ts
 * const options: PublishOptions = { messages: 100_000, publishers: 4, window: 200 };
 * ```
 */
export interface PublishOptions {
  /** Messages in all, {@linkcode benchMessage} 0 … messages − 1. */
  readonly messages: number;
  /** Connections publishing side by side; message i goes through publisher i % publishers. */
  readonly publishers: number;
  /** Unacknowledged publishes per connection. */
  readonly window: number;
}

/**
 * Publishes the backlog at QoS 1 and resolves once every PUBACK came back;
 * rejects when a publish fails. Resolves with the seconds it took.
 *
 * @example
 * ```ts
 * await publishBacklog(broker.url, { messages: 10_000, publishers: 4, window: 200 });
 * ```
 */
export async function publishBacklog(url: string, options: PublishOptions): Promise<number> {
  const started = performance.now();
  const clients = await Promise.all(
    Array.from(
      { length: options.publishers },
      (_, n) => connectBenchClient(url, { clientId: `bench-publisher-${n}`, clean: true }),
    ),
  );
  try {
    await Promise.all(clients.map((client, n) =>
      new Promise<void>((resolve, reject) => {
        let next = n;
        let outstanding = 0;
        let failed = false;
        const pump = () => {
          while (!failed && outstanding < options.window && next < options.messages) {
            const { topic, payload } = benchMessage(next);
            next += options.publishers;
            outstanding++;
            client.publish(topic, payload as Buffer, { qos: 1 }, (error) => {
              outstanding--;
              if (error) {
                failed = true;
                reject(error);
                return;
              }
              if (next >= options.messages && outstanding === 0) resolve();
              else pump();
            });
          }
        };
        if (next >= options.messages) resolve();
        else pump();
      })
    ));
  } finally {
    await Promise.all(clients.map((client) => client.endAsync()));
  }
  return (performance.now() - started) / 1000;
}

/**
 * Publishes at a steady `rate` per second for `seconds`, each at QoS 1, and
 * resolves with how many were published once every PUBACK came back. Message
 * numbers continue from `firstIndex`, so each has its own `t`. Stops early
 * when `signal` aborts.
 *
 * @example
 * ```ts
 * const sent = await publishSteadily(broker.url, { rate: 1000, seconds: 30, firstIndex: 0 });
 * ```
 */
export async function publishSteadily(
  url: string,
  options: { rate: number; seconds: number; firstIndex: number; signal?: AbortSignal },
): Promise<number> {
  const client = await connectBenchClient(url, { clientId: "bench-steady", clean: true });
  const total = Math.round(options.rate * options.seconds);
  const acknowledged: Promise<unknown>[] = [];
  try {
    const started = performance.now();
    let sent = 0;
    // A tick every 5 ms, catching up on the schedule: smooth enough, and cheap on a timer.
    while (sent < total && !options.signal?.aborted) {
      const due = Math.min(total, Math.floor((performance.now() - started) * options.rate / 1000));
      for (; sent < due; sent++) {
        const { topic, payload } = benchMessage(options.firstIndex + sent);
        acknowledged.push(client.publishAsync(topic, payload as Buffer, { qos: 1 }));
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await Promise.all(acknowledged);
    return sent;
  } finally {
    await client.endAsync();
  }
}

/**
 * Resolves once the broker's `$SYS/broker/store/messages/count` reaches
 * `count` (mosquitto publishes it every `sys_interval` seconds); rejects with
 * the last value seen after `timeoutMs`.
 *
 * @example
 * ```ts
 * await waitForStoredMessages(broker.url, 100_000, 15_000);
 * ```
 */
export async function waitForStoredMessages(
  url: string,
  count: number,
  timeoutMs: number,
): Promise<number> {
  const client = await connectBenchClient(url, { clientId: "bench-sys", clean: true });
  try {
    return await new Promise<number>((resolve, reject) => {
      let last = -1;
      const timer = setTimeout(() => {
        reject(
          new Error(
            `The broker holds ${last} messages, not the ${count} published: check max_queued_messages and max_queued_bytes`,
          ),
        );
      }, timeoutMs);
      client.on("message", (_topic, payload) => {
        last = Number(payload.toString());
        if (last >= count) {
          clearTimeout(timer);
          resolve(last);
        }
      });
      client.subscribe("$SYS/broker/store/messages/count", { qos: 0 });
    });
  } finally {
    await client.endAsync();
  }
}
