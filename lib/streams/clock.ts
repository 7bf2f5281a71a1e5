/**
 * A time source. Code that waits or measures takes a `Clock` so tests can
 * drive time by hand instead of sleeping.
 *
 * @example Usage
 * ```ts
 * import { type Clock, SYSTEM_CLOCK } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const clock: Clock = SYSTEM_CLOCK;
 * const before = clock.now();
 * await clock.sleep(1);
 * assert.ok(clock.now() >= before);
 * ```
 */
export interface Clock {
  /** Milliseconds since an arbitrary, monotonic origin. */
  now(): number;
  /**
   * Waits `ms` milliseconds.
   *
   * @param ms How long to wait.
   * @param signal Rejects the wait early with `signal.reason`.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/**
 * The real clock: `performance.now()` and `setTimeout()`.
 *
 * @example Usage
 * ```ts
 * import { SYSTEM_CLOCK } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const controller = new AbortController();
 * controller.abort(new Error("stop"));
 * await assert.rejects(SYSTEM_CLOCK.sleep(1000, controller.signal), /stop/);
 * ```
 */
export const SYSTEM_CLOCK: Clock = {
  now(): number {
    return performance.now();
  },
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const timer = setTimeout(done, Math.max(0, ms));
      signal?.addEventListener("abort", abort, { once: true });
      function done() {
        signal?.removeEventListener("abort", abort);
        resolve();
      }
      function abort() {
        clearTimeout(timer);
        reject(signal?.reason);
      }
    });
  },
};
