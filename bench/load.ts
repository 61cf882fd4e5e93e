/**
 * The benchmark's load: datalogger payloads shaped like SPEC §1's example
 * (about 1 KB, four devices, some nulls, each with its own `t`; made in
 * bench/payload.ts), persistent sessions to queue them for, and publishers
 * that wait for every PUBACK.
 * @module
 */

import { Buffer } from "node:buffer";
import mqtt from "mqtt";
import type { MqttClient } from "mqtt";
import { benchPayload } from "./payload.ts";

export { benchPayload };

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
