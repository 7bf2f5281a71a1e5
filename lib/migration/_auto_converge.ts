/**
 * auto-converge and dirty-limit on the source: QEMU's rule for when a
 * guest dirties too fast (checked each time a dirty-rate period of at
 * least a second closes at a dirty-bitmap sync) and how much to throttle
 * it then. Private to the source.
 *
 * ```
 * period closes   dirtied = pages found dirty at its syncs × page size
 *                 sent    = bytes transferred during it
 *                 dirtied > sent × throttle-trigger-threshold / 100 ?
 *                   count it; at the 2nd count (QEMU never resets the
 *                   count on a calm period), reset and:
 *                     auto-converge  first 20 %, then + increment
 *                                    (or the tailslow share), ≤ max
 *                     dirty-limit    cap the guest at vcpu-dirty-limit
 * migration ends  the guest runs at full speed again
 * ```
 *
 * @module
 */

import {
  type GuestThrottle,
  type MigratableGuest,
  NO_THROTTLE,
} from "../guest/migratable_guest.ts";
import type { Clock } from "../streams/clock.ts";
import type {
  MigrationCapabilities,
  MigrationParameters,
} from "./migration_parameters.ts";
import { type DirtyLimitInfo, dirtyLimitInfo } from "./_dirty_limit.ts";

/** QEMU's bounds for a CPU throttle percentage (`cpu-throttle.c`). */
const MIN_PERCENTAGE = 1;
const MAX_PERCENTAGE = 99;

/** One closed dirty-rate period, in bytes. */
export interface ThrottlePeriod {
  /** Bytes dirtied: the pages found dirty at its syncs × page size. */
  dirtiedBytes: number;
  /** Bytes sent during it. */
  sentBytes: number;
}

/**
 * The next CPU throttle (QEMU's `mig_throttle_guest_down()`): the initial
 * percentage when none is active, else the current one plus the
 * increment — with `cpu-throttle-tailslow`, plus only what would bring the
 * guest's dirtying down to the threshold, at most the increment — held to
 * `max-cpu-throttle`; always within 1–99.
 *
 * @param current The active percentage, 0 when none.
 * @param dirtiedBytes Bytes dirtied in the period that triggered.
 * @param thresholdBytes The bytes the threshold allowed in it.
 * @param parameters The throttling parameters.
 * @returns The new percentage.
 */
export function nextCpuThrottle(
  current: number,
  dirtiedBytes: number,
  thresholdBytes: number,
  parameters: Readonly<MigrationParameters>,
): number {
  const clamp = (pct: number) =>
    Math.max(MIN_PERCENTAGE, Math.min(MAX_PERCENTAGE, pct));
  if (current === 0) return clamp(parameters["cpu-throttle-initial"]);
  const increment = parameters["cpu-throttle-increment"];
  let step = increment;
  if (parameters["cpu-throttle-tailslow"]) {
    const cpuNow = 100 - current;
    const cpuIdeal = Math.trunc(cpuNow * (thresholdBytes / dirtiedBytes));
    step = Math.min(cpuNow - cpuIdeal, increment);
  }
  return clamp(Math.min(current + step, parameters["max-cpu-throttle"]));
}

/**
 * Whether a period dirtied more than the threshold allows (QEMU's
 * `migration_trigger_throttle()` test), and the allowance.
 *
 * @param period The closed period.
 * @param thresholdPercent `throttle-trigger-threshold`.
 * @returns The allowance in bytes and whether it was exceeded.
 */
export function dirtiedTooMuch(
  period: ThrottlePeriod,
  thresholdPercent: number,
): { thresholdBytes: number; high: boolean } {
  const thresholdBytes = Math.floor(period.sentBytes * thresholdPercent / 100);
  return { thresholdBytes, high: period.dirtiedBytes > thresholdBytes };
}

/** What the throttle adds to `query-migrate`. */
export interface ThrottleInfo extends Partial<DirtyLimitInfo> {
  /** The CPU throttle, while auto-converge throttles. */
  "cpu-throttle-percentage"?: number;
}

/** What {@linkcode AutoConverge} reads from its run. */
export interface AutoConvergeOptions {
  /** The run's capabilities. */
  capabilities: Readonly<MigrationCapabilities>;
  /** The run's parameters, changed in place while it runs. */
  parameters: Readonly<MigrationParameters>;
  /** The run's clock; the first period starts at construction. */
  clock: Clock;
  /** The guest's page size. */
  pageSize: number;
  /** Bytes sent since the migration started. */
  transferred: () => number;
}

/** The throttle of one source run: counts high periods, throttles the guest. */
export class AutoConverge {
  readonly #guest: MigratableGuest;
  readonly #capabilities: Readonly<MigrationCapabilities>;
  readonly #parameters: Readonly<MigrationParameters>;
  readonly #options: AutoConvergeOptions;
  #highCount = 0;
  #dirtiedPages = 0;
  #transferredBefore = 0;
  #periodStart: number;
  #cpuPercentage = 0;
  #dirtyLimit = 0;
  #unlimitedRate = 0;
  #maxDirtyRate = 0;
  #throttle: GuestThrottle = NO_THROTTLE;

  /**
   * A throttle that does nothing unless auto-converge or dirty-limit is on.
   *
   * @param guest The guest to slow down.
   * @param options The run's settings, clock and byte count.
   */
  constructor(guest: MigratableGuest, options: AutoConvergeOptions) {
    this.#guest = guest;
    this.#options = options;
    this.#periodStart = options.clock.now();
    this.#capabilities = options.capabilities;
    this.#parameters = options.parameters;
  }

  /** The active CPU throttle percentage, 0 when none. */
  get cpuPercentage(): number {
    return this.#cpuPercentage;
  }

  /** The active dirty-rate cap in bytes per second, 0 when none. */
  get dirtyLimit(): number {
    return this.#dirtyLimit;
  }

  /**
   * A dirty-bitmap sync found pages dirty.
   *
   * @param pages How many.
   */
  synced(pages: number): void {
    this.#dirtiedPages += pages;
  }

  /**
   * A dirty-rate period closed: throttles the guest (more) on the second
   * period that dirtied more than the threshold allows.
   */
  periodClosed(): void {
    const transferred = this.#options.transferred();
    const now = this.#options.clock.now();
    const dirtiedBytes = this.#dirtiedPages * this.#options.pageSize;
    const sentBytes = transferred - this.#transferredBefore;
    const periodMs = now - this.#periodStart;
    this.#dirtiedPages = 0;
    this.#transferredBefore = transferred;
    this.#periodStart = now;
    const rate = periodMs > 0 ? dirtiedBytes * 1000 / periodMs : 0;
    this.#maxDirtyRate = Math.max(this.#maxDirtyRate, rate);
    const autoConverge = this.#capabilities["auto-converge"];
    const dirtyLimit = this.#capabilities["dirty-limit"];
    if (!autoConverge && !dirtyLimit) return;
    const parameters = this.#parameters;
    const { thresholdBytes, high } = dirtiedTooMuch(
      { dirtiedBytes, sentBytes },
      parameters["throttle-trigger-threshold"],
    );
    if (!high || ++this.#highCount < 2) return;
    this.#highCount = 0;
    if (autoConverge) {
      this.#cpuPercentage = nextCpuThrottle(
        this.#cpuPercentage,
        dirtiedBytes,
        thresholdBytes,
        parameters,
      );
    } else {
      // vcpu-dirty-limit is in MB/s (QEMU's unit), for the guest's one vCPU.
      const limit = parameters["vcpu-dirty-limit"] * 1e6;
      if (this.#dirtyLimit === limit) return;
      if (this.#dirtyLimit === 0) this.#unlimitedRate = rate;
      this.#dirtyLimit = limit;
    }
    this.#apply();
  }

  /** The migration ended: the guest runs at full speed again. */
  stop(): void {
    if (this.#cpuPercentage === 0 && this.#dirtyLimit === 0) return;
    this.#cpuPercentage = 0;
    this.#dirtyLimit = 0;
    this.#apply();
  }

  /**
   * What `query-migrate` shows: `cpu-throttle-percentage` while the CPU
   * is throttled; the dirty-limit fields while the dirty rate is capped.
   *
   * @returns The fields.
   */
  info(): ThrottleInfo {
    const info: ThrottleInfo = {};
    if (this.#cpuPercentage > 0) {
      info["cpu-throttle-percentage"] = this.#cpuPercentage;
    }
    if (this.#dirtyLimit > 0) {
      Object.assign(
        info,
        dirtyLimitInfo({
          pageSize: this.#options.pageSize,
          limit: this.#dirtyLimit,
          unlimitedRate: this.#unlimitedRate,
          maxDirtyRate: this.#maxDirtyRate,
        }),
      );
    }
    return info;
  }

  #apply(): void {
    this.#throttle = Object.freeze({
      cpuPercentage: this.#cpuPercentage,
      dirtyLimit: this.#dirtyLimit,
    });
    this.#guest.setThrottle?.(this.#throttle);
  }
}
