/**
 * A pure model of a source migration: it replays the engine's precopy loop
 * (`_precopy_loop.ts`) on expected page counts instead of real pages, with
 * the engine's own switchover decision (`decideIteration`,
 * `switchoverThreshold`), so a prediction and a real run differ
 * only in what the model assumes about the guest and the link:
 *
 * ```
 * guest   W = dirty rate / page size page writes per second, uniform over a
 *         hot set of H pages (all of RAM when none is given): the dirty log
 *         holds d(t) = H · (1 − e^(−W·t/H)) distinct pages t after a sync
 * link    precopy steps go at min(link, max-bandwidth); the rate limit
 *         measures that rate, so threshold = rate × downtime-limit
 *         (0 until the first 100 ms window closed, as in the engine)
 * loop    every step: decide (estimate, sync when under the threshold,
 *         exact), then send stepMs of pages; a sync merges the log into
 *         the pages to send (pages already pending count once)
 * stop    precopy: the last pages go at the link's full rate (completion is
 *         not rate limited), plus a fixed switchover cost
 *         postcopy: only the switchover cost; the rest follows at
 *         max-postcopy-bandwidth (or the link)
 * xbzrle  a page sent again costs `xbzrleEncodedFraction` of a page when
 *         it is still in the cache (cache size / hot set of the re-sends)
 * ```
 *
 * A migration that does not converge never ends in the engine; the model
 * says so once the pages pending at a sync have not fallen below their
 * lowest for `stallPasses` syncs in a row, or after `maxTimeMs`.
 *
 * Guest throttling (auto-converge, dirty-limit) enters through
 * {@linkcode MigrationModelInput.dirtyRateFactor}: a function of the
 * passes so far that scales the dirty rate.
 *
 * @module
 */

import { ModelReplay } from "./_model_replay.ts";
import type {
  MigrationCapabilities,
  MigrationParameters,
} from "./migration_parameters.ts";

/** What the model knows about the guest, the link and the settings. */
export interface MigrationModelInput {
  /** Bytes of guest RAM. */
  ramBytes: number;
  /**
   * Bytes per second the guest writes, one page dirtied per page-size of
   * writes (as `random:RATE` and `hot-set:SIZE@RATE` do).
   */
  dirtyBytesPerSecond: number;
  /**
   * Bytes of RAM the writes fall in (a hot set); the rest of RAM is only
   * sent once.
   *
   * @default {ramBytes}
   */
  hotSetBytes?: number;
  /**
   * Where the hot set lies: at the `start` of RAM (as livemig's simulated
   * workloads put it, which the scan meets first) or `spread` over RAM.
   *
   * @default {"start"}
   */
  hotSetAt?: "start" | "spread";
  /** Bytes per second the link carries (the switchover goes at this rate). */
  linkBytesPerSecond: number;
  /**
   * Bytes the link takes at once when it was not busy (a token bucket's
   * burst, buffers on the way), which the last pages go into first.
   *
   * @default {0}
   */
  linkBurstBytes?: number;
  /**
   * Page size in bytes.
   *
   * @default {4096}
   */
  pageSize?: number;
  /** Parameters; QEMU's defaults for the others (max-bandwidth 128 MiB/s). */
  parameters?: Partial<MigrationParameters>;
  /** Capabilities: `xbzrle` and `postcopy-ram` change the prediction. */
  capabilities?: Partial<MigrationCapabilities>;
  /**
   * With `postcopy-ram`, start postcopy once this many passes are complete
   * (as `migrate --postcopy-after`); without it postcopy is never
   * requested.
   */
  postcopyAfterPasses?: number;
  /**
   * What an XBZRLE page costs, as a fraction of a page (the guest changes
   * few bytes of a page: 4 random bytes encode in about 10).
   *
   * @default {0.01}
   */
  xbzrleEncodedFraction?: number;
  /**
   * Fixed milliseconds of a switchover on top of the last pages: device
   * state, the last sync and the destination's confirmation.
   *
   * @default {10}
   */
  switchoverOverheadMs?: number;
  /**
   * Scales the dirty rate after a number of passes (1 = as given): where
   * a guest throttle (auto-converge, dirty-limit) plugs in.
   *
   * @default {() => 1}
   */
  dirtyRateFactor?: (passes: number) => number;
  /**
   * A migration under way to predict the rest of: the bytes pending, the
   * dirty-bitmap syncs so far (`dirty-sync-count`) and the milliseconds
   * since the last one (the guest's writes since are in its dirty log);
   * the prediction's times count from now. The threshold applies at once
   * (the bandwidth is measured already).
   */
  start?: { pendingBytes: number; passes: number; msSinceSync?: number };
}

/** Options for {@linkcode predictMigration}. */
export interface MigrationModelOptions {
  /**
   * Milliseconds of one iteration step (the engine's `stepMs`).
   *
   * @default {50}
   */
  stepMs?: number;
  /**
   * Most pages the engine takes from the bitmap at once (its `batchPages`).
   *
   * @default {256}
   */
  batchPages?: number;
  /**
   * Syncs in a row whose pending bytes stay at or above the lowest seen
   * before the model says the migration does not converge.
   *
   * @default {5}
   */
  stallPasses?: number;
  /**
   * Longest migration the model follows, in milliseconds.
   *
   * @default {86_400_000}
   */
  maxTimeMs?: number;
}

/** Pages to send after one dirty-bitmap sync. */
export interface ModelPass {
  /** `dirty-sync-count` after the sync. */
  pass: number;
  /** Milliseconds since the start. */
  atMs: number;
  /** Bytes still to send (`ram.remaining`). */
  remainingBytes: number;
}

/** What the model predicts. */
export interface MigrationPrediction {
  /** Whether the migration ends (precopy fits downtime-limit, or postcopy). */
  converges: boolean;
  /** How it ends: switchover in precopy, in postcopy, or not at all. */
  ending: "precopy" | "postcopy" | "none";
  /** Dirty-bitmap syncs (`dirty-sync-count`; QEMU's passes). */
  passes: number;
  /** Milliseconds from start to completion (to giving up, if none). */
  totalTimeMs: number;
  /** Milliseconds the guest is paused. */
  downtimeMs: number;
  /** Bytes sent on the wire (page headers included). */
  bytesSent: number;
  /** Bytes per second of the precopy passes: min(link, max-bandwidth). */
  precopyBytesPerSecond: number;
  /** The switchover threshold: rate × downtime-limit, in bytes. */
  thresholdBytes: number;
  /**
   * Bytes pending at the switchover; when it does not converge, the
   * lowest pending at a sync (what precopy cannot get below).
   */
  finalPendingBytes: number;
  /** Bytes pending after each sync. */
  passLog: ModelPass[];
}

/**
 * Predicts a migration by replaying the engine's precopy loop on expected
 * page counts, deciding with the engine's `decideIteration()`.
 *
 * @example Usage
 * ```ts
 * import { predictMigration } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const MiB = 1 << 20;
 * const idle = predictMigration({ ramBytes: 64 * MiB, dirtyBytesPerSecond: 0, linkBytesPerSecond: 1024 * MiB });
 * assert.equal(idle.ending, "precopy");
 * // 64 MiB at 128 MiB/s until less than 38.4 MiB (128 MiB/s × 300 ms) is
 * // left; that rest goes with the guest stopped, at the link's 1 GiB/s.
 * assert.ok(idle.finalPendingBytes < 38.4 * MiB);
 * assert.ok(idle.totalTimeMs > 250 && idle.totalTimeMs < 300);
 * assert.ok(idle.downtimeMs > 40 && idle.downtimeMs < 50);
 * const busy = predictMigration({ ramBytes: 64 * MiB, dirtyBytesPerSecond: 400 * MiB, linkBytesPerSecond: 1024 * MiB });
 * assert.equal(busy.ending, "none");
 * ```
 *
 * @param input The guest, the link and the settings.
 * @param options Step size and when to give up.
 * @returns The prediction.
 * @throws {RangeError} If a size or rate is negative or not a number.
 */
export function predictMigration(
  input: MigrationModelInput,
  options: MigrationModelOptions = {},
): MigrationPrediction {
  checkInput(input);
  return new ModelReplay(input, options).run();
}

function checkInput(input: MigrationModelInput): void {
  const fields: [string, number | undefined][] = [
    ["ramBytes", input.ramBytes],
    ["dirtyBytesPerSecond", input.dirtyBytesPerSecond],
    ["hotSetBytes", input.hotSetBytes],
    ["pageSize", input.pageSize],
  ];
  for (const [name, value] of fields) {
    if (value !== undefined && !(value >= 0 && Number.isFinite(value))) {
      throw new RangeError(
        `Cannot predict migration as ${name} must be a finite number >= 0: received ${value}`,
      );
    }
  }
  if (!(input.linkBytesPerSecond > 0)) {
    throw new RangeError(
      `Cannot predict migration as linkBytesPerSecond must be > 0: received ${input.linkBytesPerSecond}`,
    );
  }
}
