/**
 * A clock whose `sleep()` ends only when the test moves time past it, for
 * timers that must not fire at once (as they would with the fake clock).
 *
 * @module
 */
import type { Clock } from "../../mod.ts";

/** A {@linkcode Clock} moved by hand. */
export interface ManualClock extends Clock {
  /**
   * Moves time forward, ending the sleeps that are due.
   *
   * @param ms How far.
   */
  advance(ms: number): void;
  /** How many sleeps are pending. */
  readonly sleeping: number;
  /** Resolves once at least one sleep is pending. */
  untilSleeping(): Promise<void>;
}

/**
 * Creates a manual clock at time 0.
 *
 * @returns The clock.
 */
export function createManualClock(): ManualClock {
  let now = 0;
  const sleepers: { until: number; resolve: () => void }[] = [];
  return {
    now: () => now,
    sleep(ms: number, signal?: AbortSignal) {
      return new Promise<void>((resolve, reject) => {
        if (signal?.aborted) return reject(signal.reason);
        const sleeper = { until: now + ms, resolve };
        sleepers.push(sleeper);
        signal?.addEventListener("abort", () => {
          const at = sleepers.indexOf(sleeper);
          if (at >= 0) sleepers.splice(at, 1);
          reject(signal.reason);
        }, { once: true });
      });
    },
    advance(ms: number) {
      now += ms;
      for (const sleeper of sleepers.filter((s) => s.until <= now)) {
        sleepers.splice(sleepers.indexOf(sleeper), 1);
        sleeper.resolve();
      }
    },
    get sleeping() {
      return sleepers.length;
    },
    async untilSleeping() {
      while (sleepers.length === 0) {
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    },
  };
}
