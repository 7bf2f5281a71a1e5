/**
 * The ETA keys of the source's `query-migrate` while precopy is active
 * (`x-livemig-eta-ms`, `x-livemig-eta-noise-ms`,
 * `x-livemig-not-converging`), from a {@linkcode MigrationEta}
 * recomputed at most every 100 ms and at every pass. Private to the
 * source.
 *
 * @module
 */

import type { Clock } from "../streams/clock.ts";
import { type EtaEstimate, MigrationEta } from "./migration_eta.ts";
import type { MigrationInfo, RamStats } from "./migration_info.ts";
import type { MigrationMetrics } from "./migration_metrics.ts";
import type { MigrationParameters } from "./migration_parameters.ts";

/** Recomputes the estimate no more often than this, between passes. */
const EVERY_MS = 100;

/** The source's ETA. */
export class SourceEta {
  readonly #eta = new MigrationEta();
  readonly #metrics: MigrationMetrics;
  readonly #config: { clock: Clock; parameters: MigrationParameters };
  #last: { atMs: number; passes: number; estimate: EtaEstimate } | undefined;

  /**
   * @param metrics The run's measurements.
   * @param config Its clock and parameters.
   */
  constructor(
    metrics: MigrationMetrics,
    config: { clock: Clock; parameters: MigrationParameters },
  ) {
    this.#metrics = metrics;
    this.#config = config;
  }

  /**
   * Adds the ETA keys to a `query-migrate` info.
   *
   * @param info The info.
   * @param ram Its RAM statistics.
   */
  addTo(info: MigrationInfo, ram: RamStats): void {
    const now = this.#config.clock.now();
    const passes = ram["dirty-sync-count"];
    let last = this.#last;
    if (!last || now - last.atMs >= EVERY_MS || passes !== last.passes) {
      const estimate = this.#eta.update({
        atMs: now,
        remainingBytes: ram.remaining,
        ramBytes: ram.total,
        pageSize: ram["page-size"],
        bytesPerSecond: this.#metrics.bytesPerMs * 1000,
        dirtyBytesPerSecond: ram["dirty-pages-rate"] * ram["page-size"],
        dirtySyncIntervalMs: this.#metrics.dirtySyncIntervalMs,
        syncCounts: this.#metrics.syncCounts,
        passes,
        transferredBytes: ram.transferred,
        parameters: this.#config.parameters,
      });
      last = this.#last = { atMs: now, passes, estimate };
    }
    const { estimate } = last;
    if (estimate.etaMs !== undefined) {
      info["x-livemig-eta-ms"] = Math.max(
        0,
        Math.round(estimate.etaMs - (now - last.atMs)),
      );
      info["x-livemig-eta-noise-ms"] = estimate.noiseMs;
    }
    if (estimate.advice !== undefined) {
      info["x-livemig-not-converging"] = estimate.advice;
    }
  }
}
