/**
 * Records what a report shows ({@linkcode renderMigrationReport}): samples
 * of `query-migrate` every `everyMs`, and one at each status change, from
 * a source, a proxy or a monitor.
 *
 * @module
 */

import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import type { MigrationInfo } from "./migration_info.ts";
import type { MigrationProxyInfo } from "./migration_proxy_info.ts";
import type { ReportData, ReportSample } from "./render_migration_report.ts";

const ENDED = new Set(["completed", "failed", "cancelled"]);

/** Options for {@linkcode MigrationReportRecorder}. */
export interface MigrationReportRecorderOptions<I> {
  /**
   * Turns an info into a sample (without its time), or `undefined` to
   * skip it; samples with no status or `none` (no migration yet, as
   * QEMU answers `{}` then) are skipped too, and time starts at the
   * first sample kept.
   */
  toSample: (info: I) => Omit<ReportSample, "atMs"> | undefined;
  /**
   * Milliseconds between two samples.
   *
   * @default {100}
   */
  everyMs?: number;
  /**
   * Time source.
   *
   * @default {SYSTEM_CLOCK}
   */
  clock?: Clock;
}

/**
 * A sample of a source's (or destination's) `query-migrate`: remaining and
 * sent bytes, bandwidth (`mbps`), dirty rate, passes and, when QEMU's
 * `cpu-throttle-percentage` is there, the throttle.
 *
 * @example Usage
 * ```ts
 * import { sampleOfMigrationInfo } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(sampleOfMigrationInfo({ status: "setup" }), { status: "setup" });
 * ```
 *
 * @param info The info.
 * @returns The sample.
 */
export function sampleOfMigrationInfo(
  info: MigrationInfo,
): Omit<ReportSample, "atMs"> {
  const sample: Omit<ReportSample, "atMs"> = { status: info.status };
  const ram = info.ram;
  if (ram) {
    sample.remainingBytes = ram.remaining;
    sample.transferredBytes = ram.transferred;
    sample.bandwidth = ram.mbps * 1e6 / 8;
    sample.dirtyRate = ram["dirty-pages-rate"] * ram["page-size"];
    sample.passes = ram["dirty-sync-count"];
  }
  const throttle = (info as { "cpu-throttle-percentage"?: number })[
    "cpu-throttle-percentage"
  ];
  if (typeof throttle === "number") sample.throttlePercent = throttle;
  return sample;
}

/**
 * A sample of a proxy's info: bytes sent to the destination, bandwidth,
 * and the rounds over RAM seen in the stream as passes.
 *
 * @example Usage
 * ```ts
 * import { sampleOfProxyInfo } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const sample = sampleOfProxyInfo({ status: "active", mbps: 80, rounds: 2, "max-bandwidth": 0, "max-postcopy-bandwidth": 0 });
 * assert.deepEqual(sample, { status: "active", bandwidth: 10_000_000, passes: 2 });
 * ```
 *
 * @param info The info.
 * @returns The sample.
 */
export function sampleOfProxyInfo(
  info: MigrationProxyInfo,
): Omit<ReportSample, "atMs"> {
  const sample: Omit<ReportSample, "atMs"> = { status: info.status };
  if (info.sent) sample.transferredBytes = info.sent.transferred;
  if (info.mbps !== undefined) sample.bandwidth = info.mbps * 1e6 / 8;
  if (info.rounds !== undefined) sample.passes = info.rounds;
  return sample;
}

/**
 * Samples a migration while it runs, for a report.
 *
 * @example Usage
 * ```ts
 * import { MigrationReportRecorder, sampleOfMigrationInfo, type MigrationInfo } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * let now = 0;
 * const clock = { now: () => now, sleep: () => new Promise<void>(() => {}) };
 * let info: MigrationInfo = { status: "setup" };
 * const target = Object.assign(new EventTarget(), { query: () => info });
 * const recorder = new MigrationReportRecorder(target, { toSample: sampleOfMigrationInfo, clock });
 * now = 50;
 * info = { status: "active" };
 * target.dispatchEvent(new CustomEvent("migration", { detail: { status: "active" } }));
 * now = 80;
 * info = { status: "completed" };
 * const data = recorder.stop({ title: "test", status: "completed", totalTimeMs: 80 });
 * assert.deepEqual(data.samples.map((s) => [s.atMs, s.status]), [[0, "setup"], [50, "active"], [80, "completed"]]);
 * ```
 */
export class MigrationReportRecorder<I> {
  readonly #samples: ReportSample[] = [];
  readonly #clock: Clock;
  #start: number | undefined;
  readonly #stopped = new AbortController();
  readonly #take: () => void;
  readonly #target: { query(): I } & Partial<EventTarget>;

  /**
   * Starts recording now.
   *
   * @param target What to sample: its `query()`, and its `"migration"`
   *   events when it is an EventTarget.
   * @param options How to turn an info into a sample, how often.
   */
  constructor(
    target: { query(): I } & Partial<EventTarget>,
    options: MigrationReportRecorderOptions<I>,
  ) {
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#target = target;
    this.#take = () => {
      const sample = options.toSample(target.query());
      if (!sample?.status || sample.status === "none") return;
      const last = this.#samples.at(-1);
      // Time starts at the first sample; an ended migration stays ended.
      if (last && ENDED.has(last.status) && last.status === sample.status) {
        return;
      }
      this.#start ??= this.#clock.now();
      this.#samples.push({ ...sample, atMs: this.#clock.now() - this.#start });
    };
    this.#take();
    target.addEventListener?.("migration", this.#take);
    this.#poll(options.everyMs ?? 100).catch(() => {});
  }

  async #poll(everyMs: number): Promise<void> {
    while (true) {
      await this.#clock.sleep(everyMs, this.#stopped.signal);
      this.#take();
    }
  }

  /**
   * Stops recording and gives the report's data.
   *
   * @param end The title and the outcome.
   * @returns The data, with the last sample taken now.
   */
  stop(end: Omit<ReportData, "samples">): ReportData {
    this.#take();
    this.#stopped.abort();
    this.#target.removeEventListener?.("migration", this.#take);
    return { ...end, samples: this.#samples };
  }
}
