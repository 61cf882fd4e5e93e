import assert from "node:assert/strict";
import {
  CONFIG_VARIABLES,
  ConfigError,
  type Environment,
  maskUrl,
  parseConfig,
} from "../src/config.ts";

const BROKER = { MQTT_URL: "mqtt://127.0.0.1:1883" };

function configError(env: Environment): ConfigError {
  try {
    parseConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
    return error;
  }
  assert.fail(`expected ${JSON.stringify(env)} to be rejected`);
}

Deno.test("defaults follow SPEC §2 when only MQTT_URL is set", () => {
  const config = parseConfig(BROKER);
  assert.deepEqual(config.mqtt.topics, ["a/+/u/data"]);
  assert.equal(config.mqtt.qos, 1);
  assert.equal(config.mqtt.protocolVersion, 4);
  assert.equal(config.mqtt.cleanSession, false);
  assert.equal(config.mqtt.connectAttempts, 0);
  assert.equal(config.mqtt.reconnectMinMs, 1000);
  assert.equal(config.mqtt.reconnectMaxMs, 60000);
  assert.equal(config.mqtt.clientId, undefined);
  assert.equal(config.pipeline.transform, "ammp");
  assert.equal(config.pipeline.missingVid, "reject");
  assert.equal(config.pipeline.maxPayloadBytes, 262144);
  assert.deepEqual(config.pipeline.recordMeta, []);
  assert.equal(config.pipeline.topicNodeLevel, 1);
  assert.deepEqual(config.sinks.names, ["stdout"]);
  assert.equal(config.sinks.stdoutFormat, "auto");
  assert.equal(config.sinks.filePath, "./data/readings.jsonl");
  assert.equal(config.dataDir, "./data");
  assert.equal(config.deadLetterPath, "./data/dead-letter.jsonl");
  assert.equal(config.shutdownTimeoutMs, 10000);
  assert.equal(config.logLevel, "info");
  assert.equal(config.logFormat, "auto");
  assert.equal(config.httpPort, undefined);
});

Deno.test("the config is frozen", () => {
  const config = parseConfig(BROKER);
  assert.throws(() => {
    (config.mqtt as { qos: number }).qos = 2;
  }, TypeError);
});

Deno.test("DEAD_LETTER_PATH follows DATA_DIR unless set", () => {
  assert.equal(
    parseConfig({ ...BROKER, DATA_DIR: "/var/lib/gridrelay" }).deadLetterPath,
    "/var/lib/gridrelay/dead-letter.jsonl",
  );
  assert.equal(
    parseConfig({ ...BROKER, DEAD_LETTER_PATH: "/tmp/dl.jsonl" }).deadLetterPath,
    "/tmp/dl.jsonl",
  );
});

Deno.test("lists are split on commas and trimmed", () => {
  const config = parseConfig({
    ...BROKER,
    MQTT_TOPICS: "a/+/u/data, b/#",
    SINKS: "stdout, file,./sinks/my_sink.ts",
    RECORD_META: "node_id,received_at",
  });
  assert.deepEqual(config.mqtt.topics, ["a/+/u/data", "b/#"]);
  assert.deepEqual(config.sinks.names, ["stdout", "file", "./sinks/my_sink.ts"]);
  assert.deepEqual(config.pipeline.recordMeta, ["node_id", "received_at"]);
});

Deno.test("empty values count as unset", () => {
  assert.equal(parseConfig({ ...BROKER, MQTT_QOS: "", HTTP_PORT: " " }).mqtt.qos, 1);
});

const INVALID: Array<[string, Environment, RegExp]> = [
  ["missing MQTT_URL", {}, /^MQTT_URL is missing: expected the broker URL/],
  [
    "MQTT_URL with another scheme",
    { MQTT_URL: "http://broker" },
    /^MQTT_URL="http:\/\/broker" is invalid: expected a URL starting with mqtt:\/\//,
  ],
  ["MQTT_URL that is no URL", { MQTT_URL: "broker:1883x" }, /^MQTT_URL=.* is invalid/],
  ["MQTT_QOS 3", { ...BROKER, MQTT_QOS: "3" }, /^MQTT_QOS="3" is invalid: expected 0, 1 or 2$/],
  [
    "MQTT_PROTOCOL_VERSION 3",
    { ...BROKER, MQTT_PROTOCOL_VERSION: "3" },
    /^MQTT_PROTOCOL_VERSION="3" is invalid: expected 4 or 5$/,
  ],
  [
    "MQTT_CLEAN_SESSION maybe",
    { ...BROKER, MQTT_CLEAN_SESSION: "maybe" },
    /^MQTT_CLEAN_SESSION="maybe" is invalid: expected true or false$/,
  ],
  [
    "negative MQTT_CONNECT_ATTEMPTS",
    { ...BROKER, MQTT_CONNECT_ATTEMPTS: "-1" },
    /^MQTT_CONNECT_ATTEMPTS="-1" is invalid: expected a whole number/,
  ],
  ["MQTT_RECONNECT_MAX_MS below the minimum", {
    ...BROKER,
    MQTT_RECONNECT_MIN_MS: "5000",
    MQTT_RECONNECT_MAX_MS: "100",
  }, /^MQTT_RECONNECT_MAX_MS="100" is invalid: expected at least MQTT_RECONNECT_MIN_MS/],
  [
    "a topic filter with # inside",
    { ...BROKER, MQTT_TOPICS: "a/#/data" },
    /^MQTT_TOPICS="a\/#\/data" is invalid: expected valid MQTT topic filters/,
  ],
  [
    "a share group with a slash",
    { ...BROKER, MQTT_SHARE_GROUP: "a/b" },
    /^MQTT_SHARE_GROUP="a\/b" is invalid/,
  ],
  [
    "TRANSFORM unknown",
    { ...BROKER, TRANSFORM: "csv" },
    /^TRANSFORM="csv" is invalid: expected ammp or raw$/,
  ],
  [
    "MISSING_VID unknown",
    { ...BROKER, MISSING_VID: "keep" },
    /^MISSING_VID="keep" is invalid: expected reject, drop or device$/,
  ],
  [
    "MAX_PAYLOAD_BYTES not a number",
    { ...BROKER, MAX_PAYLOAD_BYTES: "256k" },
    /^MAX_PAYLOAD_BYTES="256k" is invalid: expected a whole number/,
  ],
  [
    "RECORD_META unknown key",
    { ...BROKER, RECORD_META: "node_id,site" },
    /^RECORD_META="node_id,site" is invalid: .*"site" is not one/,
  ],
  [
    "SINKS unknown name",
    { ...BROKER, SINKS: "stdout,kafka" },
    /^SINKS="stdout,kafka" is invalid: .*"kafka" is none of these/,
  ],
  ["SINKS listing a sink twice", { ...BROKER, SINKS: "file,file" }, /"file" is listed twice/],
  ["webhook without WEBHOOK_URL", { ...BROKER, SINKS: "webhook" }, /^WEBHOOK_URL is missing/],
  [
    "WEBHOOK_URL not http",
    { ...BROKER, SINKS: "webhook", WEBHOOK_URL: "ftp://x" },
    /^WEBHOOK_URL="ftp:\/\/x" is invalid: expected an http:\/\/ or https:\/\/ URL$/,
  ],
  [
    "WEBHOOK_HEADERS not a JSON object",
    { ...BROKER, WEBHOOK_HEADERS: "Authorization: Bearer abc" },
    /^WEBHOOK_HEADERS="\*\*\*" is invalid: expected a JSON object of header names/,
  ],
  [
    "STDOUT_FORMAT unknown",
    { ...BROKER, STDOUT_FORMAT: "csv" },
    /^STDOUT_FORMAT="csv" is invalid: expected jsonl, pretty or auto$/,
  ],
  [
    "LOG_LEVEL unknown",
    { ...BROKER, LOG_LEVEL: "verbose" },
    /^LOG_LEVEL="verbose" is invalid: expected debug, info, warning or error$/,
  ],
  [
    "LOG_FORMAT unknown",
    { ...BROKER, LOG_FORMAT: "xml" },
    /^LOG_FORMAT="xml" is invalid: expected json, pretty or auto$/,
  ],
  [
    "HTTP_PORT out of range",
    { ...BROKER, HTTP_PORT: "70000" },
    /^HTTP_PORT="70000" is invalid: expected a whole number, 0 to 65535$/,
  ],
  [
    "a certificate without its key",
    { ...BROKER, MQTT_CERT_FILE: "/c.pem" },
    /^MQTT_KEY_FILE is missing: mutual TLS needs both/,
  ],
  [
    "a password without a user name",
    { ...BROKER, MQTT_PASSWORD: "hunter2" },
    /^MQTT_USERNAME is missing/,
  ],
];

for (const [name, env, expected] of INVALID) {
  Deno.test(`config error: ${name}`, () => {
    const error = configError(env);
    assert.match(error.message, expected);
  });
}

Deno.test("a config error names the variable", () => {
  assert.equal(configError({ ...BROKER, MQTT_QOS: "7" }).variable, "MQTT_QOS");
});

Deno.test("secrets are masked in config errors", () => {
  const error = configError({ MQTT_URL: "mqtt://user:hunter2@broker:1883", MQTT_QOS: "9" });
  assert.equal(error.variable, "MQTT_QOS");
  const urlError = configError({ MQTT_URL: "http://user:hunter2@broker" });
  assert.doesNotMatch(urlError.message, /hunter2/);
  assert.match(urlError.message, /user:\*\*\*@broker/);
});

Deno.test("maskUrl hides only the password", () => {
  assert.equal(maskUrl("mqtts://user:s3cret@broker:8883"), "mqtts://user:***@broker:8883");
  assert.equal(maskUrl("mqtt://broker:1883"), "mqtt://broker:1883");
});

Deno.test(".env.example documents every variable, with its default", async () => {
  const example = await Deno.readTextFile(new URL("../.env.example", import.meta.url));
  const documented = new Map(
    [...example.matchAll(/^([A-Z_0-9]+)=(.*)$/gm)].map(([, name, value]) => [name, value]),
  );
  assert.deepEqual([...documented.keys()].sort(), [...CONFIG_VARIABLES].sort());
  // Every documented default is a valid value, and parsing the file as-is gives the built-in defaults.
  const fromExample = parseConfig({ ...Object.fromEntries(documented), ...BROKER });
  const builtIn = parseConfig(BROKER);
  assert.deepEqual(fromExample, builtIn);
});

Deno.test("WEBHOOK_HEADERS is read as a JSON object of headers", () => {
  const config = parseConfig({
    ...BROKER,
    WEBHOOK_HEADERS: '{"Authorization":"Bearer abc","X-Site":"7"}',
  });
  assert.deepEqual(config.sinks.webhookHeaders, { Authorization: "Bearer abc", "X-Site": "7" });
  assert.equal(config.sinks.webhookBatchSize, 1);
  assert.equal(config.sinks.webhookTimeoutMs, 10000);
});

Deno.test("the README's configuration table names every variable", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const table = readme.slice(readme.indexOf("## Configuration"), readme.indexOf("## The record"));
  const missing = CONFIG_VARIABLES.filter((name) => !table.includes(`\`${name}\``));
  assert.deepEqual(missing, []);
});
