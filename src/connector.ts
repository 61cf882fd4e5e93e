/**
 * The MQTT session: connect, subscribe, hand each message over, and
 * acknowledge it only once the handler says it is durable. Reconnects with
 * exponential back-off and jitter, and keeps the broker-side session alive so
 * nothing published while the worker is away is lost.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import mqtt from "mqtt";
import type { IClientOptions, MqttClient, Packet } from "mqtt";
import { maskUrl, type MqttConfig } from "./config.ts";
import type { WorkerMetrics } from "./metrics.ts";
import type { Message } from "./record.ts";
import { backoffDelay } from "./retry.ts";
import { namesCertificateProblem } from "./tls.ts";

/** The MQTT configuration with its files read and its client id resolved. */
export interface ConnectorOptions
  extends Omit<MqttConfig, "caFile" | "certFile" | "keyFile" | "clientId"> {
  /** Resolved: the configured id or the one kept in `DATA_DIR`. */
  readonly clientId: string;
  /** PEM text of the CA(s) to trust instead of the system roots. */
  readonly ca?: string;
  /** PEM text of the client certificate and key, for mutual TLS. */
  readonly cert?: string;
  readonly key?: string;
  /** MQTT 5 only: how many unacknowledged QoS 1/2 messages the broker may send at once. */
  readonly receiveMaximum?: number;
  /**
   * While it returns true, the connector reads no further message from the
   * broker (checked after each message, and every few milliseconds while
   * paused): back-pressure from what the handler has not made durable yet.
   */
  readonly busy?: () => boolean;
  readonly metrics: WorkerMetrics;
}

/**
 * Takes one message and resolves once its records (or its rejection) are
 * durable; only then is the message acknowledged to the broker. It should not
 * reject; a rejection leaves the message unacknowledged until the next session.
 */
export type MessageHandler = (message: Message) => Promise<void>;

/** Why the worker could not connect at start-up; the worker exits with code 3. */
export class ConnectError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConnectError";
  }
}

/** A broker closing healthy connections this often means another client has our id. */
const TAKEOVER_WINDOW_MS = 5 * 60_000;
const TAKEOVER_THRESHOLD = 3;
/** A connection that lived this long resets the back-off. */
const STABLE_CONNECTION_MS = 10_000;
/** MQTT 5 reason code "Session taken over". */
const SESSION_TAKEN_OVER = 142;

type SendPacket = (
  packet: Packet,
  cb?: () => void,
  cbStorePut?: unknown,
  noStore?: boolean,
) => void;

/**
 * One MQTT session. Construct, `start()`, and `stop()` on shutdown.
 *
 * @example
 * ```ts
 * const connector = new Connector(options, async (message) => {
 *   await spoolIt(message); // resolves when durable
 * });
 * await connector.start(); // connected and subscribed, or throws ConnectError
 * // …
 * await connector.stop(AbortSignal.timeout(10_000));
 * ```
 */
export class Connector {
  readonly #options: ConnectorOptions;
  readonly #handler: MessageHandler;
  readonly #log = getLogger(["gridrelay", "connector"]);
  #client?: MqttClient;
  /** Bumped on every CONNACK: acknowledgements of an older connection are never sent. */
  #generation = 0;
  /** Per packet id of the current connection: resolves when the message may be acknowledged. */
  readonly #acks = new Verdicts();
  /** Topic names, one string each: a message's topic is kept until it is spooled. */
  readonly #topicNames = new TopicNames();
  /** The messages handed over last, which share their handler's promise. */
  #group?: HandOver;
  /** The acknowledgements held for the last group, sent together when it is durable. */
  #held?: HeldAcknowledgements;
  /** mqtt.js's go-ahead for the next packet, held while the handler is busy. */
  #paused?: () => void;
  #pauseTimer?: ReturnType<typeof setInterval>;
  #resumeTimer?: ReturnType<typeof setTimeout>;
  /** Messages handed over whose handler promise has not settled yet. */
  #inFlight = 0;
  /** Resolves stop()'s wait once #inFlight is back to 0. */
  #drained?: () => void;
  #lastFailureLog = -Infinity;
  #unloggedFailures = 0;
  #accepting = true;
  #stopping = false;
  #subscribedOnce = false;
  #ready = false;
  #attempt = 0;
  #connectedAt = 0;
  #reconnectTimer?: ReturnType<typeof setTimeout>;
  #brokerCloses: number[] = [];
  #lastError?: Error;
  #started?: { resolve: () => void; reject: (error: Error) => void };

  constructor(options: ConnectorOptions, handler: MessageHandler) {
    this.#options = options;
    this.#handler = handler;
  }

  /** True while connected and subscribed (what `/readyz` reports). */
  get ready(): boolean {
    return this.#ready;
  }

  /**
   * Connects and subscribes. Resolves once subscribed; rejects with a
   * {@linkcode ConnectError} when the broker refuses the credentials or the
   * certificate, or when `connectAttempts` attempts have failed.
   */
  start(): Promise<void> {
    const client = mqtt.connect(this.#options.url, this.#clientOptions());
    this.#client = client;
    this.#interceptAcknowledgements(client);
    this.#watchStreamErrors(client);
    // QoS 1 and 2 messages are handed over here, as they arrive (for QoS 2 at
    // the PUBLISH, not the PUBREL). mqtt.js takes this option only under MQTT 5,
    // so it is set on the client's options for both versions.
    client.options.customHandleAcks = (topic, payload, packet, done) => {
      this.#acks.set(packet.messageId!, this.#accept(topic, payload));
      done(0);
    };
    client.handleMessage = (packet, callback) => {
      // QoS 1 and 2 were handed over in customHandleAcks; QoS 0 has no acknowledgement.
      if (packet.qos !== 0) return callback();
      this.#accept(packet.topic, packet.payload as Uint8Array);
      this.#readOn(callback);
    };
    client.on("connect", (connack) => this.#onConnect(connack.sessionPresent));
    client.on("close", () => this.#onClose());
    client.on("error", (error) => this.#onError(error));
    client.on("disconnect", (packet) => {
      if (packet.reasonCode === SESSION_TAKEN_OVER) this.#reportTakeover(true);
    });
    const started = new Promise<void>((resolve, reject) => {
      this.#started = { resolve, reject };
    });
    this.#log.info("Connecting to {url} as client id {clientId}", {
      url: maskUrl(this.#options.url),
      clientId: this.#options.clientId,
    });
    client.connect();
    return started;
  }

  /**
   * Stops taking messages, waits (until `deadline` aborts) for the ones in
   * flight to become durable and be acknowledged, then disconnects cleanly.
   * Messages that arrive meanwhile are not acknowledged: the broker keeps them
   * for the next session.
   */
  async stop(deadline?: AbortSignal): Promise<void> {
    this.#accepting = false;
    this.#stopping = true;
    this.#resumeReading();
    clearTimeout(this.#reconnectTimer);
    const client = this.#client;
    if (!client) return;
    if (this.#inFlight > 0) {
      const aborted = new Promise<void>((resolve) => {
        if (deadline?.aborted) resolve();
        deadline?.addEventListener("abort", () => resolve(), { once: true });
      });
      const drained = new Promise<void>((resolve) => (this.#drained = resolve));
      await Promise.race([drained, aborted]);
      this.#drained = undefined;
    }
    // Let the acknowledgements queued by the settled promises reach the socket first.
    await new Promise((resolve) => setTimeout(resolve, 0));
    this.#setReady(false);
    await new Promise<void>((resolve) => {
      client.end(deadline?.aborted ?? false, {}, () => resolve());
    });
    this.#options.metrics.mqttConnected.set(0);
    this.#log.info("Disconnected from the broker");
  }

  #clientOptions(): IClientOptions {
    const options = this.#options;
    const persistent = !options.cleanSession;
    return {
      clientId: options.clientId,
      clean: options.cleanSession,
      protocolVersion: options.protocolVersion,
      username: options.username,
      password: options.password,
      keepalive: options.keepaliveSeconds,
      connectTimeout: 15_000,
      // Reconnects are ours: mqtt.js would retry at a fixed period.
      reconnectPeriod: 0,
      // Subscriptions are ours too: only when the broker lost the session.
      resubscribe: false,
      manualConnect: true,
      // mqtt-packet would otherwise pre-build 65536 message-id buffers: ~8 MiB of heap, for
      // nothing, since a PUBACK's two id bytes are cheap to write.
      writeCache: false,
      // mqtt.js traces every packet through the debug package; even switched off, those calls
      // cost about a microsecond a message. Its errors reach us as events, not through this.
      log: () => {},
      rejectUnauthorized: true,
      ca: options.ca,
      cert: options.cert,
      key: options.key,
      properties: options.protocolVersion === 5
        ? {
          // Without an expiry an MQTT 5 broker drops the session at disconnect.
          sessionExpiryInterval: persistent ? 0xFFFFFFFF : 0,
          receiveMaximum: options.receiveMaximum ?? 1000,
        }
        : undefined,
    };
  }

  /**
   * mqtt.js sends the PUBACK (QoS 1) or PUBREC (QoS 2) as soon as its
   * handlers return, and reads no further packet until it has. Holding the
   * handler would stall pings too (mqtt.js issue 1935), so the handlers return
   * at once and the acknowledgement itself waits here for durability. Waiting
   * acknowledgements also keep the broker's in-flight window full, which is
   * what pauses delivery while the spool is full.
   */
  #interceptAcknowledgements(client: MqttClient): void {
    const internals = client as unknown as { _sendPacket: SendPacket };
    const send = internals._sendPacket.bind(client);
    internals._sendPacket = (packet, cb, cbStorePut, noStore) => {
      const messageId = (packet as { messageId?: number }).messageId;
      const verdict = (packet.cmd === "puback" || packet.cmd === "pubrec") &&
        messageId !== undefined && this.#acks.take(messageId);
      if (!verdict) return send(packet, cb, cbStorePut, noStore);
      this.#readOn(cb);
      // Messages handed over together become durable together: one wait, one write for all.
      let held = this.#held;
      if (held === undefined || held.verdict !== verdict || held.generation !== this.#generation) {
        const group: HeldAcknowledgements = { verdict, generation: this.#generation, packets: [] };
        verdict.then((acknowledge) => {
          if (acknowledge && group.generation === this.#generation && client.connected) {
            sendAcknowledgements(client, group.packets, send);
          }
        });
        this.#held = held = group;
      }
      // A PUBACK is kept as its packet id alone: thousands can wait for one sync.
      held.packets.push(packet.cmd === "puback" ? messageId! : packet);
    };
  }

  /**
   * mqtt.js re-emits a socket error only when it carries a `code`; TLS errors
   * often do not, and a person needs them to fix a certificate problem.
   */
  #watchStreamErrors(client: MqttClient): void {
    const connect = client.connect.bind(client);
    client.connect = () => {
      const result = connect();
      client.stream?.on("error", (error: Error) => {
        this.#lastError ??= error;
        const fatal = fatalConnectProblem(error);
        if (fatal && this.#started) this.#fail(new ConnectError(fatal, { cause: error }));
      });
      return result;
    };
  }

  /**
   * Lets mqtt.js go on to the next packet now, or, while the handler is busy,
   * once it is not: mqtt.js reads the socket no further meanwhile, and the
   * broker's data waits in TCP buffers and in the broker.
   */
  #readOn(next?: () => void): void {
    if (next === undefined) return;
    // Stopping, messages are no longer taken: nothing to hold back.
    if (this.#stopping || !this.#options.busy?.()) return next();
    this.#paused = next;
    // Resumed from a timer, not from the promise that settled messages: mqtt.js then handles
    // the rest of the socket chunk within one turn, and those messages make one burst. Settled
    // messages resume it at once; this check covers a spool that fills meanwhile, a lost
    // connection and shutdown.
    this.#pauseTimer ??= setInterval(() => {
      if (this.#options.busy?.() && this.#client?.connected && !this.#stopping) return;
      this.#resumeReading();
    }, PAUSE_CHECK_MS);
  }

  #abandonPausedRead(): void {
    clearInterval(this.#pauseTimer);
    this.#pauseTimer = undefined;
    clearTimeout(this.#resumeTimer);
    this.#resumeTimer = undefined;
    this.#paused = undefined;
  }

  #resumeReading(): void {
    const next = this.#paused;
    this.#abandonPausedRead();
    next?.();
  }

  /** Hands a message over; resolves `true` when it may be acknowledged. */
  #accept(topic: string, payload: Uint8Array): Promise<boolean> {
    if (!this.#accepting) return NOT_ACKNOWLEDGED;
    const durable = this.#handler({
      topic: this.#topicNames.intern(topic),
      payload,
      receivedAt: Date.now(),
    });
    let group = this.#group;
    if (group === undefined || group.durable !== durable) {
      // One settlement per group of messages, not per message: this runs for every message.
      const created: HandOver = { durable, count: 0, verdict: NOT_ACKNOWLEDGED };
      created.verdict = durable.then(
        () => this.#settled(created.count, true),
        (error) => this.#settled(created.count, false, error),
      );
      this.#group = group = created;
    }
    group.count++;
    this.#inFlight++;
    return group.verdict;
  }

  #settled(count: number, durable: boolean, error?: unknown): boolean {
    this.#inFlight -= count;
    if (this.#inFlight === 0) this.#drained?.();
    // Not from here (a promise reaction) but from a timer: see #readOn.
    if (this.#paused !== undefined && !this.#options.busy?.()) {
      this.#resumeTimer ??= setTimeout(() => {
        this.#resumeTimer = undefined;
        this.#resumeReading();
      }, 0);
    }
    if (durable) return true;
    // A failing disk fails every message of a burst: one line a second says so.
    const now = performance.now();
    if (now - this.#lastFailureLog < 1000) {
      this.#unloggedFailures += count;
      return false;
    }
    this.#log.error(
      "{count} message(s) could not be made durable ({error}); they stay unacknowledged and the broker sends them again{more}",
      {
        count,
        error,
        more: this.#unloggedFailures > 0
          ? ` (${this.#unloggedFailures} more in the last second were not logged)`
          : "",
      },
    );
    this.#lastFailureLog = now;
    this.#unloggedFailures = 0;
    return false;
  }

  #onConnect(sessionPresent: boolean): void {
    this.#generation++;
    this.#acks.clear();
    // Reading paused on the old connection: what it had left unread is dropped, not handled
    // now, when acknowledgements would go out on this connection under packet ids of the old
    // one. The broker sends those messages again.
    this.#abandonPausedRead();
    this.#connectedAt = Date.now();
    this.#lastError = undefined;
    this.#options.metrics.mqttConnected.set(1);
    this.#log.info("Connected to {url} (session present: {sessionPresent})", {
      url: maskUrl(this.#options.url),
      sessionPresent,
    });
    if (this.#subscribedOnce && sessionPresent && !this.#options.cleanSession) {
      this.#setReady(true);
      return;
    }
    if (this.#subscribedOnce) {
      this.#log.warn("The broker did not keep the session; subscribing again");
    }
    this.#subscribe();
  }

  #subscribe(): void {
    const { topics, shareGroup, qos } = this.#options;
    const filters = topics.map((topic) => shareGroup ? `$share/${shareGroup}/${topic}` : topic);
    const shown = filters.join(", ");
    this.#client!.subscribe(filters, { qos }, (error, granted) => {
      if (error) {
        // The connection went away mid-subscribe; the next CONNACK subscribes again.
        this.#log.warn("Subscribing to {filters} failed: {error}", { filters: shown, error });
        return;
      }
      const refused = (granted ?? []).filter((grant) => grant.qos >= 128);
      if (refused.length > 0) {
        const names = refused.map((grant) => grant.topic).join(", ");
        const message =
          `The broker refused the subscription to ${names}: check that the user may read these topics (broker ACL) and that the filters in MQTT_TOPICS are right`;
        if (this.#started) {
          this.#fail(new ConnectError(message));
        } else {
          this.#log.error(message);
        }
        return;
      }
      this.#subscribedOnce = true;
      this.#log.info("Subscribed to {filters} at QoS {qos}", { filters: shown, qos });
      this.#setReady(true);
      this.#started?.resolve();
      this.#started = undefined;
    });
  }

  #onError(error: Error): void {
    this.#lastError = error;
    const fatal = fatalConnectProblem(error);
    if (fatal && this.#started) {
      this.#fail(new ConnectError(fatal, { cause: error }));
      return;
    }
    this.#log.debug("MQTT client error: {error}", { error });
  }

  #onClose(): void {
    const wasReady = this.#ready;
    this.#setReady(false);
    this.#options.metrics.mqttConnected.set(0);
    if (this.#stopping) return;
    const livedMs = this.#connectedAt ? Date.now() - this.#connectedAt : 0;
    const wasConnected = this.#connectedAt !== 0;
    this.#connectedAt = 0;
    if (wasConnected && livedMs >= STABLE_CONNECTION_MS) this.#attempt = 0;
    if (wasConnected && this.#lastError === undefined) this.#reportTakeover(false);
    const reason = this.#lastError
      ? describeConnectProblem(this.#lastError)
      : "closed by the broker";
    if (this.#started) {
      const attempts = this.#options.connectAttempts;
      if (attempts > 0 && this.#attempt + 1 >= attempts) {
        this.#fail(
          new ConnectError(
            `Could not connect to ${
              maskUrl(this.#options.url)
            } after ${attempts} attempt(s): ${reason}`,
          ),
        );
        return;
      }
    }
    const delay = backoffDelay(this.#attempt++, {
      minMs: this.#options.reconnectMinMs,
      maxMs: this.#options.reconnectMaxMs,
    });
    const level = wasReady || this.#started ? "warn" : "info";
    this.#log[level]("Connection to {url} lost ({reason}); reconnecting in {seconds} s", {
      url: maskUrl(this.#options.url),
      reason,
      seconds: (delay / 1000).toFixed(1),
    });
    this.#options.metrics.mqttReconnects.add();
    this.#lastError = undefined;
    this.#reconnectTimer = setTimeout(() => {
      if (!this.#stopping) this.#client?.reconnect();
    }, delay);
  }

  #reportTakeover(certain: boolean): void {
    const now = Date.now();
    this.#brokerCloses = this.#brokerCloses.filter((at) => now - at < TAKEOVER_WINDOW_MS);
    this.#brokerCloses.push(now);
    if (certain || this.#brokerCloses.length >= TAKEOVER_THRESHOLD) {
      this.#log.error(
        "{certainty} another client is connected with client id {clientId}: the broker keeps closing this connection when the other one connects. Give every worker its own MQTT_CLIENT_ID (or leave it unset for a stable id per data directory)",
        {
          certainty: certain ? "The broker says" : "It looks like",
          clientId: this.#options.clientId,
        },
      );
      this.#brokerCloses = [];
    }
  }

  #fail(error: ConnectError): void {
    const started = this.#started;
    this.#started = undefined;
    this.#stopping = true;
    clearTimeout(this.#reconnectTimer);
    this.#client?.end(true);
    started?.reject(error);
  }

  #setReady(ready: boolean): void {
    this.#ready = ready;
  }
}

/** Messages handed over together, and what became of them. */
interface HandOver {
  /** The handler's promise, the same for every message of the group. */
  readonly durable: Promise<void>;
  /** Resolves true once they may be acknowledged. */
  verdict: Promise<boolean>;
  count: number;
}

/** Acknowledgements waiting for their messages to be durable. */
interface HeldAcknowledgements {
  readonly verdict: Promise<boolean>;
  /** The connection they belong to: never sent on a later one. */
  readonly generation: number;
  /** In order: the packet id of a PUBACK, or the packet itself (a PUBREC). */
  readonly packets: (number | Packet)[];
}

const NOT_ACKNOWLEDGED = Promise.resolve(false);

/** While reading is paused, how often the connector asks whether the handler is still busy. */
const PAUSE_CHECK_MS = 10;

/** PUBACK: type 4, remaining length 2 (MQTT 5 too: reason code 0 and no properties may be left out). */
const PUBACK_HEADER = 0x40;

/**
 * Sends held acknowledgements in order: consecutive PUBACKs as one write of
 * their four bytes each, anything else (PUBREC) through mqtt.js, which keeps
 * the QoS 2 state.
 */
function sendAcknowledgements(
  client: MqttClient,
  packets: readonly (number | Packet)[],
  send: SendPacket,
): void {
  let start = 0;
  while (start < packets.length) {
    let end = start;
    while (end < packets.length && typeof packets[end] === "number") end++;
    if (end > start) {
      const bytes = new Uint8Array((end - start) * 4);
      for (let i = start; i < end; i++) {
        const id = packets[i] as number;
        const at = (i - start) * 4;
        bytes[at] = PUBACK_HEADER;
        bytes[at + 1] = 2;
        bytes[at + 2] = id >> 8;
        bytes[at + 3] = id & 0xff;
      }
      client.stream.write(bytes);
      start = end;
    } else {
      send(packets[start++] as Packet);
    }
  }
}

/** Problems that retrying cannot fix: at start-up the worker gives up at once. */
function fatalConnectProblem(error: Error): string | undefined {
  const code = (error as { code?: unknown }).code;
  if (code === 4 || code === 134) {
    return "The broker refused the user name or password: check MQTT_USERNAME and MQTT_PASSWORD";
  }
  if (code === 5 || code === 135) {
    return "The broker refused the connection as not authorised: check MQTT_USERNAME and MQTT_PASSWORD (mosquitto answers a wrong password this way), then the broker's ACL";
  }
  if (code === 2 || code === 133) {
    return "The broker rejected the client id: set MQTT_CLIENT_ID to a value it accepts";
  }
  if (code === 138) return "The broker has banned this client";
  if (isCertificateProblem(error)) return describeConnectProblem(error);
  return undefined;
}

function isCertificateProblem(error: Error): boolean {
  return namesCertificateProblem(`${(error as { code?: unknown }).code ?? ""} ${error.message}`);
}

/** One sentence a person can act on, for the usual ways a connection fails. */
export function describeConnectProblem(error: Error): string {
  const code = String((error as { code?: unknown }).code ?? "");
  const message = error.message;
  const fatal = code && /^\d+$/.test(code) ? fatalConnectProblem(error) : undefined;
  if (fatal) return fatal;
  if (isCertificateProblem(error)) {
    return `the broker's TLS certificate is not trusted (${message}): set MQTT_CA_FILE to the CA that signed it, and check that the host name in MQTT_URL is one the certificate names`;
  }
  if (code === "ECONNREFUSED" || /refused/i.test(message)) {
    return `connection refused (${message}): is the broker running and listening on that host and port?`;
  }
  if (code === "ENOTFOUND" || /lookup|getaddrinfo|name resolution|dns/i.test(message)) {
    return `unknown host (${message}): check the host name in MQTT_URL`;
  }
  if (/connack timeout/i.test(message)) {
    return "the broker did not answer the CONNECT in time: is this an MQTT port, and does it need TLS (mqtts://)?";
  }
  return message;
}

/**
 * Each message's verdict by packet id, from the hand-over to the
 * acknowledgement. For QoS 1, mqtt.js sends the acknowledgement within the
 * call that handed the message over, so the newest verdict waits in a slot:
 * a map's set and delete for every message would allocate. The map holds
 * only verdicts whose acknowledgement comes later (QoS 2, after the store).
 */
class Verdicts {
  #id = -1;
  #verdict?: Promise<boolean>;
  readonly #later = new Map<number, Promise<boolean>>();

  set(id: number, verdict: Promise<boolean>): void {
    if (this.#verdict !== undefined) this.#later.set(this.#id, this.#verdict);
    if (this.#later.size > 0) this.#later.delete(id);
    this.#id = id;
    this.#verdict = verdict;
  }

  /** The verdict for `id`, forgotten once taken. */
  take(id: number): Promise<boolean> | undefined {
    if (id === this.#id && this.#verdict !== undefined) {
      const verdict = this.#verdict;
      this.#verdict = undefined;
      return verdict;
    }
    const verdict = this.#later.get(id);
    if (verdict !== undefined) this.#later.delete(id);
    return verdict;
  }

  clear(): void {
    this.#verdict = undefined;
    this.#later.clear();
  }
}

/** Most topic names {@linkcode TopicNames} remembers before it starts again. */
const TOPIC_NAMES_KEPT = 10_000;

/**
 * One string per topic name. mqtt.js makes a new string for every message's
 * topic; kept until the message is spooled, each would outlive the young
 * generation and burden the old one, which the same name, shared, does not.
 */
class TopicNames {
  readonly #names = new Map<string, string>();

  intern(topic: string): string {
    const known = this.#names.get(topic);
    if (known !== undefined) return known;
    // More topics than this (a very large fleet): start again rather than grow without bound.
    if (this.#names.size >= TOPIC_NAMES_KEPT) this.#names.clear();
    this.#names.set(topic, topic);
    return topic;
  }
}
