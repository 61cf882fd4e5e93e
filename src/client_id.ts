/**
 * The default MQTT client id: made once, kept in `DATA_DIR`, so the broker
 * finds the same persistent session after every restart, and two workers with
 * their own data directories never share an id.
 * @module
 */

const FILE_NAME = "client-id";

/**
 * The configured client id, or the one kept in `dataDir` (created on first
 * use as `gridrelay-<host>-<random>`).
 *
 * @example
 * ```ts
 * const clientId = await resolveClientId(undefined, "./data"); // "gridrelay-web1-3f9a2c7d"
 * ```
 */
export async function resolveClientId(
  configured: string | undefined,
  dataDir: string,
): Promise<string> {
  if (configured) return configured;
  const path = `${dataDir}/${FILE_NAME}`;
  try {
    const kept = (await Deno.readTextFile(path)).trim();
    if (kept) return kept;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const host = hostName().replace(/[^A-Za-z0-9-]/g, "").slice(0, 20) || "host";
  const random = crypto.getRandomValues(new Uint8Array(4));
  const id = `gridrelay-${host}-${
    Array.from(random, (b) => b.toString(16).padStart(2, "0")).join("")
  }`;
  await Deno.writeTextFile(path, id + "\n");
  return id;
}

function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    // Without --allow-sys=hostname the id is still unique, just less telling.
    return "host";
  }
}
