/** A signal the command line answers. */
export type InterruptSignal = "SIGINT" | "SIGTERM";

/**
 * What a signal does to a running migration:
 *
 * - `cancel`: outside postcopy the migration can end without losing the
 *   guest (the source keeps it): it is cancelled or failed.
 * - `warn`: in postcopy neither end holds the whole guest, so a first
 *   Ctrl-C only explains that quitting would lose it.
 * - `give-up`: a second Ctrl-C within the window, or SIGTERM, quits anyway.
 */
export type InterruptAction = "cancel" | "warn" | "give-up";

/** The state {@linkcode decideInterrupt} decides on. */
export interface InterruptState {
  /** Whether the migration is in postcopy (active, paused, recovering). */
  postcopy: boolean;
  /** When the last `warn` was given, in milliseconds, if ever. */
  warnedAt: number | undefined;
  /** The time now, in milliseconds. */
  now: number;
}

/** How long after a warning a second Ctrl-C quits. */
export const INTERRUPT_WINDOW_MS = 5000;

/**
 * Decides what a signal does (see {@linkcode InterruptAction}).
 *
 * @example Usage
 * ```ts
 * import { decideInterrupt } from "./decide_interrupt.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(decideInterrupt("SIGINT", { postcopy: false, warnedAt: undefined, now: 0 }), "cancel");
 * assert.equal(decideInterrupt("SIGINT", { postcopy: true, warnedAt: undefined, now: 0 }), "warn");
 * assert.equal(decideInterrupt("SIGINT", { postcopy: true, warnedAt: 0, now: 4999 }), "give-up");
 * assert.equal(decideInterrupt("SIGINT", { postcopy: true, warnedAt: 0, now: 5001 }), "warn");
 * assert.equal(decideInterrupt("SIGTERM", { postcopy: true, warnedAt: undefined, now: 0 }), "give-up");
 * ```
 *
 * @param signal The signal.
 * @param state Whether in postcopy, when the last warning was.
 * @returns The action.
 */
export function decideInterrupt(
  signal: InterruptSignal,
  state: InterruptState,
): InterruptAction {
  if (!state.postcopy) return "cancel";
  if (signal === "SIGTERM") return "give-up";
  const { warnedAt } = state;
  return warnedAt !== undefined && state.now - warnedAt <= INTERRUPT_WINDOW_MS
    ? "give-up"
    : "warn";
}
