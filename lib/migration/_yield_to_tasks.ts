/**
 * A timer turn between two iteration steps of the source. Private to the
 * source's precopy and postcopy loops.
 *
 * @module
 */

/**
 * Lets timers run (the guest's workload task) between iteration steps.
 *
 * @returns A promise for the next timer turn.
 */
export function yieldToTasks(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}
