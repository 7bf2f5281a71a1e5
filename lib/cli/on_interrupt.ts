import { type Clock, type SourceMigration, SYSTEM_CLOCK } from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";

/** What to do on each signal, for {@linkcode onInterrupt}. */
export interface InterruptHandlers {
  /** On Ctrl-C (SIGINT). */
  interrupt(): void;
  /**
   * On SIGTERM; without it SIGTERM ends the process as usual.
   *
   * @default {undefined}
   */
  terminate?(): void;
}

/**
 * Calls `handler` on Ctrl-C (SIGINT), and `terminate` on SIGTERM when
 * given, while `run` runs, instead of letting the signal end the process;
 * the listeners keep the process alive while `run` waits for nothing
 * else. Where signals cannot be listened to (no support, no permission),
 * they stop the process as usual.
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
 * @param handler What to do on Ctrl-C, or on each signal.
 * @param run The work the signals should reach.
 * @returns What `run` resolved to.
 */
export async function onInterrupt<T>(
  handler: (() => void) | InterruptHandlers,
  run: Promise<T>,
): Promise<T> {
  const handlers = typeof handler === "function"
    ? { interrupt: handler }
    : handler;
  const listening: [Deno.Signal, () => void][] = [];
  const listen = (signal: Deno.Signal, listener: () => void) => {
    try {
      Deno.addSignalListener(signal, listener);
      listening.push([signal, listener]);
    } catch {
      // no signal support (or no permission): the signal stops the process
    }
  };
  listen("SIGINT", () => handlers.interrupt());
  if (handlers.terminate) listen("SIGTERM", () => handlers.terminate?.());
  try {
    return await run;
  } finally {
    for (const [signal, listener] of listening) {
      Deno.removeSignalListener(signal, listener);
    }
  }
}

/** Options for {@linkcode migrationInterrupts}. */
export interface MigrationInterruptsOptions {
  /** Where the explanation of a refused Ctrl-C goes. */
  io: CliIo;
  /**
   * Time source for the confirmation window.
   *
   * @default {SYSTEM_CLOCK}
   */
  clock?: Clock;
  /**
   * How long after the first Ctrl-C in postcopy a second one gives the
   * migration up, in milliseconds.
   *
   * @default {5000}
   */
  confirmMs?: number;
}

/**
 * What Ctrl-C and SIGTERM do to a source migration. Before postcopy they
 * cancel it (status `cancelled`, the guest keeps running here). In
 * postcopy the destination runs the guest and the pages it still lacks
 * are only here, so cancelling would lose the guest: the first Ctrl-C
 * says so, and a second one within `confirmMs` (or SIGTERM) abandons the
 * migration, which stays `postcopy-paused`.
 *
 * @example Usage
 * ```ts
 * import { migrationInterrupts } from "./on_interrupt.ts";
 * import { SimulatedGuest, SourceMigration } from "../../mod.ts";
 * import assert from "node:assert/strict";
 *
 * let err = "";
 * const io = { writeOut: () => {}, writeErr: (text: string) => (err += text), errIsTerminal: false };
 * const source = new SourceMigration(new SimulatedGuest({ ramBytes: 1 << 20, running: false }));
 * const handlers = migrationInterrupts(source, { io });
 * handlers.interrupt(); // nothing running: nothing to cancel
 * assert.equal(source.status, "none");
 * assert.equal(err, "");
 * ```
 *
 * @param source The migration.
 * @param options Where to explain, the clock and the confirmation window.
 * @returns The handlers, for {@linkcode onInterrupt}.
 */
export function migrationInterrupts(
  source: Pick<SourceMigration, "status" | "cancel" | "abandon">,
  options: MigrationInterruptsOptions,
): Required<InterruptHandlers> {
  const { io, clock = SYSTEM_CLOCK, confirmMs = 5000 } = options;
  let warnedAt: number | undefined;
  const inPostcopy = () => source.status.startsWith("postcopy");
  return {
    interrupt() {
      if (!inPostcopy()) return source.cancel();
      const now = clock.now();
      if (warnedAt !== undefined && now - warnedAt <= confirmMs) {
        return source.abandon();
      }
      warnedAt = now;
      io.writeErr(
        `livemig: cancelling now would lose the guest: the destination runs it without all of its RAM; press Ctrl-C again within ${
          confirmMs / 1000
        } s (or send SIGTERM) to give it up anyway\n`,
      );
    },
    terminate() {
      if (inPostcopy()) source.abandon();
      else source.cancel();
    },
  };
}

/**
 * Runs `run` with Ctrl-C and SIGTERM reaching `source` as
 * {@linkcode migrationInterrupts} describes.
 *
 * @example Usage
 * ```ts
 * import { cancelOnInterrupt } from "./on_interrupt.ts";
 * import { SimulatedGuest, SourceMigration } from "../../mod.ts";
 * import assert from "node:assert/strict";
 *
 * const io = { writeOut: () => {}, writeErr: () => {}, errIsTerminal: false };
 * const source = new SourceMigration(new SimulatedGuest({ ramBytes: 1 << 20, running: false }));
 * assert.equal(await cancelOnInterrupt(source, Promise.resolve(0), { io }), 0);
 * ```
 *
 * @typeParam T What `run` resolves to.
 * @param source The migration.
 * @param run The migration's work.
 * @param options Where to explain, the clock and the confirmation window.
 * @returns What `run` resolved to.
 */
export function cancelOnInterrupt<T>(
  source: SourceMigration,
  run: Promise<T>,
  options: MigrationInterruptsOptions,
): Promise<T> {
  return onInterrupt(migrationInterrupts(source, options), run);
}
