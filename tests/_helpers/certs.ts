/**
 * Throw-away PKI for TLS tests, made with the `openssl` CLI in a temp dir: a
 * CA, a server certificate for localhost/127.0.0.1, a client certificate for
 * mutual TLS, and a second CA that signed nothing (to prove verification).
 * @module
 */

/**
 * Paths of the PEM files of one test PKI. Every key is unencrypted EC P-256.
 *
 * @example
 * ```ts
 * const env = { MQTT_CA_FILE: certificates.caFile, MQTT_CERT_FILE: certificates.clientCertFile };
 * ```
 */
export interface Certificates {
  /** The temp dir holding every file. */
  dir: string;
  /** The CA that signed the server and client certificates. */
  caFile: string;
  /** The CA's private key, to sign more certificates in a test. */
  caKeyFile: string;
  /** Server certificate, CN `localhost`, subjectAltName `DNS:localhost,IP:127.0.0.1`. */
  serverCertFile: string;
  /** The server certificate's private key. */
  serverKeyFile: string;
  /** Client certificate (CN `gridrelay-test-client`, clientAuth), signed by the same CA. */
  clientCertFile: string;
  /** The client certificate's private key. */
  clientKeyFile: string;
  /** A different self-signed CA that did NOT sign the server certificate. */
  untrustedCaFile: string;
}

/**
 * {@linkcode Certificates} that own their temp dir: `remove()` or `await using` deletes it.
 *
 * @example
 * ```ts
 * await using certificates = await createCertificates();
 * await using broker = await startBroker({ tls: "server", certificates });
 * ```
 */
export interface OwnedCertificates extends Certificates, AsyncDisposable {
  /** Deletes the temp dir and every file in it. Safe to call twice. */
  remove(): Promise<void>;
}

/** How long generated certificates are valid: long enough for any test run, never forever. */
const VALID_DAYS = "2";

const CA_EXTENSIONS = [
  "-addext",
  "basicConstraints=critical,CA:TRUE",
  "-addext",
  "keyUsage=critical,keyCertSign,cRLSign",
];

// rustls (behind Deno's TLS) and OpenSSL 3 both insist on v3 leaf certificates
// with a subjectAltName; the CN alone is not checked by either.
const SERVER_EXTENSIONS = [
  "basicConstraints=critical,CA:FALSE",
  "keyUsage=critical,digitalSignature,keyEncipherment",
  "extendedKeyUsage=serverAuth",
  "subjectAltName=DNS:localhost,IP:127.0.0.1",
  "subjectKeyIdentifier=hash",
  "authorityKeyIdentifier=keyid",
].join("\n");

const CLIENT_EXTENSIONS = [
  "basicConstraints=critical,CA:FALSE",
  "keyUsage=critical,digitalSignature,keyEncipherment",
  "extendedKeyUsage=clientAuth",
  "subjectKeyIdentifier=hash",
  "authorityKeyIdentifier=keyid",
].join("\n");

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/**
 * Creates a fresh test PKI in a new temp dir (about 50 ms with EC keys).
 * Requires the `openssl` CLI on PATH.
 *
 * @example
 * ```ts
 * await using certificates = await createCertificates();
 * const ca = await Deno.readTextFile(certificates.caFile);
 * ```
 */
export async function createCertificates(): Promise<OwnedCertificates> {
  const dir = await Deno.makeTempDir({ prefix: "gridrelay-certs-" });
  const path = (name: string) => `${dir}/${name}`;
  const certificates: OwnedCertificates = {
    dir,
    caFile: path("ca.crt"),
    caKeyFile: path("ca.key"),
    serverCertFile: path("server.crt"),
    serverKeyFile: path("server.key"),
    clientCertFile: path("client.crt"),
    clientKeyFile: path("client.key"),
    untrustedCaFile: path("untrusted-ca.crt"),
    remove: () => Deno.remove(dir, { recursive: true }).catch(ignoreNotFound),
    [Symbol.asyncDispose]: () => certificates.remove(),
  };
  try {
    await Promise.all([
      selfSignedCa(certificates.caFile, certificates.caKeyFile, "gridrelay test CA"),
      selfSignedCa(certificates.untrustedCaFile, path("untrusted-ca.key"), "untrusted CA"),
    ]);
    await Deno.writeTextFile(path("server.ext"), SERVER_EXTENSIONS);
    await Deno.writeTextFile(path("client.ext"), CLIENT_EXTENSIONS);
    await Promise.all([
      signedCertificate(certificates, {
        commonName: "localhost",
        certFile: certificates.serverCertFile,
        keyFile: certificates.serverKeyFile,
        extensionsFile: path("server.ext"),
      }),
      signedCertificate(certificates, {
        commonName: "gridrelay-test-client",
        certFile: certificates.clientCertFile,
        keyFile: certificates.clientKeyFile,
        extensionsFile: path("client.ext"),
      }),
    ]);
  } catch (error) {
    await certificates.remove();
    throw error;
  }
  return certificates;
}

function selfSignedCa(certFile: string, keyFile: string, commonName: string): Promise<void> {
  return openssl([
    "req",
    "-x509",
    ...EC_KEY,
    "-keyout",
    keyFile,
    "-out",
    certFile,
    "-days",
    VALID_DAYS,
    "-subj",
    `/CN=${commonName}`,
    ...CA_EXTENSIONS,
  ]);
}

interface LeafOptions {
  commonName: string;
  certFile: string;
  keyFile: string;
  extensionsFile: string;
}

async function signedCertificate(ca: Certificates, leaf: LeafOptions): Promise<void> {
  const requestFile = `${leaf.certFile}.csr`;
  await openssl([
    "req",
    "-new",
    ...EC_KEY,
    "-keyout",
    leaf.keyFile,
    "-out",
    requestFile,
    "-subj",
    `/CN=${leaf.commonName}`,
  ]);
  await openssl([
    "x509",
    "-req",
    "-in",
    requestFile,
    "-CA",
    ca.caFile,
    "-CAkey",
    ca.caKeyFile,
    // A random serial instead of -CAcreateserial: two certificates signed in
    // parallel would otherwise race on the shared serial file.
    "-set_serial",
    `0x${randomHex(8)}`,
    "-days",
    VALID_DAYS,
    "-extfile",
    leaf.extensionsFile,
    "-out",
    leaf.certFile,
  ]);
}

async function openssl(args: string[]): Promise<void> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("openssl", { args, stdin: "null" }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        "The `openssl` CLI is not on PATH; the TLS tests need it to make certificates. " +
          "Install it with `apt-get install -y openssl`.",
        { cause: error },
      );
    }
    throw error;
  }
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr).trim();
    throw new Error(
      `openssl ${args.slice(0, 2).join(" ")} failed (exit ${output.code}): ${stderr}`,
    );
  }
}

function randomHex(bytes: number): string {
  const buffer = crypto.getRandomValues(new Uint8Array(bytes));
  // A clear top bit keeps the serial a positive integer, as RFC 5280 requires.
  buffer[0] &= 0x7f;
  return Array.from(buffer, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function ignoreNotFound(error: unknown): void {
  if (!(error instanceof Deno.errors.NotFound)) throw error;
}
