import { type Clock, SYSTEM_CLOCK } from "../../mod.ts";
import { decideInterrupt, type InterruptSignal } from "./decide_interrupt.ts";

/** What to do for each action {@linkcode decideInterrupt} decides. */
export interface InterruptHandlers {
  /**
   * Whether the migration is in postcopy now.
   *
   * @returns Whether it is.
   */
  postcopy(): boolean;
  /**
   * Cancels or fails the migration (outside postcopy).
   *
   * @param signal The signal.
   */
  cancel(signal: InterruptSignal): void;
  /** Explains that quitting in postcopy would lose the guest. */
  warn(): void;
  /**
   * Gives the postcopy migration up.
   *
   * @param signal The signal.
   */
  giveUp(signal: InterruptSignal): void;
}

/** Where signals come from: the process, or a test. */
export interface SignalSource {
  /**
   * Starts listening.
   *
   * @param signal The signal.
   * @param handler Its handler.
   * @returns Whether the signal can be listened to here.
   */
  add(signal: InterruptSignal, handler: () => void): boolean;
  /**
   * Stops listening.
   *
   * @param signal The signal.
   * @param handler The handler given to `add`.
   */
  remove(signal: InterruptSignal, handler: () => void): void;
}

/** The process's signals (none where they cannot be listened to). */
const PROCESS_SIGNALS: SignalSource = {
  add(signal, handler) {
    try {
      Deno.addSignalListener(signal, handler);
      return true;
    } catch {
      return false; // not supported here: the signal ends the process
    }
  },
  remove(signal, handler) {
    Deno.removeSignalListener(signal, handler);
  },
};

/** Options for {@linkcode handleInterrupts}. */
export interface HandleInterruptsOptions {
  /**
   * Where signals come from.
   *
   * @default {the process}
   */
  signals?: SignalSource;
  /**
   * Time source of the Ctrl-C window.
   *
   * @default {SYSTEM_CLOCK}
   */
  clock?: Clock;
}

/**
 * Answers Ctrl-C (SIGINT) and SIGTERM while a migration runs, as
 * {@linkcode decideInterrupt} says: outside postcopy they cancel it; in
 * postcopy a first Ctrl-C warns and a second within 5 s, or SIGTERM, gives
 * it up. Listening keeps the process alive (a paused postcopy migration
 * waits on nothing else). Returns the handle that stops listening.
 *
 * @example Usage
 * ```ts
 * import { handleInterrupts, type SignalSource } from "./handle_interrupts.ts";
 * import assert from "node:assert/strict";
 *
 * const listeners = new Map<string, () => void>();
 * const signals: SignalSource = {
 *   add: (signal, handler) => (listeners.set(signal, handler), true),
 *   remove: (signal) => listeners.delete(signal),
 * };
 * const done: string[] = [];
 * const handling = handleInterrupts({
 *   postcopy: () => true,
 *   cancel: () => done.push("cancel"),
 *   warn: () => done.push("warn"),
 *   giveUp: (signal) => done.push(`give up on ${signal}`),
 * }, { signals, clock: { now: () => 0, sleep: () => Promise.resolve() } });
 * listeners.get("SIGINT")!();
 * listeners.get("SIGINT")!();
 * handling.stop();
 * assert.deepEqual(done, ["warn", "give up on SIGINT"]);
 * assert.equal(listeners.size, 0);
 * ```
 *
 * @param handlers What each action does.
 * @param options Where signals come from, the clock.
 * @returns `stop()` stops listening.
 */
export function handleInterrupts(
  handlers: InterruptHandlers,
  options: HandleInterruptsOptions = {},
): { stop(): void } {
  const signals = options.signals ?? PROCESS_SIGNALS;
  const clock = options.clock ?? SYSTEM_CLOCK;
  let warnedAt: number | undefined;
  const listening: [InterruptSignal, () => void][] = [];
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    const handler = () => {
      const now = clock.now();
      const action = decideInterrupt(signal, {
        postcopy: handlers.postcopy(),
        warnedAt,
        now,
      });
      if (action === "warn") warnedAt = now;
      if (action === "cancel") handlers.cancel(signal);
      else if (action === "warn") handlers.warn();
      else handlers.giveUp(signal);
    };
    if (signals.add(signal, handler)) listening.push([signal, handler]);
  }
  return {
    stop() {
      for (const [signal, handler] of listening.splice(0)) {
        signals.remove(signal, handler);
      }
    },
  };
}
