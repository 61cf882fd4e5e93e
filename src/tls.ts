/**
 * Reads the TLS material the configuration points at: the CA to trust (a PEM
 * file, or an `https://` URL fetched once over verified TLS and cached in
 * `DATA_DIR`), and the client certificate and key for mutual TLS.
 * @module
 */

import { getLogger } from "@logtape/logtape";
import { ConfigError, type MqttConfig } from "./config.ts";

/** PEM texts for the MQTT client. */
export interface TlsMaterial {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
}

const CA_CACHE_FILE = "mqtt-ca.pem";

/**
 * Loads the files named by `MQTT_CA_FILE`, `MQTT_CERT_FILE` and
 * `MQTT_KEY_FILE`. A file that cannot be read is a {@linkcode ConfigError}
 * naming the variable and the path.
 *
 * @example
 * ```ts
 * const tls = await loadTls(config.mqtt, { dataDir: config.dataDir });
 * ```
 */
export async function loadTls(
  mqtt: MqttConfig,
  options: { dataDir: string },
): Promise<TlsMaterial> {
  const ca = mqtt.caFile?.startsWith("https://")
    ? await fetchCa(mqtt.caFile, options.dataDir)
    : await readPem("MQTT_CA_FILE", mqtt.caFile);
  const cert = await readPem("MQTT_CERT_FILE", mqtt.certFile);
  const key = await readPem("MQTT_KEY_FILE", mqtt.keyFile);
  if (mqtt.keyFile) await warnIfReadableByOthers(mqtt.keyFile);
  return { ca, cert, key };
}

async function readPem(variable: string, path: string | undefined): Promise<string | undefined> {
  if (path === undefined) return undefined;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new ConfigError(
      variable,
      `${variable}="${path}" cannot be read: ${explain(error, path)}`,
    );
  }
  if (!text.includes("-----BEGIN ")) {
    throw new ConfigError(
      variable,
      `${variable}="${path}" is invalid: expected a PEM file (-----BEGIN …)`,
    );
  }
  return text;
}

async function fetchCa(url: string, dataDir: string): Promise<string> {
  const cachePath = `${dataDir}/${CA_CACHE_FILE}`;
  const log = getLogger(["gridrelay", "tls"]);
  try {
    const cached = await Deno.readTextFile(`${cachePath}.url`);
    if (cached.trim() === url) return await Deno.readTextFile(cachePath);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  let text: string;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(30_000) });
    if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`);
    text = await response.text();
  } catch (error) {
    throw new ConfigError(
      "MQTT_CA_FILE",
      `MQTT_CA_FILE="${url}" could not be fetched: ${
        error instanceof Error ? error.message : error
      }`,
    );
  }
  if (!text.includes("-----BEGIN CERTIFICATE-----")) {
    throw new ConfigError(
      "MQTT_CA_FILE",
      `MQTT_CA_FILE="${url}" is invalid: the response is not a PEM certificate`,
    );
  }
  await Deno.writeTextFile(cachePath, text);
  await Deno.writeTextFile(`${cachePath}.url`, url + "\n");
  log.info("Fetched the broker CA from {url} and cached it in {path}", { url, path: cachePath });
  return text;
}

async function warnIfReadableByOthers(path: string): Promise<void> {
  const mode = (await Deno.stat(path)).mode;
  if (mode !== null && (mode & 0o077) !== 0) {
    getLogger(["gridrelay", "tls"]).warn(
      "The private key {path} can be read by other users (mode {mode}); restrict it with: chmod 600 {path}",
      { path, mode: (mode & 0o777).toString(8) },
    );
  }
}

/**
 * A file-system error as a short sentence. When Deno's permissions are the
 * cause it names the flag; `deno task start` grants it by itself for every path
 * the configuration names, so seeing this means the worker was run another way.
 */
export function explain(error: unknown, path: string, access: "read" | "write" = "read"): string {
  if (error instanceof Deno.errors.NotFound) return "no such file or folder";
  if (error instanceof Deno.errors.NotCapable) {
    return `Deno's permissions do not allow it (${error.message}); run the worker with deno task start, which grants what the configuration needs, or add --allow-${access}=${path} (a compiled binary must be rebuilt with deno task compile)`;
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return `the operating system refused it (${error.message}); check the owner and mode of ${path}`;
  }
  return error instanceof Error ? error.message : String(error);
}

/**
 * Whether an error's text (its code, message or innermost cause) says the
 * peer's TLS certificate was not accepted: rustls, behind Deno's `fetch` and
 * `Deno.connectTls`, and OpenSSL-style codes word it differently.
 *
 * @example
 * ```ts
 * namesCertificateProblem("invalid peer certificate: UnknownIssuer"); // true
 * ```
 */
export function namesCertificateProblem(text: string): boolean {
  return /certificate|UnknownIssuer|self[- ]signed|CERT_|unable to verify|NotValidForName|BadSignature|Expired/i
    .test(text);
}
