/**
 * A promise that rejects with an abort signal's reason once it aborts.
 * Private to lib/migration/.
 *
 * @module
 */

/**
 * Rejects with `signal.reason` when `signal` aborts (at once if it has).
 *
 * @param signal The signal.
 * @returns A promise that never resolves.
 */
export function aborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), {
      once: true,
    });
  });
}
