/**
 * The replay behind `predictMigration()` (migration_model.ts): the
 * engine's precopy loop with its own decision, on expected page counts.
 * Private to lib/migration/.
 *
 * @module
 */

import {
  DEFAULT_CAPABILITIES,
  DEFAULT_PARAMETERS,
  type MigrationCapabilities,
  type MigrationParameters,
} from "./migration_parameters.ts";
import type {
  MigrationModelInput,
  MigrationModelOptions,
  MigrationPrediction,
  ModelPass,
} from "./migration_model.ts";
import {
  decideIteration,
  type IterationDecision,
  switchoverThreshold,
} from "./switchover_decision.ts";

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

/** One replay of the engine's loop, on expected page counts. */
export class ModelReplay {
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
    this.#state = input.start ? this.#resumed(input.start) : {
      timeMs: 0,
      hotPending: this.#hotPages,
      coldPending: this.#totalPages - this.#hotPages,
      dirtyLog: 0,
      syncs: 1,
      bytes: 0,
      sentOnce: 0,
    };
  }

  /** A migration under way: what is pending lies in the hot set. */
  #resumed(start: NonNullable<MigrationModelInput["start"]>): ModelState {
    const pending = Math.min(
      this.#totalPages,
      Math.ceil(start.pendingBytes / this.#pageBytes),
    );
    const hot = Math.min(pending, this.#hotPages);
    // What the guest dirtied since the last sync is in its log already.
    const writes = this.#writesPerMs * (start.msSinceSync ?? 0);
    return {
      timeMs: 0,
      hotPending: hot,
      coldPending: pending - hot,
      dirtyLog: this.#hotPages * (1 - Math.exp(-writes / this.#hotPages)),
      syncs: Math.max(1, start.passes),
      bytes: 0,
      sentOnce: start.passes <= 1
        ? this.#totalPages - pending
        : this.#totalPages,
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
    const fresh = this.#input.start === undefined && state.timeMs < 100;
    const thresholdBytes = fresh ? 0 : this.#thresholdBytes;
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
    if (pending < this.#lowest * 0.99) {
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
    const starting = this.#state.bytes === 0 && !this.#input.start;
    const first = starting ? PIPELINE_BATCHES : 0;
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
