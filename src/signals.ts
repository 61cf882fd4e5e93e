/**
 * SIGINT and SIGTERM → one AbortController. The first signal asks for a
 * graceful shutdown; a second one exits at once. `deno task` forwards the
 * terminal's Ctrl-C to a process that already got it from its process group,
 * so a repeat within a moment of the first is the same keypress, not a second.
 * @module
 */

/** A repeat of a signal this soon after the first counts as the same signal. */
const SAME_SIGNAL_MS = 500;

const SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGTERM"];

/** Options of {@linkcode handleShutdownSignals}. */
export interface ShutdownSignalOptions {
  /** Called once, at the first signal, before the controller aborts. */
  readonly onFirst?: (signal: Deno.Signal) => void;
  /** Called at a second signal, just before the process exits. */
  readonly onSecond?: (signal: Deno.Signal) => void;
}

/**
 * Listens for SIGINT and SIGTERM; returns a signal that aborts at the first
 * of them. A second one exits the process at once with 128 + the signal number
 * (130 for SIGINT, 143 for SIGTERM).
 *
 * @example
 * ```ts
 * const signal = handleShutdownSignals({ onFirst: (name) => console.error(`${name}: stopping`) });
 * await runWorker(config, { signal });
 * ```
 */
export function handleShutdownSignals(options: ShutdownSignalOptions = {}): AbortSignal {
  const controller = new AbortController();
  let firstAt = 0;
  for (const name of SIGNALS) {
    Deno.addSignalListener(name, () => {
      if (!controller.signal.aborted) {
        firstAt = Date.now();
        options.onFirst?.(name);
        controller.abort();
        return;
      }
      if (Date.now() - firstAt < SAME_SIGNAL_MS) return;
      options.onSecond?.(name);
      Deno.exit(name === "SIGINT" ? 130 : 143);
    });
  }
  return controller.signal;
}
