/**
 * An honest ETA for a running precopy migration: the planner's model
 * ({@linkcode predictMigration}) started from where the migration is, fed
 * with the measured bandwidth and dirty rate.
 *
 * ```
 * raw       model(pending now, passes, measured rates).totalTimeMs
 * deadline  now + raw, but never later than the last deadline + the
 *           noise stated with it: the ETA does not run backwards by more
 *           than it said it might (unless that deadline passed while the
 *           migration goes on: then it is `restated`; after an ETA could
 *           not be given, the next one is a new statement)
 * noise     twice the RMS of how far the last raw deadlines moved (at
 *           least minNoiseMs); during the first pass, when nothing says
 *           yet how fast the guest dirties RAM, as large as the ETA or
 *           the time so far (all that went may come back at the sync)
 * dirty     the rate the guest writes pages at: the measured rate of
 *           distinct pages per sync interval as writes, or until there
 *           is one, from how much the last sync added (the model's
 *           dirtying, inverted)
 * stalled   the bytes pending after a sync have not fallen below their
 *           lowest for stallPasses syncs, or after as many syncs the
 *           model sees no end: "not converging", with advice from
 *           planMigration()
 * hot set   from syncs of different lengths (the first pass is the
 *           longest): writes over a hot set dirty hardly more in a long
 *           pass than in a short one
 * ```
 *
 * @module
 */

import { formatBytes } from "../bytes/human_units.ts";
import { fitHotSet } from "./_hot_set_fit.ts";
import type { SyncCount } from "./migration_metrics.ts";
import { predictMigration } from "./migration_model.ts";
import type { MigrationParameters } from "./migration_parameters.ts";
import { planMigration } from "./migration_plan.ts";

/** What the migration measured, at one moment. */
export interface EtaSample {
  /** Milliseconds on the migration's clock. */
  atMs: number;
  /** Bytes still to send (`ram.remaining`). */
  remainingBytes: number;
  /** Bytes of guest RAM (`ram.total`). */
  ramBytes: number;
  /** Page size in bytes. */
  pageSize: number;
  /** Measured precopy bandwidth in bytes per second. */
  bytesPerSecond: number;
  /** Measured dirty rate in bytes per second (`dirty-pages-rate` × page). */
  dirtyBytesPerSecond: number;
  /**
   * The mean time between the syncs that rate was measured over, in ms:
   * each sync counts distinct pages written since the one before, so the
   * longer the interval, the more writes a rate stands for.
   *
   * @default {1000}
   */
  dirtySyncIntervalMs?: number;
  /**
   * The last dirty-bitmap syncs: from syncs of different lengths the ETA
   * tells writes over a hot set from writes over all of RAM.
   *
   * @default {[]}
   */
  syncCounts?: readonly SyncCount[];
  /**
   * Bytes of RAM the guest's writes fall in, when known; else fitted from
   * `syncCounts`, or all of RAM.
   */
  hotSetBytes?: number;
  /** `dirty-sync-count`. */
  passes: number;
  /** Bytes sent so far (`ram.transferred`). */
  transferredBytes: number;
  /** The migration's parameters (downtime-limit, ...). */
  parameters: Partial<MigrationParameters>;
}

/** The ETA at one moment. */
export interface EtaEstimate {
  /** Milliseconds until completion; absent when none can be given. */
  etaMs?: number;
  /** How much later than stated the end may turn out, in ms. */
  noiseMs: number;
  /** False once the pending bytes stopped falling, or the model sees no end. */
  converging: boolean;
  /** Syncs in a row the pending bytes have not fallen. */
  stalledPasses: number;
  /** What to do, when not converging. */
  advice?: string;
  /**
   * Set when the deadline passed and the migration goes on: the ETA is
   * stated anew, later than the last one and its noise allowed.
   */
  restated?: true;
}

/** Options for {@linkcode MigrationEta}. */
export interface MigrationEtaOptions {
  /**
   * Syncs without progress before "not converging".
   *
   * @default {3}
   */
  stallPasses?: number;
  /**
   * The least noise stated, in ms.
   *
   * @default {50}
   */
  minNoiseMs?: number;
}

/**
 * Follows a precopy migration and estimates when it ends.
 *
 * @example Usage
 * ```ts
 * import { MigrationEta } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const MiB = 1 << 20;
 * const eta = new MigrationEta();
 * const sample = {
 *   atMs: 1000, remainingBytes: 64 * MiB, ramBytes: 256 * MiB, pageSize: 4096,
 *   bytesPerSecond: 128 * MiB, dirtyBytesPerSecond: 0, passes: 2,
 *   transferredBytes: 192 * MiB, parameters: {},
 * };
 * const first = eta.update(sample);
 * // 64 MiB at 128 MiB/s, the last part of it in the downtime.
 * assert.ok(first.etaMs! > 200 && first.etaMs! < 520);
 * // 100 ms later, 12.8 MiB more sent: the deadline holds.
 * const later = eta.update({
 *   ...sample, atMs: 1100, remainingBytes: 51.2 * MiB, transferredBytes: 204.8 * MiB,
 * });
 * assert.ok(later.etaMs! <= first.etaMs! - 100 + first.noiseMs);
 * ```
 */
export class MigrationEta {
  readonly #stallPasses: number;
  readonly #minNoiseMs: number;
  #deadline: number | undefined;
  #noise: number;
  #lastRaw: number | undefined;
  readonly #moves: number[] = [];
  #passes = 0;
  #lowest = Infinity;
  #stalled = 0;
  #advice: string | undefined;
  #previous: EtaSample | undefined;
  #startMs: number | undefined;
  #writeRate: number | undefined;
  #syncAtMs = 0;

  /**
   * Constructs a new instance.
   *
   * @param options When to say "not converging", the least noise.
   */
  constructor(options: MigrationEtaOptions = {}) {
    this.#stallPasses = options.stallPasses ?? 3;
    this.#minNoiseMs = options.minNoiseMs ?? 50;
    this.#noise = this.#minNoiseMs;
  }

  /**
   * Takes a new measurement and gives the ETA.
   *
   * @param sample What the migration measured now.
   * @returns The estimate.
   */
  update(sample: EtaSample): EtaEstimate {
    const measured = this.#withWriteRate(sample);
    this.#trackPasses(sample);
    const converging = this.#stalled < this.#stallPasses;
    if (!converging) {
      this.#deadline = undefined;
      this.#advice ??= advise(measured, this.#stalled);
      return {
        noiseMs: this.#noise,
        converging,
        stalledPasses: this.#stalled,
        advice: this.#advice,
      };
    }
    const raw = rawEta(measured, sample.atMs - this.#syncAtMs);
    if (raw === undefined) {
      this.#deadline = undefined;
      // Passes enough to know the guest: the model itself sees no end.
      if (sample.passes >= this.#stallPasses && sample.bytesPerSecond > 0) {
        this.#advice ??= adviseModel(measured);
        return {
          noiseMs: this.#noise,
          converging: false,
          stalledPasses: this.#stalled,
          advice: this.#advice,
        };
      }
      this.#advice = undefined;
      return { noiseMs: this.#noise, converging, stalledPasses: this.#stalled };
    }
    this.#advice = undefined;
    const rawDeadline = sample.atMs + raw;
    if (this.#lastRaw !== undefined) {
      this.#moves.push(rawDeadline - this.#lastRaw);
      if (this.#moves.length > 5) this.#moves.shift();
    }
    this.#lastRaw = rawDeadline;
    const allowed = this.#deadline === undefined
      ? Infinity
      : this.#deadline + this.#noise;
    let deadline = Math.min(rawDeadline, allowed);
    // Past the deadline, and the noise allows no more: say so, and state
    // the model's deadline anew.
    const restated = deadline < sample.atMs;
    if (restated) deadline = rawDeadline;
    this.#deadline = deadline;
    const rms = Math.sqrt(
      this.#moves.reduce((sum, m) => sum + m * m, 0) /
        Math.max(1, this.#moves.length),
    );
    this.#noise = Math.max(
      this.#minNoiseMs,
      Math.round(2 * rms),
      // In the first pass all that went may come back at the sync, and
      // sending it again takes as long as it took.
      sample.passes <= 1
        ? Math.round(
          Math.max(deadline - sample.atMs, sample.atMs - this.#startMs!),
        )
        : 0,
    );
    return {
      etaMs: Math.round(deadline - sample.atMs),
      noiseMs: this.#noise,
      converging,
      stalledPasses: this.#stalled,
      ...(restated ? { restated } : {}),
    };
  }

  /**
   * The sample with the rate the guest writes pages at, as the model
   * takes it: from the measured rate of distinct pages once there is one
   * (a sync period lasts a second or more); before, from the last sync,
   * inverting the model's own dirtying (pending grew by
   * d·(1 − pending/RAM), d = RAM·(1 − e^(−W·t/RAM))).
   */
  #withWriteRate(sample: EtaSample): EtaSample {
    const previous = this.#previous;
    this.#previous = sample;
    if (this.#startMs === undefined) {
      this.#startMs = sample.atMs;
      this.#syncAtMs = sample.atMs;
    }
    const ram = Math.max(1, sample.ramBytes);
    if (previous && sample.passes > previous.passes) {
      const sent = (sample.transferredBytes - previous.transferredBytes) *
        sample.pageSize / (sample.pageSize + 8);
      const before = Math.max(0, previous.remainingBytes - sent);
      const jump = Math.max(0, sample.remainingBytes - before);
      const dirtied = Math.min(
        ram * 0.999,
        jump / Math.max(0.001, 1 - before / ram),
      );
      const seconds = (sample.atMs - this.#syncAtMs) / 1000;
      if (seconds > 0) {
        this.#writeRate = -ram * Math.log(1 - dirtied / ram) / seconds;
      }
    }
    if (sample.hotSetBytes === undefined) {
      const fit = fitHotSet(sample.syncCounts ?? [], ram);
      if (fit) {
        return {
          ...sample,
          hotSetBytes: fit.hotSetBytes,
          dirtyBytesPerSecond: fit.bytesPerSecond,
        };
      }
    }
    // The measured rate counts distinct pages per sync interval T: as
    // writes, W = −RAM·ln(1 − rate·T/RAM)/T.
    const interval = Math.max(1, sample.dirtySyncIntervalMs ?? 1000) / 1000;
    const distinct = Math.min(
      ram * 0.999,
      sample.dirtyBytesPerSecond * interval,
    );
    const rate = distinct > 0
      ? -ram * Math.log(1 - distinct / ram) / interval
      : this.#writeRate ?? 0;
    return { ...sample, dirtyBytesPerSecond: rate };
  }

  #trackPasses(sample: EtaSample): void {
    if (sample.passes <= this.#passes) return;
    this.#passes = sample.passes;
    this.#syncAtMs = sample.atMs;
    if (sample.remainingBytes < this.#lowest) {
      this.#lowest = sample.remainingBytes;
      this.#stalled = 0;
    } else {
      this.#stalled++;
    }
  }
}

function modelInput(sample: EtaSample, msSinceSync = 0) {
  // A window that paid off an overspent chunk measures more than the
  // limit; over a pass the limit holds.
  const limit = sample.parameters["max-bandwidth"] ?? 0;
  const measured = Math.max(1, sample.bytesPerSecond);
  const rate = limit > 0 ? Math.min(limit, measured) : measured;
  return {
    ramBytes: sample.ramBytes,
    ...(sample.hotSetBytes === undefined
      ? {}
      : { hotSetBytes: sample.hotSetBytes, hotSetAt: "spread" as const }),
    pageSize: sample.pageSize,
    dirtyBytesPerSecond: sample.dirtyBytesPerSecond,
    linkBytesPerSecond: rate,
    parameters: { ...sample.parameters, "max-bandwidth": rate },
    start: {
      pendingBytes: sample.remainingBytes,
      passes: sample.passes,
      msSinceSync,
    },
  };
}

function rawEta(
  sample: EtaSample,
  msSinceSync: number,
): number | undefined {
  if (!(sample.bytesPerSecond > 0)) return undefined;
  const prediction = predictMigration(modelInput(sample, msSinceSync), {
    maxTimeMs: 3_600_000,
  });
  return prediction.ending === "none" ? undefined : prediction.totalTimeMs;
}

function advise(sample: EtaSample, stalled: number): string {
  const pending = formatBytes(sample.remainingBytes);
  return `not converging: ${pending} pending has not fallen for ${stalled} passes${
    ways(sample)
  }`;
}

/** "not converging" when the model, fed what was measured, sees no end. */
function adviseModel(sample: EtaSample): string {
  const over = sample.hotSetBytes === undefined
    ? "RAM"
    : `a ${formatBytes(sample.hotSetBytes)} hot set`;
  return `not converging: the guest writes ${
    formatBytes(sample.dirtyBytesPerSecond)
  }/s over ${over}, faster than the passes can send it${ways(sample)}`;
}

/** "; try …": the planner's ways to converge, else postcopy or a throttle. */
function ways(sample: EtaSample): string {
  const plan = planMigration(modelInput(sample), { maxTimeMs: 3_600_000 });
  const found: string[] = [];
  for (const s of plan.suggestions) {
    if (s.kind === "postcopy") {
      found.push("postcopy (postcopy-ram, then migrate-start-postcopy)");
    } else if (s.kind === "max-bandwidth" || s.kind === "bandwidth") {
      found.push(`max-bandwidth >= ${formatBytes(s.value!)}/s`);
    } else if (s.kind === "auto-converge") {
      found.push(`throttling the guest to ${formatBytes(s.value!)}/s`);
    } else if (s.kind === "downtime-limit") {
      found.push(`downtime-limit >= ${s.value} ms`);
    }
  }
  // The model sees an end the migration does not reach: postcopy ends
  // whatever the guest does, a throttle slows the guest.
  if (found.length === 0) {
    found.push(
      "postcopy (postcopy-ram, then migrate-start-postcopy)",
      "auto-converge",
    );
  }
  return `; try ${found.slice(0, 3).join(", or ")}`;
}
