/**
 * Integration tests need real programs (mosquitto, openssl). Locally a missing
 * one skips the test with a message saying what to install; under CI it fails
 * the test with that message, so CI can never go green by skipping.
 * @module
 */

/** Programs the integration tests run, and how to get each on Debian/Ubuntu. */
const INSTALL_HINTS: Record<string, string> = {
  mosquitto: "apt-get install -y mosquitto",
  mosquitto_passwd: "apt-get install -y mosquitto (it ships mosquitto_passwd)",
  mosquitto_pub: "apt-get install -y mosquitto-clients",
  mosquitto_sub: "apt-get install -y mosquitto-clients",
  openssl: "apt-get install -y openssl",
};

/**
 * The tools a broker-backed test needs by default: the broker, its password tool, and openssl for TLS.
 *
 * @example
 * ```ts
 * integrationTest({ name: "…", requires: [...BROKER_TOOLS, "mosquitto_pub"], fn: async () => {} });
 * ```
 */
export const BROKER_TOOLS: readonly string[] = ["mosquitto", "mosquitto_passwd", "openssl"];

/**
 * Whether this run is under CI (`CI` set to anything but `""`, `0` or `false`),
 * where missing tools fail tests instead of skipping them.
 *
 * @example
 * ```ts
 * if (isCi()) console.log("strict mode: no skips");
 * ```
 */
export function isCi(): boolean {
  const value = Deno.env.get("CI")?.trim().toLowerCase();
  return value !== undefined && value !== "" && value !== "0" && value !== "false";
}

const found = new Map<string, boolean>();

/**
 * The subset of `tools` that is not an executable file on PATH. Cached.
 *
 * @example
 * ```ts
 * missingTools(["mosquitto", "openssl"]); // [] when both are installed
 * ```
 */
export function missingTools(tools: readonly string[]): string[] {
  return tools.filter((tool) => {
    if (!found.has(tool)) found.set(tool, onPath(tool));
    return !found.get(tool);
  });
}

/** What is missing and how to install it, in one message. */
function missingMessage(missing: string[]): string {
  const hints = [...new Set(missing.map((tool) => INSTALL_HINTS[tool] ?? `install ${tool}`))];
  return `${missing.join(", ")} not found on PATH; install with: ${hints.join("; ")}`;
}

/**
 * The verdict of {@linkcode requireTools}.
 *
 * @example
 * ```ts
 * const { ignore }: ToolRequirement = requireTools("mosquitto");
 * ```
 */
export interface ToolRequirement {
  /** `true` only outside CI, when a tool is missing. */
  ignore: boolean;
  /** The tools that are missing (empty when all are there). */
  missing: string[];
}

const warned = new Set<string>();

/**
 * Checks that `tools` are on PATH. When one is missing: outside CI, returns
 * `ignore: true` and prints (once) what to install; under CI, returns
 * `ignore: false` so the test runs and fails — the helpers' own errors then
 * say the same thing. Prefer {@linkcode integrationTest}, which fails with the
 * explanation up front.
 *
 * @example
 * ```ts
 * const { ignore } = requireTools("mosquitto", "openssl");
 * Deno.test({ name: "round trip", ignore, fn: async () => {} });
 * ```
 */
export function requireTools(...tools: string[]): ToolRequirement {
  const missing = missingTools(tools);
  if (missing.length === 0) return { ignore: false, missing };
  const message = missingMessage(missing);
  if (isCi()) return { ignore: false, missing };
  if (!warned.has(message)) {
    warned.add(message);
    console.warn(`SKIPPING integration tests: ${message}`);
  }
  return { ignore: true, missing };
}

/**
 * A `Deno.test` definition plus the programs it needs.
 *
 * @example
 * ```ts
 * const test: IntegrationTestDefinition = { name: "tls", requires: ["mosquitto", "openssl"], fn() {} };
 * ```
 */
export interface IntegrationTestDefinition extends Deno.TestDefinition {
  /** Programs that must be on PATH. Default {@linkcode BROKER_TOOLS}. */
  requires?: readonly string[];
}

/**
 * Registers a test that needs real programs. All there: a normal test.
 * Missing outside CI: an ignored test, with a console line on what to install.
 * Missing under CI: a test that fails with that explanation.
 *
 * @example
 * ```ts
 * integrationTest({
 *   name: "the worker delivers a published reading to stdout",
 *   async fn() {
 *     await using broker = await startBroker();
 *   },
 * });
 * ```
 */
export function integrationTest(definition: IntegrationTestDefinition): void {
  const { requires = BROKER_TOOLS, ...test } = definition;
  const missing = missingTools(requires);
  if (missing.length === 0) {
    Deno.test(test);
    return;
  }
  const message = missingMessage(missing);
  if (isCi()) {
    Deno.test({
      ...test,
      fn() {
        throw new Error(`CI=true and this integration test cannot run: ${message}`);
      },
    });
    return;
  }
  if (!warned.has(message)) {
    warned.add(message);
    console.warn(`SKIPPING integration tests: ${message}`);
  }
  Deno.test({ ...test, ignore: true });
}

function onPath(tool: string): boolean {
  const path = Deno.env.get("PATH") ?? "";
  for (const dir of path.split(":")) {
    if (!dir) continue;
    try {
      const info = Deno.statSync(`${dir}/${tool}`);
      if (info.isFile && (info.mode === null || (info.mode & 0o111) !== 0)) return true;
    } catch (error) {
      if (
        !(error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory ||
          error instanceof Deno.errors.PermissionDenied)
      ) {
        throw error;
      }
    }
  }
  return false;
}
