/**
 * Thin test clients over npm:mqtt: connect (failing fast, never retrying),
 * publish and wait for every acknowledgement, subscribe and collect. Every
 * client these helpers create is ended before they return or on dispose.
 * @module
 */

import { Buffer } from "node:buffer";
import mqtt from "mqtt";
import type { IClientOptions, IPublishPacket, MqttClient } from "mqtt";

/**
 * Connection settings of a test client.
 *
 * @example
 * ```ts
 * const options: ClientOptions = { ca: certificates.caFile, username: "alice", password: "s3cret" };
 * ```
 */
export interface ClientOptions {
  username?: string;
  password?: string;
  /** CA to trust: a PEM string or the path of a PEM file (e.g. `broker.certificates.caFile`). */
  ca?: string;
  /** Client certificate for mutual TLS: PEM or path. */
  cert?: string;
  /** The client certificate's key: PEM or path. */
  key?: string;
  /** Default: a random `gridrelay-test-…` id. */
  clientId?: string;
  /** `false` asks for a persistent session. Default `true`. */
  clean?: boolean;
  /** 4 = MQTT 3.1.1 (default), 5 = MQTT 5. */
  protocolVersion?: 4 | 5;
  /** How long to wait for CONNACK. Default 5000 ms. */
  connectTimeoutMs?: number;
}

/**
 * A message to publish.
 *
 * @example
 * ```ts
 * const message: OutgoingMessage = { topic: "a/b827eb2bb2a9/u/data", payload: '{"t":1,"r":[]}', qos: 1 };
 * ```
 */
export interface OutgoingMessage {
  topic: string;
  payload: string | Uint8Array;
  /** Default 1. */
  qos?: 0 | 1 | 2;
  retain?: boolean;
}

/**
 * A message a test subscriber received.
 *
 * @example
 * ```ts
 * const [message]: ReceivedMessage[] = await subscription.waitForMessages(1);
 * JSON.parse(message.text);
 * ```
 */
export interface ReceivedMessage {
  topic: string;
  payload: Uint8Array;
  /** The payload decoded as UTF-8 (lossy). */
  text: string;
  qos: 0 | 1 | 2;
  retain: boolean;
}

/**
 * Connects one client; resolves on CONNACK. Rejects with the broker's or the
 * TLS layer's error (e.g. "Connection refused: Not authorized", "invalid peer
 * certificate") — it never reconnects, and a failed client is already ended.
 * The caller ends a connected client: `await client.endAsync()`.
 *
 * @example
 * ```ts
 * const client = await connectClient(broker.url, { ca: broker.certificates!.caFile });
 * await client.endAsync();
 * ```
 */
export function connectClient(url: string, options: ClientOptions = {}): Promise<MqttClient> {
  return connectPrepared(url, options, () => {});
}

/** Like connectClient, with `prepare` run on the client before any packet can arrive. */
async function connectPrepared(
  url: string,
  options: ClientOptions,
  prepare: (client: MqttClient) => void,
): Promise<MqttClient> {
  const client = mqtt.connect(url, await clientOptions(options));
  prepare(client);
  try {
    await new Promise<void>((resolve, reject) => {
      const cleanup = () => {
        client.off("connect", onConnect);
        client.off("error", onError);
        client.off("close", onClose);
      };
      const onConnect = () => {
        cleanup();
        resolve();
      };
      const onError = (error: Error) => {
        cleanup();
        reject(error);
      };
      const onClose = () => {
        cleanup();
        reject(new Error(`The connection to ${url} closed before CONNACK.`));
      };
      client.on("connect", onConnect);
      client.on("error", onError);
      client.on("close", onClose);
    });
  } catch (error) {
    await client.endAsync(true);
    throw error;
  }
  return client;
}

/**
 * Publishes `messages` in order over one fresh connection, waits for every
 * PUBACK/PUBCOMP (QoS 1 is the default), then disconnects cleanly.
 *
 * @example
 * ```ts
 * await publish(broker.url, [{ topic: "a/node-1/u/data", payload: '{"t":1,"r":[]}' }]);
 * ```
 */
export async function publish(
  url: string,
  messages: OutgoingMessage[],
  options: ClientOptions = {},
): Promise<void> {
  const client = await connectClient(url, options);
  try {
    for (const message of messages) {
      await client.publishAsync(message.topic, toBuffer(message.payload), {
        qos: message.qos ?? 1,
        retain: message.retain ?? false,
      });
    }
  } finally {
    await client.endAsync();
  }
}

/**
 * Options of {@linkcode subscribe}.
 *
 * @example
 * ```ts
 * const options: SubscribeOptions = { qos: 2, clientId: "observer", clean: false };
 * ```
 */
export interface SubscribeOptions extends ClientOptions {
  /** Subscription QoS. Default 1. */
  qos?: 0 | 1 | 2;
}

/**
 * A connected, subscribed test client that collects what arrives.
 *
 * @example
 * ```ts
 * await using subscription = await subscribe(broker.url, "a/#");
 * const messages = await subscription.waitForMessages(3, 2000);
 * ```
 */
export interface Subscription extends AsyncDisposable {
  /** The underlying client, for anything the helpers do not cover. */
  readonly client: MqttClient;
  /** Everything received so far, in arrival order. */
  readonly messages: ReceivedMessage[];
  /** Resolves once `count` messages in total have arrived; rejects after `timeoutMs` (default 5000). */
  waitForMessages(count: number, timeoutMs?: number): Promise<ReceivedMessage[]>;
  /** Disconnects cleanly. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * Connects and subscribes to `topics`; resolves once SUBACK arrived, so a
 * publish made afterwards is delivered to it.
 *
 * @example
 * ```ts
 * await using subscription = await subscribe(broker.url, "a/+/u/data");
 * await publish(broker.url, [{ topic: "a/n1/u/data", payload: "{}" }]);
 * const [message] = await subscription.waitForMessages(1);
 * ```
 */
export async function subscribe(
  url: string,
  topics: string | string[],
  options: SubscribeOptions = {},
): Promise<Subscription> {
  const messages: ReceivedMessage[] = [];
  const waiters = new Set<() => void>();
  const onMessage = (topic: string, payload: Buffer, packet: IPublishPacket) => {
    messages.push({
      topic,
      payload: new Uint8Array(payload),
      text: new TextDecoder().decode(payload),
      qos: packet.qos,
      retain: packet.retain,
    });
    for (const wake of [...waiters]) wake();
  };
  // Listening before CONNECT: a persistent session's queued messages arrive
  // right after CONNACK, possibly in the same TCP read, before SUBACK.
  const client = await connectPrepared(url, options, (client) => client.on("message", onMessage));
  try {
    const granted = await client.subscribeAsync(topics, { qos: options.qos ?? 1 });
    const refused = granted.filter((grant) => grant.qos === 128);
    if (refused.length > 0) {
      throw new Error(`The broker refused the subscription to ${refused.map((g) => g.topic)}.`);
    }
  } catch (error) {
    await client.endAsync(true);
    throw error;
  }
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await client.endAsync();
  };
  return {
    client,
    messages,
    waitForMessages(count, timeoutMs = 5_000) {
      if (messages.length >= count) return Promise.resolve(messages.slice(0, count));
      return new Promise((resolve, reject) => {
        const wake = () => {
          if (messages.length < count) return;
          done();
          resolve(messages.slice(0, count));
        };
        const timer = setTimeout(() => {
          done();
          reject(
            new Error(
              `Received ${messages.length} of ${count} messages on ${topics} within ${timeoutMs} ms.`,
            ),
          );
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(wake);
        };
        waiters.add(wake);
      });
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * Options of {@linkcode subscribeCollect}.
 *
 * @example
 * ```ts
 * const options: CollectOptions = { clientId: "c1", clean: false, timeoutMs: 2000 };
 * ```
 */
export interface CollectOptions extends SubscribeOptions {
  /** Give up after this long. Default 5000 ms. */
  timeoutMs?: number;
}

/**
 * Subscribes, waits for `count` messages, disconnects and returns them — for
 * messages that already wait at the broker (retained, or queued for a
 * persistent session: pass `clientId` and `clean: false`).
 *
 * @example
 * ```ts
 * const [queued] = await subscribeCollect(broker.url, "a/#", 1, { clientId: "c1", clean: false });
 * ```
 */
export async function subscribeCollect(
  url: string,
  topics: string | string[],
  count: number,
  options: CollectOptions = {},
): Promise<ReceivedMessage[]> {
  await using subscription = await subscribe(url, topics, options);
  return await subscription.waitForMessages(count, options.timeoutMs);
}

async function clientOptions(options: ClientOptions): Promise<IClientOptions> {
  return {
    clientId: options.clientId ?? `gridrelay-test-${crypto.randomUUID().slice(0, 8)}`,
    clean: options.clean ?? true,
    protocolVersion: options.protocolVersion ?? 4,
    username: options.username,
    password: options.password,
    ca: options.ca === undefined ? undefined : await pem(options.ca),
    cert: options.cert === undefined ? undefined : await pem(options.cert),
    key: options.key === undefined ? undefined : await pem(options.key),
    rejectUnauthorized: true,
    // A test wants the first failure, not a retry loop that hides it.
    reconnectPeriod: 0,
    connectTimeout: options.connectTimeoutMs ?? 5_000,
  };
}

/** A PEM string as is, or the contents of the file at that path. */
async function pem(value: string): Promise<string> {
  return value.includes("-----BEGIN") ? value : await Deno.readTextFile(value);
}

/** mqtt.js sends strings and Buffers; a plain Uint8Array is wrapped without copying. */
function toBuffer(payload: string | Uint8Array): string | Buffer {
  if (typeof payload === "string") return payload;
  return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
}
