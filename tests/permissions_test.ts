/**
 * Configuration → Deno permission flags (src/permissions.ts), and the
 * launcher's pure parts (scripts/start.ts): reading `.env`, and the `deno`
 * command it builds. No process is started here; tests/operations_test.ts
 * runs the worker under these flags.
 */

import assert from "node:assert/strict";
import { CONFIG_VARIABLES, ConfigError, parseConfig } from "../src/config.ts";
import {
  addPermissions,
  PermissionFlagError,
  permissionFlags,
  RUNTIME_VARIABLES,
  workerPermissions,
} from "../src/permissions.ts";
import {
  EnvFileError,
  launcherArguments,
  parseEnvFile,
  workerCommand,
  workerEnvironment,
} from "../scripts/start.ts";

const CWD = "/srv/gridrelay";

function permissionsFor(env: Record<string, string>, options: { cwd?: string } = { cwd: CWD }) {
  return workerPermissions(parseConfig(env), options);
}

Deno.test("the broker's host and port are the only network grant by default", () => {
  assert.deepEqual(permissionsFor({ MQTT_URL: "mqtt://broker.example.com:1884" }).net, [
    "broker.example.com:1884",
  ]);
});

Deno.test("a broker URL without a port is granted the scheme's default port", () => {
  const net = (url: string) => permissionsFor({ MQTT_URL: url }).net;
  assert.deepEqual(net("mqtt://broker"), ["broker:1883"]);
  assert.deepEqual(net("mqtts://broker"), ["broker:8883"]);
  assert.deepEqual(net("ws://broker/mqtt"), ["broker:80"]);
  assert.deepEqual(net("wss://broker/mqtt"), ["broker:443"]);
});

Deno.test("localhost, an IP address and an IPv6 literal are granted as written", () => {
  // Deno treats localhost and 127.0.0.1 as different hosts, so neither is rewritten.
  const net = (url: string) => permissionsFor({ MQTT_URL: url }).net;
  assert.deepEqual(net("mqtts://localhost:8883"), ["localhost:8883"]);
  assert.deepEqual(net("mqtt://127.0.0.1:1883"), ["127.0.0.1:1883"]);
  assert.deepEqual(net("mqtt://[::1]:1883"), ["[::1]:1883"]);
});

Deno.test("HTTP_PORT adds 0.0.0.0:<port>, where /healthz, /readyz and /metrics listen", () => {
  const { net } = permissionsFor({ MQTT_URL: "mqtt://broker:1883", HTTP_PORT: "9464" });
  assert.deepEqual(net, ["broker:1883", "0.0.0.0:9464"]);
});

Deno.test("the webhook's host and port are granted only when SINKS lists webhook", () => {
  const env = { MQTT_URL: "mqtt://broker", WEBHOOK_URL: "https://ingest.example.com/hook" };
  assert.deepEqual(permissionsFor({ ...env, SINKS: "stdout" }).net, ["broker:1883"]);
  assert.deepEqual(permissionsFor({ ...env, SINKS: "webhook" }).net, [
    "broker:1883",
    "ingest.example.com:443",
  ]);
  assert.deepEqual(
    permissionsFor({ ...env, SINKS: "webhook", WEBHOOK_URL: "http://10.0.0.5:8080/in" }).net,
    ["broker:1883", "10.0.0.5:8080"],
  );
});

Deno.test("DATA_DIR is readable and writable, made absolute against the working directory", () => {
  const permissions = permissionsFor({ MQTT_URL: "mqtt://broker" });
  assert.deepEqual(permissions.read, ["/srv/gridrelay/data"]);
  assert.deepEqual(permissions.write, ["/srv/gridrelay/data"]);
  const moved = permissionsFor({ MQTT_URL: "mqtt://broker", DATA_DIR: "/var/lib/gridrelay" });
  assert.deepEqual(moved.read, ["/var/lib/gridrelay"]);
  assert.deepEqual(moved.write, ["/var/lib/gridrelay"]);
});

Deno.test("without a working directory, relative paths stay relative", () => {
  const permissions = permissionsFor({ MQTT_URL: "mqtt://broker", DATA_DIR: "./state" }, {});
  assert.deepEqual(permissions.write, ["./state"]);
});

Deno.test("the file sink's folder is granted only when SINKS lists file", () => {
  const env = { MQTT_URL: "mqtt://broker", DATA_DIR: "/state", FILE_PATH: "/out/readings.jsonl" };
  assert.deepEqual(permissionsFor({ ...env, SINKS: "stdout" }).write, ["/state"]);
  const withFile = permissionsFor({ ...env, SINKS: "stdout,file" });
  assert.deepEqual(withFile.write, ["/state", "/out"]);
  assert.deepEqual(withFile.read, ["/state", "/out"]);
});

Deno.test("a dead-letter file outside DATA_DIR adds its folder", () => {
  const permissions = permissionsFor({
    MQTT_URL: "mqtt://broker",
    DATA_DIR: "/state",
    DEAD_LETTER_PATH: "/var/log/gridrelay/dead-letter.jsonl",
  });
  assert.deepEqual(permissions.write, ["/state", "/var/log/gridrelay"]);
});

Deno.test("CA, certificate and key files are readable, and nothing else of theirs", () => {
  const permissions = permissionsFor({
    MQTT_URL: "mqtts://broker",
    DATA_DIR: "/state",
    MQTT_CA_FILE: "/etc/gridrelay/ca.pem",
    MQTT_CERT_FILE: "certs/client.pem",
    MQTT_KEY_FILE: "certs/client.key",
  });
  assert.deepEqual(permissions.read, [
    "/state",
    "/etc/gridrelay/ca.pem",
    "/srv/gridrelay/certs/client.pem",
    "/srv/gridrelay/certs/client.key",
  ]);
  assert.deepEqual(permissions.write, ["/state"]);
});

Deno.test("an https:// MQTT_CA_FILE is fetched: its host is granted, no file is read", () => {
  const permissions = permissionsFor({
    MQTT_URL: "mqtts://broker",
    DATA_DIR: "/state",
    MQTT_CA_FILE: "https://pki.example.com/ca.pem",
  });
  assert.deepEqual(permissions.net, ["broker:8883", "pki.example.com:443"]);
  assert.deepEqual(permissions.read, ["/state"]);
});

Deno.test("a custom sink module path is readable; a module URL's host may be imported", () => {
  const permissions = permissionsFor({
    MQTT_URL: "mqtt://broker",
    DATA_DIR: "/state",
    SINKS: "./sinks/my_sink.ts,https://sinks.example.com/kafka.ts",
  });
  assert.deepEqual(permissions.read, ["/state", "/srv/gridrelay/sinks/my_sink.ts"]);
  assert.deepEqual(permissions.import, ["sinks.example.com"]);
});

Deno.test("MQTTJS_SOCKS_PROXY in the environment grants the proxy", () => {
  const permissions = workerPermissions(parseConfig({ MQTT_URL: "mqtt://broker" }), {
    env: { MQTTJS_SOCKS_PROXY: "socks5://proxy.internal:1080" },
  });
  assert.deepEqual(permissions.net, ["broker:1883", "proxy.internal:1080"]);
});

Deno.test("env grants exactly the configuration's variables and Deno's OTEL switches", () => {
  const { env, sys } = permissionsFor({ MQTT_URL: "mqtt://broker" });
  assert.deepEqual(env, [...CONFIG_VARIABLES, ...RUNTIME_VARIABLES]);
  assert.ok(env.includes("OTEL_DENO"));
  assert.deepEqual(sys, ["hostname"]);
});

Deno.test("the flags are scoped: never -A, --allow-run, --allow-ffi or an unscoped grant", () => {
  const flags = permissionFlags(permissionsFor({
    MQTT_URL: "mqtt://broker:1883",
    SINKS: "stdout,file",
    HTTP_PORT: "9464",
  }));
  assert.deepEqual(flags.slice(0, 4), [
    "--no-prompt",
    "--allow-net=broker:1883,0.0.0.0:9464",
    "--allow-read=/srv/gridrelay/data",
    "--allow-write=/srv/gridrelay/data",
  ]);
  assert.ok(flags.includes("--ignore-env"));
  assert.ok(flags.includes("--allow-sys=hostname"));
  for (const flag of flags) {
    assert.doesNotMatch(flag, /^(-A|--allow-all|--allow-run|--allow-ffi)/);
    if (flag.startsWith("--allow-")) assert.match(flag, /^--allow-[a-z]+=\S+$/, flag);
  }
  assert.ok(!flags.some((flag) => flag.startsWith("--allow-import")), "no module URL, no import");
});

Deno.test("an operator's extra scoped grants are merged into the lists", () => {
  const base = permissionsFor({ MQTT_URL: "mqtt://broker" });
  const more = addPermissions(base, [
    "--allow-net=api.example.com:443,broker:1883",
    "--allow-env=DEBUG",
  ]);
  assert.deepEqual(more.net, ["broker:1883", "api.example.com:443"]);
  assert.equal(more.env.at(-1), "DEBUG");
});

Deno.test("extra flags that widen the worker beyond scoped grants are refused with a reason", () => {
  const base = permissionsFor({ MQTT_URL: "mqtt://broker" });
  for (const flag of ["-A", "--allow-all", "--allow-run=sh", "--allow-ffi", "--allow-net"]) {
    assert.throws(() => addPermissions(base, [flag]), (error: Error) => {
      assert.ok(error instanceof PermissionFlagError);
      assert.match(error.message, new RegExp(`"${flag}" is not accepted: .*scoped grants`));
      return true;
    });
  }
});

Deno.test(".env: NAME=value lines, export, comments, quotes and escapes", () => {
  const text = [
    "# gridrelay",
    "",
    "MQTT_URL=mqtt://broker:1883   # the local one",
    "export MQTT_TOPICS=a/+/u/data",
    "MQTT_PASSWORD='p#ss $word'",
    'WEBHOOK_HEADERS="{\\"Authorization\\":\\"Bearer x\\"}"',
    'MULTI="one\\ntwo"',
    "EMPTY=",
    "HASH=a#b",
  ].join("\n");
  assert.deepEqual(parseEnvFile(text), {
    MQTT_URL: "mqtt://broker:1883",
    MQTT_TOPICS: "a/+/u/data",
    MQTT_PASSWORD: "p#ss $word",
    WEBHOOK_HEADERS: '{"Authorization":"Bearer x"}',
    MULTI: "one\ntwo",
    EMPTY: "",
    HASH: "a#b",
  });
});

Deno.test(".env: ${NAME} and $NAME take values set above or in the environment", () => {
  const text = 'DIR=/var/lib/gridrelay\nFILE_PATH=${DIR}/readings.jsonl\nX="$HOME/x \\$HOME"\n';
  assert.deepEqual(parseEnvFile(text, { HOME: "/root" }), {
    DIR: "/var/lib/gridrelay",
    FILE_PATH: "/var/lib/gridrelay/readings.jsonl",
    X: "/root/x $HOME",
  });
});

Deno.test(".env: a line that is not NAME=value is an error naming the line", () => {
  assert.throws(() => parseEnvFile("MQTT_URL=mqtt://b\nnonsense\n"), (error: Error) => {
    assert.ok(error instanceof EnvFileError);
    assert.equal(error.message, '.env line 2 is invalid: expected NAME=value, got "nonsense"');
    return true;
  });
  assert.throws(
    () => parseEnvFile('A="open'),
    /line 1 is invalid: the value's " quote is not closed/,
  );
});

Deno.test("the launcher's command runs mod.ts under the computed flags and the repository's config", () => {
  const { args } = workerCommand({ MQTT_URL: "mqtt://127.0.0.1:1883", HOME: "/root" }, {
    cwd: "/tmp/w",
  });
  assert.equal(args[0], "run");
  assert.deepEqual(args.slice(1, 3), [
    "--config",
    new URL("../deno.json", import.meta.url).pathname,
  ]);
  assert.equal(args.at(-1), new URL("../mod.ts", import.meta.url).pathname);
  assert.ok(args.includes("--allow-net=127.0.0.1:1883"));
  assert.ok(args.includes("--allow-write=/tmp/w/data"));
});

Deno.test("the worker runs with one malloc arena unless the operator says otherwise", () => {
  const env = { MQTT_URL: "mqtt://127.0.0.1:1883" };
  assert.deepEqual(workerEnvironment(env), { ...env, MALLOC_ARENA_MAX: "1" });
  assert.equal(workerEnvironment({ ...env, MALLOC_ARENA_MAX: "4" }).MALLOC_ARENA_MAX, "4");
});

Deno.test("the launcher refuses an invalid configuration with the worker's ConfigError", () => {
  assert.throws(
    () => workerCommand({ MQTT_URL: "mqtt://b", MQTT_QOS: "3" }, { cwd: "/tmp" }),
    (error: Error) =>
      error instanceof ConfigError &&
      error.message === 'MQTT_QOS="3" is invalid: expected 0, 1 or 2',
  );
});

Deno.test("compiling bakes the same flags into the binary and includes local sink modules", () => {
  const env = { MQTT_URL: "mqtt://broker", SINKS: "stdout,./my_sink.ts" };
  const run = workerCommand(env, { cwd: "/srv/g" }).args;
  const compile = workerCommand(env, { cwd: "/srv/g", compileTo: "dist/gridrelay" }).args;
  assert.equal(compile[0], "compile");
  const flags = (args: string[]) => args.filter((arg) => arg.startsWith("--allow-"));
  assert.deepEqual(flags(compile), flags(run));
  assert.equal(compile[compile.indexOf("--include") + 1], "/srv/g/my_sink.ts");
  assert.equal(compile[compile.indexOf("--output") + 1], "/srv/g/dist/gridrelay");
  assert.equal(compile.at(-1), new URL("../mod.ts", import.meta.url).pathname);
});

Deno.test("the launcher's own arguments are told apart from extra grants for the worker", () => {
  assert.deepEqual(
    launcherArguments([
      "--compile",
      "--output=bin/gridrelay",
      "--env-file=/etc/gridrelay/gridrelay.env",
      "--allow-net=api.example.com",
    ]),
    {
      compile: true,
      output: "bin/gridrelay",
      envFile: "/etc/gridrelay/gridrelay.env",
      extraFlags: ["--allow-net=api.example.com"],
    },
  );
  assert.deepEqual(launcherArguments([]), {
    compile: false,
    output: undefined,
    envFile: undefined,
    extraFlags: [],
  });
});

Deno.test(".env.example, copied to .env with MQTT_URL set, is read and accepted as it stands", async () => {
  const text = await Deno.readTextFile(new URL("../.env.example", import.meta.url));
  const env = parseEnvFile(text.replace(/^MQTT_URL=$/m, "MQTT_URL=mqtts://broker.example.com"));
  for (const name of CONFIG_VARIABLES) assert.ok(name in env, `${name} is in .env.example`);
  const { permissions } = workerCommand(env, { cwd: "/srv/g" });
  assert.deepEqual(permissions.net, ["broker.example.com:8883"]);
  assert.deepEqual(permissions.write, ["/srv/g/data"]);
});
