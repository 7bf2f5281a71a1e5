/**
 * A clock whose `sleep()` advances time at once, recording what was asked,
 * so tests never wait on real time.
 *
 * @module
 */
import type { Clock } from "../../mod.ts";

/** A {@linkcode Clock} driven by the test. */
export interface FakeClock extends Clock {
  /** Every `sleep()` duration asked for, in order. */
  readonly slept: number[];
  /**
   * Moves time forward.
   *
   * @param ms How far.
   */
  advance(ms: number): void;
}

/**
 * Creates a fake clock starting at `start` milliseconds.
 *
 * @param start The initial time.
 * @returns The clock.
 */
export function createFakeClock(start = 0): FakeClock {
  let now = start;
  const slept: number[] = [];
  return {
    slept,
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
    sleep(ms: number, signal?: AbortSignal) {
      if (signal?.aborted) return Promise.reject(signal.reason);
      slept.push(ms);
      now += ms;
      return Promise.resolve();
    },
  };
}
