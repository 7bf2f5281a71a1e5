/**
 * One run of a source migration: everything that lives from one
 * `migrate()` or `migrateToFile()` call to its end (QEMU keeps it in
 * `MigrationState` and `RAMState`): the connection(s), the dirty-page
 * scan, the XBZRLE encoder, the metrics and page counters, the postcopy
 * page requests, the abort controller and the waits for `continue` and
 * `resume`. `SourceMigration` makes a fresh one for every migration, so
 * nothing carries over from one to the next; `_migration_thread.ts` and
 * the phases (`_precopy_loop.ts`, `_postcopy_source.ts`) work on it.
 * Private to the source.
 *
 * @module
 */

import { MigrationAbortedError } from "../errors.ts";
import type { MigratableGuest } from "../guest/migratable_guest.ts";
import { PageRequestQueue } from "../postcopy/page_request_queue.ts";
import { DirtyPageScanner } from "../ram/dirty_page_scanner.ts";
import { PageEncoderStream } from "../ram/page_encoder_stream.ts";
import { XbzrleCache } from "../ram/xbzrle_cache.ts";
import { XbzrlePageEncoder } from "../ram/xbzrle_page_encoder.ts";
import type { Clock } from "../streams/clock.ts";
import type { RateWindow } from "../streams/rate_limit_stream.ts";
import type { RandomAccessFile, Transport } from "../transport/transport.ts";
import { aborted } from "./_aborted.ts";
import { AutoConverge } from "./_auto_converge.ts";
import { OutgoingChannel } from "./_outgoing_channel.ts";
import { recvBitmapBytes, servePageRequest } from "./_page_requests.ts";
import type { PreemptChannel } from "./_preempt_channel.ts";
import { SourceEta } from "./_source_eta.ts";
import type { MigrationInfo } from "./migration_info.ts";
import { MigrationMetrics } from "./migration_metrics.ts";
import type {
  MigrationCapabilities,
  MigrationParameters,
} from "./migration_parameters.ts";
import {
  isRunningStatus,
  type MigrationState,
  type MigrationStatus,
} from "./migration_state.ts";

/** What a `SourceMigration` fixes at construction; each run reads it. */
export interface SourceConfig {
  readonly guest: MigratableGuest;
  readonly clock: Clock;
  /** The machine name in the CONFIGURATION section. */
  readonly machine: string;
  readonly uuid: Uint8Array | undefined; // sent with validate-uuid on
  /** Most pages per batch through the page stages. */
  readonly batchPages: number;
  /** Longest iteration step in milliseconds. */
  readonly stepMs: number;
  /** Complete passes over RAM after which postcopy is requested. */
  readonly postcopyAfterPasses: number | undefined;
  readonly snapshotCopyBytes: number; // background-snapshot's copy limit
  readonly capabilities: Readonly<MigrationCapabilities>;
  /** Changed in place by `setParameters()`: a run sees changes at once. */
  readonly parameters: Readonly<MigrationParameters>;
}

/** Options for {@linkcode SourceRun}. */
export interface SourceRunOptions {
  /** The migration's state machine. */
  state: MigrationState;
  /** Called on every dirty-bitmap sync with the sync count. */
  onPass: (count: number) => void;
  /** Called when progress is worth reporting (`force`: always report). */
  onProgress: (force: boolean) => void;
}

/** The connections a postcopy recovery continues on. */
export interface ResumeConnections {
  /** The new main connection. */
  transport: Transport;
  /** A new postcopy-preempt connection. */
  preempt?: Transport;
}

/** The per-run state of a source migration, shared by its phases. */
export class SourceRun {
  /** The migration's fixed configuration and live parameters. */
  readonly config: SourceConfig;
  /** The migration's state machine. */
  readonly state: MigrationState;
  /** What this run measured. */
  readonly metrics: MigrationMetrics;
  /** Pages the destination asked for in postcopy. */
  readonly requests: PageRequestQueue = new PageRequestQueue();
  /** The block the last page record named (shared by the page encoders). */
  readonly lastBlock: { name: string | undefined } = { name: undefined };
  /** Slows the guest when it dirties too fast (auto-converge, dirty-limit). */
  readonly throttle: AutoConverge;
  /** What went wrong last, for `error-desc` once failed. */
  errorDesc: string | undefined;
  /** The multifd channels, with the capability `multifd`. */
  multifd: { readonly multifdBytes: number } | undefined;
  readonly #abort = new AbortController();
  readonly #abandon = new AbortController();
  readonly #onPass: (count: number) => void;
  #eta: SourceEta | undefined;
  readonly #onProgress: (force: boolean) => void;
  #channel: OutgoingChannel | undefined;
  #scanner: DirtyPageScanner | undefined;
  #xbzrle: XbzrlePageEncoder | undefined;
  #preempt: PreemptChannel | undefined;
  #postcopyRequested = false;
  #switchover: PromiseWithResolvers<void> | undefined;
  #resume: PromiseWithResolvers<ResumeConnections> | undefined;

  /**
   * Starts a run: the metrics start counting now.
   *
   * @param config The migration's configuration.
   * @param options The state machine and the event callbacks.
   */
  constructor(config: SourceConfig, options: SourceRunOptions) {
    this.config = config;
    this.state = options.state;
    this.#onPass = options.onPass;
    this.#onProgress = options.onProgress;
    const memory = config.guest.memory;
    this.metrics = new MigrationMetrics({
      clock: config.clock,
      pageSize: memory.pageSize,
      totalBytes: memory.totalBytes,
    });
    this.throttle = new AutoConverge(config.guest, {
      ...config,
      pageSize: memory.pageSize,
      transferred: () => this.metrics.transferred,
    });
  }

  /** Aborted when the run is cancelled or fails. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** Whether the destination answers on a return path. */
  get usesReturnPath(): boolean {
    const capabilities = this.config.capabilities;
    return capabilities["return-path"] || capabilities["postcopy-ram"];
  }

  /** Whether postcopy runs (or is paused or recovering). */
  get inPostcopy(): boolean {
    return this.state.status.startsWith("postcopy");
  }

  /**
   * The current main connection.
   *
   * @throws {TypeError} Before it is opened or after the run ended.
   */
  get channel(): OutgoingChannel {
    if (this.#channel === undefined) {
      throw new TypeError("Cannot use the connection: the run has none open");
    }
    return this.#channel;
  }

  /**
   * The dirty-page scan.
   *
   * @throws {TypeError} Before setup started it.
   */
  get scanner(): DirtyPageScanner {
    if (this.#scanner === undefined) {
      throw new TypeError("Cannot use the dirty-page scan: it has not started");
    }
    return this.#scanner;
  }

  /** The postcopy-preempt connection, while one is open. */
  get preempt(): PreemptChannel | undefined {
    return this.#preempt;
  }

  /** Whether postcopy was requested (`migrate-start-postcopy`). */
  get postcopyRequested(): boolean {
    return this.#postcopyRequested;
  }

  /** Aborted when the app gives up the migration in postcopy. */
  get abandoned(): AbortSignal {
    return this.#abandon.signal;
  }

  /**
   * Gives the migration up in postcopy: the run stops serving the
   * destination and ends in `postcopy-paused` (see `_postcopy_source.ts`).
   *
   * @param reason Why.
   */
  abandon(reason: unknown): void {
    this.#abandon.abort(reason);
  }

  /**
   * Aborts the run.
   *
   * @param reason Why.
   */
  abort(reason: unknown): void {
    this.#abort.abort(reason);
  }

  /**
   * Stops everything the run holds after a failure: aborts, fails the
   * current connection and stops the dirty log.
   *
   * @param reason Why.
   */
  fail(reason: unknown): void {
    this.#abort.abort(reason);
    this.#channel?.fail(reason);
    this.#scanner?.stop();
    this.throttle.stop();
  }

  /** The run ended: live parameter changes and pauses no longer apply. */
  release(): void {
    this.#switchover = undefined;
    this.#channel = undefined;
  }

  /** Requests postcopy (`migrate-start-postcopy`). */
  requestPostcopy(): void {
    this.#postcopyRequested = true;
  }

  /**
   * Opens a main connection, counted from now on; rate-limited at
   * `max-bandwidth`, or `max-postcopy-bandwidth` in postcopy.
   *
   * @param transport The connection.
   * @param returnPath Whether to read the return path.
   * @returns The channel.
   */
  openChannel(transport: Transport, returnPath: boolean): OutgoingChannel {
    const { clock, guest, parameters } = this.config;
    return this.#use(OutgoingChannel.toTransport(transport, {
      clock,
      pageSize: guest.memory.pageSize,
      bytesPerSecond: this.inPostcopy
        ? parameters["max-postcopy-bandwidth"]
        : parameters["max-bandwidth"],
      onWindow: (window) => this.#onWindow(window),
      ...(returnPath
        ? {
          returnPath: {
            onRequest: (block: string, start: number, length: number) =>
              servePageRequest(this, { block, start, length }),
            bitmapBytes: (block: string) => recvBitmapBytes(this, block),
          },
        }
        : {}),
    }));
  }

  /**
   * Opens a mapped-ram file as the run's connection.
   *
   * @param file The file.
   * @param offset Where the stream starts in it.
   * @returns The channel.
   */
  openMappedRamFile(file: RandomAccessFile, offset: number): OutgoingChannel {
    const { clock, guest, parameters } = this.config;
    return this.#use(OutgoingChannel.toMappedRamFile(file, offset, {
      clock,
      pageSize: guest.memory.pageSize,
      bytesPerSecond: parameters["max-bandwidth"],
      onWindow: (window) => this.#onWindow(window),
    }));
  }

  /**
   * Uses a new postcopy-preempt connection, or none.
   *
   * @param preempt The connection, or `undefined`.
   */
  usePreempt(preempt: PreemptChannel | undefined): void {
    this.#preempt = preempt;
    this.metrics.countPreempt(preempt);
  }

  /**
   * Starts the dirty-page scan with every page to send (QEMU's setup
   * sync), and XBZRLE when that capability is on.
   */
  startScanning(): void {
    const scanner = new DirtyPageScanner(this.config.guest.memory);
    this.#scanner = scanner;
    this.#onPass(scanner.syncCount);
    if (this.config.capabilities.xbzrle) this.#newXbzrle();
  }

  /** Syncs the dirty bitmap; closes the dirty-rate period when it is due. */
  sync(): void {
    const scanner = this.scanner;
    const dirtied = scanner.sync();
    this.#xbzrle?.setGeneration(scanner.syncCount);
    this.throttle.synced(dirtied);
    const sentInPeriod = this.metrics.recordSync(dirtied);
    if (sentInPeriod !== undefined) {
      this.#xbzrle?.closeRatePeriod(sentInPeriod);
      this.throttle.periodClosed();
    }
    this.#onPass(scanner.syncCount);
  }

  /**
   * A page encoder counting into the run's metrics.
   *
   * @param finalPass Whether this is the pass with the guest stopped.
   * @param xbzrle Whether XBZRLE may be used (when it is on).
   * @returns The stage.
   */
  pageEncoder(finalPass: boolean, xbzrle = true): PageEncoderStream {
    return new PageEncoderStream({
      ...(this.#xbzrle && xbzrle ? { xbzrle: this.#xbzrle } : {}),
      finalPass,
      counters: this.metrics.counters,
      lastBlock: this.lastBlock,
    });
  }

  /**
   * Pages per batch in an iteration step: at most half a rate-limit
   * window's budget, so a low max-bandwidth is held to smoothly (QEMU
   * checks the limit between pages).
   *
   * @returns The batch size.
   */
  partBatchPages(): number {
    const { batchPages, guest, parameters } = this.config;
    const limit = this.inPostcopy
      ? parameters["max-postcopy-bandwidth"]
      : parameters["max-bandwidth"];
    if (limit === 0) return batchPages;
    const pages = Math.floor(limit / 10 / 2 / guest.memory.pageSize);
    return Math.max(1, Math.min(batchPages, pages));
  }

  /**
   * Reports progress.
   *
   * @param force Whether to report even within 100 ms of the last report.
   */
  progress(force: boolean): void {
    this.#onProgress(force);
  }

  /**
   * Moves to `pre-switchover` and waits for {@linkcode SourceRun.continue}.
   *
   * @returns A promise that rejects if the run is aborted first.
   */
  async waitForContinue(): Promise<void> {
    this.#switchover = Promise.withResolvers();
    this.state.moveTo("pre-switchover");
    await Promise.race([this.#switchover.promise, aborted(this.signal)]);
  }

  /** Lets a run waiting in `pre-switchover` go on. */
  continue(): void {
    this.#switchover?.resolve();
  }

  /** Whether the run waits for {@linkcode SourceRun.resume}. */
  get awaitingResume(): boolean {
    return this.#resume !== undefined;
  }

  /**
   * Waits for new connections after a postcopy pause.
   *
   * @returns The connections {@linkcode SourceRun.resume} got.
   */
  async waitForResume(): Promise<ResumeConnections> {
    this.#resume = Promise.withResolvers();
    try {
      return await Promise.race([
        this.#resume.promise,
        aborted(this.abandoned),
      ]);
    } finally {
      this.#resume = undefined;
    }
  }

  /**
   * Hands new connections to a run waiting in postcopy-paused.
   *
   * @param connections The connections.
   */
  resume(connections: ResumeConnections): void {
    this.#resume?.resolve(connections);
  }

  /** Breaks the current connection (`migrate-pause`). */
  pause(): void {
    this.#channel?.fail(
      new MigrationAbortedError("Cannot go on: the migration was paused", {
        reason: "transport-failed",
      }),
    );
  }

  /**
   * Applies changed parameters to the running pipeline: the rate limit of
   * the current phase at once, a new (empty) XBZRLE cache.
   *
   * @param parameters The parameters that changed.
   */
  parametersChanged(parameters: Partial<MigrationParameters>): void {
    const limiter = this.#channel?.limiter;
    if (limiter && !this.inPostcopy) {
      const status = this.state.status;
      const bandwidth = parameters["max-bandwidth"];
      if (
        bandwidth !== undefined && (status === "active" || status === "setup")
      ) {
        limiter.bytesPerSecond = bandwidth;
      }
    }
    const postcopyBandwidth = parameters["max-postcopy-bandwidth"];
    if (limiter && this.inPostcopy && postcopyBandwidth !== undefined) {
      limiter.bytesPerSecond = postcopyBandwidth;
    }
    if (this.#xbzrle && parameters["xbzrle-cache-size"] !== undefined) {
      this.#newXbzrle();
    }
  }

  /**
   * What `query-migrate` reports for this run.
   *
   * @param status The migration's status.
   * @returns The info.
   */
  info(status: MigrationStatus): MigrationInfo {
    const metrics = this.metrics;
    const info: MigrationInfo = { status };
    const setupTime = metrics.setupTime;
    if (setupTime !== undefined) info["setup-time"] = setupTime;
    info["total-time"] = metrics.totalTime();
    const remainingPages = this.#scanner?.remainingPages ?? 0;
    if (isRunningStatus(status) && status !== "cancelling") {
      info["expected-downtime"] = metrics.expectedDowntime(
        remainingPages,
        this.config.parameters["downtime-limit"],
      );
    }
    info.ram = metrics.ramStats({
      remainingPages: status === "completed" ? 0 : remainingPages,
      dirtySyncCount: this.#scanner?.syncCount ?? 0,
      postcopyRequests: this.requests.requests,
    });
    if (this.multifd) info.ram["multifd-bytes"] = this.multifd.multifdBytes;
    if (status === "active") {
      this.#eta ??= new SourceEta(this.metrics, this.config);
      this.#eta.addTo(info, info.ram);
    }
    const downtime = metrics.downtime;
    if (status === "completed" && downtime !== undefined) {
      info.downtime = downtime;
    }
    if (this.#xbzrle) info["xbzrle-cache"] = this.#xbzrle.stats();
    Object.assign(info, this.throttle.info());
    // As QEMU 8.1 on (7.2 only shows it once failed): a paused postcopy
    // says what broke.
    if (
      (status === "failed" || status === "postcopy-paused") &&
      this.errorDesc !== undefined
    ) {
      info["error-desc"] = this.errorDesc;
    }
    return info;
  }

  #use(channel: OutgoingChannel): OutgoingChannel {
    this.metrics.countChannel(channel.limiter);
    this.#channel = channel;
    return channel;
  }

  #newXbzrle(): void {
    const { guest, parameters } = this.config;
    this.#xbzrle = new XbzrlePageEncoder({
      cache: new XbzrleCache(
        parameters["xbzrle-cache-size"],
        guest.memory.pageSize,
      ),
    });
    if (this.#scanner) this.#xbzrle.setGeneration(this.#scanner.syncCount);
  }

  #onWindow(window: RateWindow): void {
    const status = this.state.status;
    if (status === "device" || status === "completed") return;
    this.metrics.recordWindow(window);
    this.#onProgress(false);
  }
}
