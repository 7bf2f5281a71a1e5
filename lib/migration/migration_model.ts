/**
 * A pure model of a source migration: it replays the engine's precopy loop
 * (`_precopy_loop.ts`) on expected page counts instead of real pages, with
 * the engine's own switchover decision ({@linkcode decideIteration},
 * {@linkcode switchoverThreshold}), so a prediction and a real run differ
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

import {
  DEFAULT_CAPABILITIES,
  DEFAULT_PARAMETERS,
  type MigrationCapabilities,
  type MigrationParameters,
} from "./migration_parameters.ts";
import {
  decideIteration,
  type IterationDecision,
  switchoverThreshold,
} from "./switchover_decision.ts";

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

/** Bytes of a page record's header (be64 offset|flags). */
const RECORD_HEADER = 8;

/** Batches the engine's pipeline scans ahead of the rate limit. */
const PIPELINE_BATCHES = 3;

/** The model's running state. */
interface ModelState {
  timeMs: number;
  hotPending: number;
  coldPending: number;
  dirtyLog: number;
  syncs: number;
  bytes: number;
  /** Pages sent once already (the rest of a pass is a first send). */
  sentOnce: number;
}

/**
 * Predicts a migration by replaying the engine's precopy loop on expected
 * page counts, deciding with the engine's {@linkcode decideIteration}.
 *
 * @example Usage
 * ```ts
 * import { predictMigration } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const MiB = 1 << 20;
 * const idle = predictMigration({ ramBytes: 64 * MiB, dirtyBytesPerSecond: 0, linkBytesPerSecond: 1024 * MiB });
 * assert.ok(idle.converges);
 * assert.ok(Math.abs(idle.totalTimeMs - 500) < 20); // 64 MiB at 128 MiB/s
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
  const model = new Model(input, options);
  return model.run();
}

/** One replay of the engine's loop. */
class Model {
  readonly #pageBytes: number;
  readonly #totalPages: number;
  readonly #hotPages: number;
  readonly #writesPerMs: number;
  readonly #rate: number;
  readonly #parameters: MigrationParameters;
  readonly #capabilities: MigrationCapabilities;
  readonly #input: MigrationModelInput;
  readonly #stepMs: number;
  readonly #batchPages: number;
  readonly #stallPasses: number;
  readonly #maxTimeMs: number;
  readonly #state: ModelState;
  readonly #passLog: ModelPass[] = [];
  #lowest = Infinity;
  #stalled = 0;

  constructor(input: MigrationModelInput, options: MigrationModelOptions) {
    checkInput(input);
    const pageSize = input.pageSize ?? 4096;
    this.#input = input;
    this.#pageBytes = pageSize;
    this.#totalPages = Math.ceil(input.ramBytes / pageSize);
    this.#hotPages = Math.max(
      1,
      Math.min(
        this.#totalPages,
        Math.floor((input.hotSetBytes ?? input.ramBytes) / pageSize),
      ),
    );
    this.#writesPerMs = input.dirtyBytesPerSecond / pageSize / 1000;
    this.#parameters = { ...DEFAULT_PARAMETERS, ...input.parameters };
    this.#capabilities = { ...DEFAULT_CAPABILITIES, ...input.capabilities };
    const limit = this.#parameters["max-bandwidth"];
    this.#rate = limit > 0
      ? Math.min(limit, input.linkBytesPerSecond)
      : input.linkBytesPerSecond;
    this.#stepMs = options.stepMs ?? 50;
    this.#batchPages = options.batchPages ?? 256;
    this.#stallPasses = options.stallPasses ?? 5;
    this.#maxTimeMs = options.maxTimeMs ?? 86_400_000;
    this.#state = {
      timeMs: 0,
      hotPending: this.#hotPages,
      coldPending: this.#totalPages - this.#hotPages,
      dirtyLog: 0,
      syncs: 1,
      bytes: 0,
      sentOnce: 0,
    };
  }

  get #thresholdBytes(): number {
    return switchoverThreshold({
      measuredBytesPerMs: this.#rate / 1000,
      downtimeLimitMs: this.#parameters["downtime-limit"],
      availSwitchoverBandwidth: this.#parameters["avail-switchover-bandwidth"],
    });
  }

  run(): MigrationPrediction {
    const state = this.#state;
    while (state.timeMs <= this.#maxTimeMs) {
      const decision = this.#decide();
      if (decision.step === "complete") return this.#complete();
      if (decision.step === "postcopy") return this.#postcopy();
      if (this.#stalled >= this.#stallPasses) break;
      this.#step();
    }
    return this.#prediction("none", 0, this.#lowest * this.#pageBytes);
  }

  /** The engine's `decide()`: estimate, sync when under the threshold, exact. */
  #decide(): IterationDecision {
    const state = this.#state;
    // The rate limiter's first window closes after 100 ms; until then the
    // measured bandwidth, and so the threshold, is 0.
    const thresholdBytes = state.timeMs < 100 ? 0 : this.#thresholdBytes;
    const decisionState = {
      pendingBytes: this.#pending * this.#pageBytes,
      exact: false,
      thresholdBytes,
      postcopyRequested: this.#postcopyRequested(),
      inPostcopy: false,
      mustPrecopyBytes: 0,
    };
    const decision = decideIteration(decisionState);
    if (decision.step !== "sync") return decision;
    this.#sync();
    return decideIteration({
      ...decisionState,
      pendingBytes: this.#pending * this.#pageBytes,
      exact: true,
      postcopyRequested: this.#postcopyRequested(),
    });
  }

  get #pending(): number {
    return this.#state.hotPending + this.#state.coldPending;
  }

  #postcopyRequested(): boolean {
    const after = this.#input.postcopyAfterPasses;
    return this.#capabilities["postcopy-ram"] && after !== undefined &&
      this.#state.syncs - 1 >= after;
  }

  /** Merges the dirty log into the pages to send. */
  #sync(): void {
    const state = this.#state;
    const hot = this.#hotPages;
    state.hotPending += state.dirtyLog * (1 - state.hotPending / hot);
    state.dirtyLog = 0;
    state.syncs++;
    const pending = this.#pending;
    this.#passLog.push({
      pass: state.syncs,
      atMs: state.timeMs,
      remainingBytes: Math.round(pending) * this.#pageBytes,
    });
    if (pending < this.#lowest) {
      this.#lowest = pending;
      this.#stalled = 0;
    } else {
      this.#stalled++;
    }
  }

  /** One step of `stepMs` at the precopy rate, or less when pages run out. */
  #step(): void {
    const state = this.#state;
    const pending = this.#pending;
    const resend = this.#resendPageBytes();
    const firstBytes = this.#pageBytes + RECORD_HEADER;
    const budget = this.#stepBudget();
    const firstLeft = Math.max(0, this.#totalPages - state.sentOnce);
    const firstPages = Math.min(firstLeft, pending, budget / firstBytes);
    const againPages = Math.min(
      pending - firstPages,
      (budget - firstPages * firstBytes) / resend,
    );
    const pages = firstPages + againPages;
    const bytes = firstPages * firstBytes + againPages * resend;
    const ms = bytes / this.#rate * 1000;
    this.#take(pages);
    state.sentOnce += firstPages;
    state.bytes += bytes;
    this.#advance(Math.max(ms, 1));
  }

  /**
   * Bytes one step takes out of the bitmap. Rate limited, a step lasts
   * until the limiter has taken a whole window's budget, in batches of at
   * most `batchPages` (the pipeline scans ahead of the wire); unlimited, it
   * lasts `stepMs`.
   */
  #stepBudget(): number {
    const limited = this.#parameters["max-bandwidth"] > 0;
    if (!limited) return this.#rate * this.#stepMs / 1000;
    const pageBytes = this.#pageBytes;
    const batchPages = Math.max(
      1,
      Math.min(this.#batchPages, Math.floor(this.#rate / 20 / pageBytes)),
    );
    const window = this.#rate / 10;
    const batchBytes = batchPages * (pageBytes + RECORD_HEADER);
    // The first step also fills the pipeline between the bitmap and the
    // wire (three batches deep), which stays scanned ahead from then on.
    const first = this.#state.bytes === 0 ? PIPELINE_BATCHES : 0;
    return (Math.ceil(window / batchBytes) + first) * batchBytes;
  }

  /**
   * Takes pages out of the bitmap in scan order. With the hot set at the
   * start of RAM the first pass sends it first; the early sync of a pass
   * comes in the cold rest, so later passes finish the cold pages, then
   * wrap to the hot set. Spread out, both shrink alike.
   */
  #take(pages: number): void {
    const state = this.#state;
    const pending = this.#pending;
    if (!(pending > 0)) return;
    if (this.#input.hotSetAt === "spread") {
      const share = Math.min(1, pages / pending);
      state.hotPending -= state.hotPending * share;
      state.coldPending -= state.coldPending * share;
      return;
    }
    const hotFirst = state.syncs === 1;
    const first = hotFirst ? state.hotPending : state.coldPending;
    const fromFirst = Math.min(first, pages);
    const fromSecond = Math.min(pages - fromFirst, pending - first);
    if (hotFirst) {
      state.hotPending -= fromFirst;
      state.coldPending -= fromSecond;
    } else {
      state.coldPending -= fromFirst;
      state.hotPending -= fromSecond;
    }
  }

  /** What a page sent again costs on the wire, with XBZRLE when it is on. */
  #resendPageBytes(): number {
    const full = this.#pageBytes + RECORD_HEADER;
    if (!this.#capabilities.xbzrle) return full;
    const cached = Math.min(
      1,
      this.#parameters["xbzrle-cache-size"] /
        (this.#hotPages * this.#pageBytes),
    );
    const encoded =
      this.#pageBytes * (this.#input.xbzrleEncodedFraction ?? 0.01) +
      RECORD_HEADER + 3;
    return cached * encoded + (1 - cached) * full;
  }

  /** Time passes: the guest keeps writing into its hot set. */
  #advance(ms: number): void {
    const state = this.#state;
    const hot = this.#hotPages;
    const factor = this.#input.dirtyRateFactor?.(state.syncs - 1) ?? 1;
    const writes = this.#writesPerMs * factor * ms;
    state.dirtyLog = hot - (hot - state.dirtyLog) * Math.exp(-writes / hot);
    state.timeMs += ms;
  }

  /** Precopy completion: the rest at the link's full rate, guest stopped. */
  #complete(): MigrationPrediction {
    const state = this.#state;
    const pendingBytes = this.#pending * this.#pageBytes;
    const wireBytes = this.#pending * this.#resendPageBytes();
    const burst = Math.min(wireBytes, this.#input.linkBurstBytes ?? 0);
    const downtime =
      (wireBytes - burst) / this.#input.linkBytesPerSecond * 1000 +
      (this.#input.switchoverOverheadMs ?? 10);
    state.bytes += wireBytes;
    state.timeMs += downtime;
    return this.#prediction("precopy", downtime, pendingBytes);
  }

  /** Postcopy: the guest runs on the destination; the rest follows. */
  #postcopy(): MigrationPrediction {
    const state = this.#state;
    const pendingBytes = this.#pending * this.#pageBytes;
    const wireBytes = this.#pending * (this.#pageBytes + RECORD_HEADER);
    const limit = this.#parameters["max-postcopy-bandwidth"];
    const link = this.#input.linkBytesPerSecond;
    const rate = limit > 0 ? Math.min(limit, link) : link;
    const downtime = this.#input.switchoverOverheadMs ?? 10;
    state.bytes += wireBytes;
    state.timeMs += downtime + wireBytes / rate * 1000;
    return this.#prediction("postcopy", downtime, pendingBytes);
  }

  #prediction(
    ending: MigrationPrediction["ending"],
    downtimeMs: number,
    finalPendingBytes: number,
  ): MigrationPrediction {
    const state = this.#state;
    return {
      converges: ending !== "none",
      ending,
      passes: state.syncs + (ending === "precopy" ? 1 : 0),
      totalTimeMs: Math.round(state.timeMs),
      downtimeMs: Math.round(downtimeMs),
      bytesSent: Math.round(state.bytes),
      precopyBytesPerSecond: this.#rate,
      thresholdBytes: Math.round(this.#thresholdBytes),
      finalPendingBytes: Math.round(finalPendingBytes),
      passLog: this.#passLog,
    };
  }
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
