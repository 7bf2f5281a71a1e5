import type { XbzrleCacheStats } from "../ram/xbzrle_page_encoder.ts";
import type { MigrationStatus } from "./migration_state.ts";

/** QEMU's `MigrationStats` (`query-migrate`'s `ram`), the fields livemig fills. */
export interface RamStats {
  /** All bytes sent, headers included. */
  transferred: number;
  /** Dirty pages still to send × page size. */
  remaining: number;
  /** Bytes of guest RAM. */
  total: number;
  /** Zero pages sent. */
  duplicate: number;
  /** Always 0 (QEMU 7.2 keeps the field). */
  skipped: number;
  /** Whole pages sent. */
  normal: number;
  /** `normal` × page size. */
  "normal-bytes": number;
  /** Pages dirtied per second over the last sync period of at least 1 s. */
  "dirty-pages-rate": number;
  /** Megabits per second of the last window (at completion: the average). */
  mbps: number;
  /** Dirty-bitmap syncs, the setup one included. */
  "dirty-sync-count": number;
  /** Pages the destination asked for in postcopy. */
  "postcopy-requests": number;
  /** The target page size. */
  "page-size": number;
  /** Always 0: livemig has no multifd. */
  "multifd-bytes": number;
  /** Pages sent per second in the last window. */
  "pages-per-second": number;
  /** Bytes sent while the guest was running (precopy). */
  "precopy-bytes": number;
  /** Bytes sent while the guest was stopped. */
  "downtime-bytes": number;
  /** Bytes sent after postcopy started. */
  "postcopy-bytes": number;
  /** Always 0: livemig has no zero-copy send. */
  "dirty-sync-missed-zero-copy": number;
}

/**
 * What `query-migrate` reports (QEMU's `MigrationInfo`), with QEMU's field
 * names; fields appear when QEMU would show them.
 *
 * @example Usage
 * ```ts
 * import type { MigrationInfo } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const info: MigrationInfo = { status: "none" };
 * assert.equal(info.status, "none");
 * ```
 */
export interface MigrationInfo {
  /** Where the migration is. */
  status: MigrationStatus;
  /** Milliseconds from the start to the end of setup. */
  "setup-time"?: number;
  /** Milliseconds since the start (running) or start to end (done). */
  "total-time"?: number;
  /** Milliseconds the switchover is expected to take, while running. */
  "expected-downtime"?: number;
  /** Milliseconds the guest was stopped, once completed. */
  downtime?: number;
  /**
   * livemig's extension, source in precopy: milliseconds until completion,
   * from the planner's model fed with the measured rates (absent while it
   * cannot tell, and when not converging).
   */
  "x-livemig-eta-ms"?: number;
  /** How much later than `x-livemig-eta-ms` the end may come, in ms. */
  "x-livemig-eta-noise-ms"?: number;
  /**
   * Set when the pending bytes stopped falling: why, and what to do.
   */
  "x-livemig-not-converging"?: string;
  /**
   * livemig's extension, a completed background snapshot's result only:
   * SHA-256 of each RAM block as the snapshot holds it (the RAM at the
   * snapshot point, not as it is now), by idstr: what `ramSha256()` gives
   * on a destination that loaded it.
   */
  "x-livemig-snapshot-ram-sha256"?: Record<string, string>;
  /** RAM statistics. */
  ram?: RamStats;
  /** XBZRLE statistics, with the `xbzrle` capability. */
  "xbzrle-cache"?: XbzrleCacheStats;
  /** What went wrong, once failed. */
  "error-desc"?: string;
  /** Destination, with `postcopy-blocktime`: total ms vCPUs waited. */
  "postcopy-blocktime"?: number;
  /** Destination, with `postcopy-blocktime`: ms per vCPU. */
  "postcopy-vcpu-blocktime"?: number[];
  /** auto-converge: the guest's CPU throttle in percent, while throttled. */
  "cpu-throttle-percentage"?: number;
  /**
   * dirty-limit (QEMU 8.1 on), while the guest's dirty rate is capped:
   * microseconds it sleeps per dirty-ring round to hold the cap.
   */
  "dirty-limit-throttle-time-per-round"?: number;
  /** dirty-limit: microseconds the guest takes to fill its dirty ring. */
  "dirty-limit-ring-full-time"?: number;
}
