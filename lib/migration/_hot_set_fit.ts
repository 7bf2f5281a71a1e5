/**
 * Where a guest's writes fall, from what the dirty-bitmap syncs counted.
 * Private to the ETA.
 *
 * A sync counts the distinct pages written since the one before. Writes
 * at W bytes/s falling at random in a set of H bytes dirty
 * D(t) = H·(1 − e^(−W·t/H)) in t seconds. One sync cannot tell a large W
 * over a small H from a small W over all of RAM; syncs of different
 * lengths can: over a hot set, a long pass dirties hardly more than a
 * short one. The fit takes the H (from the largest count to RAM) whose W
 * agrees best across the syncs, and keeps all of RAM unless a hot set
 * fits clearly better.
 *
 * @module
 */

import type { SyncCount } from "./migration_metrics.ts";

/** What the writes look like. */
export interface WriteFit {
  /** Bytes the writes fall in. */
  hotSetBytes: number;
  /** Bytes per second written. */
  bytesPerSecond: number;
}

/** How much shorter the shortest sync must be than the longest to fit. */
const SPREAD = 1.25;
/** How much better a hot set must fit than all of RAM, in log spread. */
const BETTER = 0.1;
/** Candidate sizes between the largest count and RAM. */
const STEPS = 64;

/**
 * The hot set and write rate the syncs agree on best.
 *
 * @param counts The last syncs (with a whole pass or more in each).
 * @param ramBytes Bytes of guest RAM.
 * @returns Undefined when the syncs cannot tell (too few, or too alike
 *   in length) or all of RAM fits as well.
 */
export function fitHotSet(
  counts: readonly SyncCount[],
  ramBytes: number,
): WriteFit | undefined {
  const usable = counts.filter((c) => c.seconds > 0 && c.dirtiedBytes > 0);
  if (usable.length < 2) return undefined;
  const lengths = usable.map((c) => c.seconds);
  if (Math.max(...lengths) < SPREAD * Math.min(...lengths)) return undefined;
  const largest = Math.max(...usable.map((c) => c.dirtiedBytes));
  if (largest >= ramBytes) return undefined;
  const whole = spreadAt(usable, ramBytes);
  let best = { size: ramBytes, ...whole };
  const low = largest * 1.0001;
  for (let i = 0; i < STEPS; i++) {
    const size = low * (ramBytes / low) ** (i / STEPS);
    const fit = spreadAt(usable, size);
    if (fit.spread < best.spread) best = { size, ...fit };
  }
  if (best.size >= ramBytes || best.spread > whole.spread - BETTER) {
    return undefined;
  }
  return { hotSetBytes: best.size, bytesPerSecond: best.rate };
}

/** How far apart the syncs' write rates are over a set of `size` bytes. */
function spreadAt(
  counts: readonly SyncCount[],
  size: number,
): { spread: number; rate: number } {
  const logs = counts.map((c) =>
    Math.log(
      -size * Math.log(1 - Math.min(c.dirtiedBytes / size, 0.9999)) /
        c.seconds,
    )
  );
  const mean = logs.reduce((a, b) => a + b, 0) / logs.length;
  return {
    spread: Math.max(...logs) - Math.min(...logs),
    rate: Math.exp(mean),
  };
}
