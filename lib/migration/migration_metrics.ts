/**
 * What a source migration measures while it runs, in one clock-driven
 * object (QEMU keeps these in `MigrationState` and `RAMState`: `mbps`,
 * `expected_downtime`, `dirty_pages_rate`, the byte counters of
 * `ram_counters`; Cloud Hypervisor in its `MemoryMigrationContext`):
 *
 * ```
 * bandwidth      bytes/ms of the last rate-limit window → the switchover
 *                threshold and expected-downtime
 * dirty rate     pages dirtied per second, over sync periods of ≥ 1 s
 * time marks     start ─ setup done ─ guest stopped ─ downtime ends ─ end
 * bytes          every connection of the migration, added up:
 *                ├ precopy-bytes ┤ downtime-bytes ├ postcopy-bytes ┤
 *                                └ stop           └ postcopy start
 * ```
 *
 * It reads the bytes from the connections' rate limiters when asked, so
 * nothing is counted per page.
 *
 * @module
 */

import type { PageEncoderCounters } from "../ram/page_encoder_stream.ts";
import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import type { RateWindow } from "../streams/rate_limit_stream.ts";
import type { RamStats } from "./migration_info.ts";
import { expectedDowntime } from "./switchover_decision.ts";

/** One dirty-bitmap sync: how long since the one before, what it found. */
export interface SyncCount {
  /** Seconds since the sync before (or the start of the migration). */
  seconds: number;
  /** Bytes of distinct pages written in that time. */
  dirtiedBytes: number;
}

/** Options for {@linkcode MigrationMetrics}. */
export interface MigrationMetricsOptions {
  /** The target page size in bytes. */
  pageSize: number;
  /** Bytes of guest RAM (`ram.total`). */
  totalBytes: number;
  /** Time source; the migration starts at its `now()`. Defaults to the real clock. */
  clock?: Clock;
}

/** A byte count that grows while a connection sends (a rate limiter's). */
export interface PassedBytes {
  /** Bytes that passed so far. */
  readonly bytesPassed: number;
}

/** What {@linkcode MigrationMetrics.ramStats} takes from the dirty-page scan. */
export interface RamScanState {
  /** Dirty pages still to send. */
  remainingPages: number;
  /** Dirty-bitmap syncs so far, the setup one included. */
  dirtySyncCount: number;
  /** Pages the destination asked for in postcopy. */
  postcopyRequests: number;
}

/**
 * The measurements of one source migration: created when it starts, fed
 * by its rate-limit windows, dirty-bitmap syncs and phase changes, read by
 * the switchover decision and by `query-migrate`.
 *
 * @example Usage
 * ```ts
 * import { MigrationMetrics } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * let now = 0;
 * const clock = { now: () => now, sleep: () => Promise.resolve() };
 * const metrics = new MigrationMetrics({ pageSize: 4096, totalBytes: 1 << 20, clock });
 * const link = { bytesPassed: 0 };
 * metrics.countChannel(link);
 * now = 10;
 * metrics.setupDone();
 * // 100 pages went out in a window of 100 ms: 4096 bytes/ms.
 * metrics.counters.normal = 100;
 * link.bytesPassed = 409_600;
 * now = 110;
 * metrics.recordWindow({ bytes: 409_600, ms: 100, bytesPerMs: 4096 });
 * assert.equal(metrics.bytesPerMs, 4096);
 * assert.equal(metrics.expectedDowntime(50, 300), 50);
 * // Stop the guest, send the last two pages, switch over.
 * metrics.guestStopped();
 * link.bytesPassed += 8192;
 * now = 120;
 * metrics.downtimeEnded();
 * metrics.completed();
 * assert.equal(metrics.downtime, 10);
 * assert.equal(metrics.totalTime(), 120);
 * const ram = metrics.ramStats({ remainingPages: 0, dirtySyncCount: 2, postcopyRequests: 0 });
 * assert.equal(ram.transferred, 417_792);
 * assert.equal(ram["precopy-bytes"], 409_600);
 * assert.equal(ram["downtime-bytes"], 8192);
 * assert.equal(ram["pages-per-second"], 1000);
 * ```
 */
export class MigrationMetrics {
  /** The page counts; the page encoders of the migration add to them. */
  readonly counters: PageEncoderCounters = {
    duplicate: 0,
    normal: 0,
    xbzrle: 0,
    unchanged: 0,
  };
  readonly #clock: Clock;
  readonly #pageSize: number;
  readonly #totalBytes: number;
  readonly #startTime: number;
  #setupTime: number | undefined;
  #endTime: number | undefined;
  #stopTime: number | undefined;
  #downtime: number | undefined;
  #bytesAtStop = 0;
  #postcopyStartBytes: number | undefined;
  #bytesPerMs = 0;
  #mbps = 0;
  #pagesPerSecond = 0;
  #pagesAtWindow = 0;
  #dirtyPagesRate = 0;
  #ratePeriodStart: number;
  #ratePeriodDirtied = 0;
  #ratePeriodPages = 0;
  #ratePeriodSyncs = 0;
  #syncIntervalMs = 1000;
  #lastSyncAt: number;
  readonly #syncCounts: SyncCount[] = [];
  #bytesBefore = 0;
  #channel: PassedBytes | undefined;
  #preempt: PassedBytes | undefined;

  /**
   * Constructs a new instance; the migration starts now.
   *
   * @param options The page size, the RAM size and the clock.
   */
  constructor(options: MigrationMetricsOptions) {
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#pageSize = options.pageSize;
    this.#totalBytes = options.totalBytes;
    this.#startTime = this.#clock.now();
    this.#ratePeriodStart = this.#startTime;
    this.#lastSyncAt = this.#startTime;
  }

  /** The bandwidth of the last rate-limit window in bytes/ms; 0 before it. */
  get bytesPerMs(): number {
    return this.#bytesPerMs;
  }

  /**
   * The mean time between two syncs over the period `dirty-pages-rate` was
   * last measured on, in ms (1000 before one closed): the dirty pages a
   * sync counts are distinct pages written since the last one, so how
   * many writes a rate stands for depends on it.
   */
  get dirtySyncIntervalMs(): number {
    return this.#syncIntervalMs;
  }

  /**
   * The first sync and the last 5: the seconds since the one before and
   * the bytes of distinct pages each found dirtied.
   */
  get syncCounts(): readonly SyncCount[] {
    return this.#syncCounts;
  }

  /** Pages sent so far in any record that carries one (zero, page, XBZRLE). */
  get pagesSent(): number {
    const c = this.counters;
    return c.duplicate + c.normal + c.xbzrle;
  }

  /** Milliseconds from the start to the end of setup, once setup is done. */
  get setupTime(): number | undefined {
    return this.#setupTime;
  }

  /** Milliseconds the guest was stopped, once the downtime ended. */
  get downtime(): number | undefined {
    return this.#downtime;
  }

  /**
   * Bytes sent so far on every connection: the main ones, one after the
   * other, and the current postcopy-preempt one.
   */
  get transferred(): number {
    return this.#bytesBefore + (this.#channel?.bytesPassed ?? 0) +
      (this.#preempt?.bytesPassed ?? 0);
  }

  /**
   * Milliseconds since the start, or from the start to the end once the
   * migration ended.
   *
   * @returns The total time, rounded.
   */
  totalTime(): number {
    return Math.round((this.#endTime ?? this.#clock.now()) - this.#startTime);
  }

  /**
   * Counts a new main connection from now on; the bytes of the one before
   * it (a postcopy recovery replaces a broken one) stay counted.
   *
   * @param channel The new connection's byte count.
   */
  countChannel(channel: PassedBytes): void {
    if (this.#channel) this.#bytesBefore += this.#channel.bytesPassed;
    this.#channel = channel;
  }

  /**
   * Counts the current postcopy-preempt connection, or none: the bytes of
   * a preempt connection lost with a pause drop out of the total.
   *
   * @param channel Its byte count, or `undefined`.
   */
  countPreempt(channel: PassedBytes | undefined): void {
    this.#preempt = channel;
  }

  /** Setup is done (the RAM section started): records `setup-time`. */
  setupDone(): void {
    this.#setupTime = Math.round(this.#clock.now() - this.#startTime);
  }

  /**
   * A rate-limit window closed: its bandwidth becomes the one the
   * threshold uses, and `mbps` and `pages-per-second` follow.
   *
   * @param window What the window measured.
   */
  recordWindow(window: RateWindow): void {
    this.#bytesPerMs = window.bytesPerMs;
    this.#mbps = window.bytes * 8 / window.ms / 1000;
    const pages = this.pagesSent;
    this.#pagesPerSecond = Math.round(
      (pages - this.#pagesAtWindow) * 1000 / window.ms,
    );
    this.#pagesAtWindow = pages;
  }

  /**
   * The dirty bitmap was synced. Once the current rate period lasted a
   * second or more, it closes: `dirty-pages-rate` is what was dirtied
   * over it.
   *
   * @param dirtiedPages Pages the sync found dirtied since the last one.
   * @returns The pages sent during the period that closed (for the XBZRLE
   *   rates), or `undefined` while the period goes on.
   */
  recordSync(dirtiedPages: number): number | undefined {
    this.#ratePeriodDirtied += dirtiedPages;
    this.#ratePeriodSyncs++;
    const now = this.#clock.now();
    this.#syncCounts.push({
      seconds: (now - this.#lastSyncAt) / 1000,
      dirtiedBytes: dirtiedPages * this.#pageSize,
    });
    // The first sync (a whole first pass, the longest) stays: against the
    // shorter ones it tells a hot set from all of RAM.
    if (this.#syncCounts.length > 6) this.#syncCounts.splice(1, 1);
    this.#lastSyncAt = now;
    const period = now - this.#ratePeriodStart;
    if (period < 1000) return undefined;
    this.#dirtyPagesRate = Math.round(this.#ratePeriodDirtied * 1000 / period);
    this.#syncIntervalMs = period / this.#ratePeriodSyncs;
    this.#ratePeriodSyncs = 0;
    const sent = this.pagesSent;
    const sentInPeriod = sent - this.#ratePeriodPages;
    this.#ratePeriodPages = sent;
    this.#ratePeriodDirtied = 0;
    this.#ratePeriodStart = now;
    return sentInPeriod;
  }

  /** The guest stopped: the downtime starts, later bytes are not precopy. */
  guestStopped(): void {
    this.#stopTime = this.#clock.now();
    this.#bytesAtStop = this.transferred;
  }

  /**
   * The downtime ended (the device state is through, or postcopy runs the
   * guest on the destination): records `downtime`.
   *
   * @throws {TypeError} If the guest was never stopped.
   */
  downtimeEnded(): void {
    if (this.#stopTime === undefined) {
      throw new TypeError("Cannot end the downtime: the guest was not stopped");
    }
    this.#downtime = Math.round(this.#clock.now() - this.#stopTime);
  }

  /**
   * The guest runs again after a pause that did not end precopy (a
   * background snapshot's start): records the pause as `downtime`, and
   * bytes sent from now on count as precopy bytes, as QEMU counts bytes
   * sent while the guest runs.
   *
   * @throws {TypeError} If the guest was never stopped.
   */
  guestResumed(): void {
    this.downtimeEnded();
    this.#stopTime = undefined;
  }

  /** Postcopy started: later bytes are postcopy bytes. */
  postcopyStarted(): void {
    this.#postcopyStartBytes = this.transferred;
  }

  /**
   * The migration completed: the time stops, and `mbps` becomes the
   * average over everything after setup.
   */
  completed(): void {
    const end = this.#clock.now();
    this.#endTime = end;
    const active = end - this.#startTime - (this.#setupTime ?? 0);
    this.#mbps = active > 0 ? this.transferred * 8 / active / 1000 : 0;
  }

  /** The migration failed or was cancelled: the time stops. */
  ended(): void {
    this.#endTime = this.#clock.now();
  }

  /**
   * QEMU's `expected-downtime`: what is left to send at the last measured
   * bandwidth ({@linkcode expectedDowntime}).
   *
   * @param remainingPages Dirty pages still to send.
   * @param downtimeLimitMs `downtime-limit`, the answer until a bandwidth
   *   is known.
   * @returns Milliseconds.
   */
  expectedDowntime(remainingPages: number, downtimeLimitMs: number): number {
    return expectedDowntime({
      remainingBytes: remainingPages * this.#pageSize,
      bytesPerMs: this.#bytesPerMs,
      downtimeLimitMs,
    });
  }

  /**
   * QEMU's `query-migrate` `ram` statistics now.
   *
   * @param scan What the dirty-page scan knows.
   * @returns The statistics.
   */
  ramStats(scan: RamScanState): RamStats {
    const pageSize = this.#pageSize;
    const transferred = this.transferred;
    const stopped = this.#stopTime !== undefined;
    const postcopyStart = this.#postcopyStartBytes;
    const counters = this.counters;
    return {
      transferred,
      remaining: scan.remainingPages * pageSize,
      total: this.#totalBytes,
      duplicate: counters.duplicate,
      skipped: 0,
      normal: counters.normal,
      "normal-bytes": counters.normal * pageSize,
      "dirty-pages-rate": this.#dirtyPagesRate,
      mbps: this.#mbps,
      "dirty-sync-count": scan.dirtySyncCount,
      "postcopy-requests": scan.postcopyRequests,
      "page-size": pageSize,
      "multifd-bytes": 0,
      "pages-per-second": this.#pagesPerSecond,
      "precopy-bytes": stopped ? this.#bytesAtStop : transferred,
      "downtime-bytes": stopped
        ? (postcopyStart ?? transferred) - this.#bytesAtStop
        : 0,
      "postcopy-bytes": postcopyStart === undefined
        ? 0
        : transferred - postcopyStart,
      "dirty-sync-missed-zero-copy": 0,
    };
  }
}
