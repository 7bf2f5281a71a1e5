import type { SourceMigration } from "../../mod.ts";

/**
 * Calls `onInterrupt` on Ctrl-C (SIGINT) while `run` runs, instead of
 * letting Ctrl-C end the process. Where signals cannot be listened to (no
 * support, no permission), Ctrl-C stops the process as usual.
 *
 * @example Usage
 * ```ts
 * import { onInterrupt } from "./on_interrupt.ts";
 * import assert from "node:assert/strict";
 *
 * const controller = new AbortController();
 * const result = await onInterrupt(() => controller.abort(), Promise.resolve("done"));
 * assert.equal(result, "done");
 * assert.equal(controller.signal.aborted, false);
 * ```
 *
 * @typeParam T What `run` resolves to.
 * @param handler What to do on Ctrl-C.
 * @param run The work Ctrl-C should reach.
 * @returns What `run` resolved to.
 */
export async function onInterrupt<T>(
  handler: () => void,
  run: Promise<T>,
): Promise<T> {
  let listening = false;
  try {
    Deno.addSignalListener("SIGINT", handler);
    listening = true;
  } catch {
    // no signal support (or no permission): Ctrl-C stops the process
  }
  try {
    return await run;
  } finally {
    if (listening) Deno.removeSignalListener("SIGINT", handler);
  }
}

/**
 * Cancels `source` on Ctrl-C while `run` runs; in postcopy, where a
 * migration cannot be cancelled, Ctrl-C is ignored and it goes on.
 *
 * @example Usage
 * ```ts
 * import { cancelOnInterrupt } from "./on_interrupt.ts";
 * import { SimulatedGuest, SourceMigration } from "../../mod.ts";
 * import assert from "node:assert/strict";
 *
 * const source = new SourceMigration(new SimulatedGuest({ ramBytes: 1 << 20, running: false }));
 * assert.equal(await cancelOnInterrupt(source, Promise.resolve(0)), 0);
 * ```
 *
 * @typeParam T What `run` resolves to.
 * @param source The migration to cancel.
 * @param run The migration's work.
 * @returns What `run` resolved to.
 */
export function cancelOnInterrupt<T>(
  source: SourceMigration,
  run: Promise<T>,
): Promise<T> {
  return onInterrupt(() => {
    try {
      source.cancel();
    } catch {
      // postcopy cannot be cancelled; the migration goes on
    }
  }, run);
}
