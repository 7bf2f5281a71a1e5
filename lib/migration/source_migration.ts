/**
 * The source end of a live migration (QEMU's `migration/migration.c`
 * migration thread): streams a running guest's RAM, re-sends what the guest
 * dirties, decides when to stop the guest and switch over, and sends the
 * rest with the device state.
 *
 * ```
 * setup   header, CONFIGURATION, [OPEN_RETURN_PATH, PING 1],
 *         START ram: block list, EOS                    (dirty log on, pass 1)
 * active  loop: decide (sync when the estimate is under the threshold)
 *               complete? → break     iterate → PART ram: pages ≤ 50 ms, EOS
 * device  stop the guest; END ram: final sync, every dirty page, EOS
 *         FULL livemig-guest, EOF, vmdesc; wait for SHUT on the return path
 * ```
 *
 * The pipeline is built once per migration and driven by backpressure:
 *
 * ```
 * DirtyPageScanner → PageSourceStream → PageEncoderStream ─┐  (one per section)
 *   records → MigrationEncoderStream → RateLimitStream → transport.writable
 * ```
 *
 * Pages are taken from the dirty bitmap only when the transport has taken
 * what came before, so bandwidth is measured on what the transport accepted
 * and memory stays bounded whatever the speed of the link.
 *
 * @module
 */

import { MigrationAbortedError } from "../errors.ts";
import type { MigratableGuest } from "../guest/migratable_guest.ts";
import { DirtyPageScanner } from "../ram/dirty_page_scanner.ts";
import {
  type PageEncoderCounters,
  PageEncoderStream,
} from "../ram/page_encoder_stream.ts";
import { PageSourceStream } from "../ram/page_source_stream.ts";
import { XbzrleCache } from "../ram/xbzrle_cache.ts";
import { XbzrlePageEncoder } from "../ram/xbzrle_page_encoder.ts";
import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import {
  RateLimitStream,
  type RateWindow,
} from "../streams/rate_limit_stream.ts";
import type { Transport } from "../transport/transport.ts";
import { MigrationEncoderStream } from "../wire/migration_encoder_stream.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import { ReturnPathDecoderStream } from "../wire/return_path_decoder_stream.ts";
import { guestStateRecords, RAM_SECTION_ID } from "./guest_device_section.ts";
import type { MigrationInfo, RamStats } from "./migration_info.ts";
import {
  checkCapabilities,
  checkParameter,
  DEFAULT_CAPABILITIES,
  DEFAULT_PARAMETERS,
  type MigrationCapabilities,
  type MigrationParameters,
} from "./migration_parameters.ts";
import {
  isRunningStatus,
  type MigrationEventDetail,
  MigrationState,
  type MigrationStatus,
} from "./migration_state.ts";
import {
  decideIteration,
  expectedDowntime,
  type IterationDecision,
  switchoverThreshold,
} from "./switchover_decision.ts";

/** Options for {@linkcode SourceMigration}. */
export interface SourceMigrationOptions {
  /**
   * Capabilities to turn on (the others stay off, as in QEMU).
   *
   * @default {{}}
   */
  capabilities?: Partial<MigrationCapabilities>;
  /**
   * Parameters that differ from QEMU's defaults.
   *
   * @default {{}}
   */
  parameters?: Partial<MigrationParameters>;
  /** Time source. Defaults to the real clock. */
  clock?: Clock;
  /**
   * The machine name in the CONFIGURATION section.
   *
   * @default {"livemig"}
   */
  machine?: string;
  /**
   * Most pages per batch through the page stages.
   *
   * @default {256}
   */
  batchPages?: number;
  /**
   * Longest iteration step in milliseconds (QEMU's `MAX_WAIT`).
   *
   * @default {50}
   */
  stepMs?: number;
}

/** Detail of a `"pass"` event: QEMU's `MIGRATION_PASS` event data. */
export interface MigrationPassDetail {
  /** The dirty-sync count. */
  pass: number;
}

const PROGRESS_EVERY_MS = 100;

/**
 * Migrates a guest to a destination over a {@linkcode Transport}.
 *
 * Events (an `EventTarget`): `"migration"` with `{ status }` on every
 * status change and `"pass"` with `{ pass }` on every dirty-bitmap sync,
 * when the `events` capability is on (QEMU's `MIGRATION` and
 * `MIGRATION_PASS`); `"progress"` with the current
 * {@linkcode MigrationInfo} about every 100 ms, always.
 *
 * A failed or cancelled migration leaves the guest running with its RAM
 * untouched and its dirty log off, so a new migration can start.
 *
 * @example Usage
 * ```ts
 * import {
 *   createMemoryTransportPair, DestinationMigration, SimulatedGuest, SourceMigration,
 * } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const guest = new SimulatedGuest({ ramBytes: 1 << 20, workload: { kind: "fill" } });
 * const [a, b] = createMemoryTransportPair();
 * const source = new SourceMigration(guest);
 * const destination = new DestinationMigration();
 * const [sent, received] = await Promise.all([source.migrate(a), destination.incoming(b)]);
 * assert.equal(sent.status, "completed");
 * assert.deepEqual(received.guest.memory.blocks[0]!.bytes, guest.memory.blocks[0]!.bytes);
 * received.guest.pause();
 * ```
 */
export class SourceMigration extends EventTarget {
  readonly #guest: MigratableGuest;
  readonly #clock: Clock;
  readonly #machine: string;
  readonly #batchPages: number;
  readonly #stepMs: number;
  readonly #capabilities: MigrationCapabilities;
  readonly #parameters: MigrationParameters;
  #state: MigrationState;
  #abort: AbortController | undefined;
  #cancelRequested = false;
  #continue: PromiseWithResolvers<void> | undefined;
  #postcopyRequested = false;
  #limiter: RateLimitStream | undefined;
  #scanner: DirtyPageScanner | undefined;
  #xbzrle: XbzrlePageEncoder | undefined;
  #counters: PageEncoderCounters = {
    duplicate: 0,
    normal: 0,
    xbzrle: 0,
    unchanged: 0,
  };
  #startTime = 0;
  #setupTime: number | undefined;
  #endTime: number | undefined;
  #downtimeStart: number | undefined;
  #downtime: number | undefined;
  #bytesAtStop = 0;
  #bytesPerMs = 0;
  #mbps = 0;
  #pagesPerSecond = 0;
  #pagesAtWindow = 0;
  #dirtyPagesRate = 0;
  #ratePeriodStart = 0;
  #ratePeriodDirtied = 0;
  #ratePeriodPages = 0;
  #lastProgress = 0;
  #errorDesc: string | undefined;

  /**
   * Constructs a new instance.
   *
   * @param guest The guest to migrate.
   * @param options Capabilities, parameters, clock.
   * @throws {TypeError} If a capability combination is not allowed.
   * @throws {RangeError} If a parameter is out of range.
   */
  constructor(guest: MigratableGuest, options: SourceMigrationOptions = {}) {
    super();
    this.#guest = guest;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#machine = options.machine ?? "livemig";
    this.#batchPages = options.batchPages ?? 256;
    this.#stepMs = options.stepMs ?? 50;
    this.#capabilities = { ...DEFAULT_CAPABILITIES, ...options.capabilities };
    checkCapabilities(this.#capabilities);
    this.#parameters = { ...DEFAULT_PARAMETERS };
    this.setParameters(options.parameters ?? {});
    this.#state = this.#newState();
  }

  /** The current status. */
  get status(): MigrationStatus {
    return this.#state.status;
  }

  /** The capabilities in force. */
  get capabilities(): Readonly<MigrationCapabilities> {
    return this.#capabilities;
  }

  /** The parameters in force. */
  get parameters(): Readonly<MigrationParameters> {
    return this.#parameters;
  }

  /** The guest being migrated. */
  get guest(): MigratableGuest {
    return this.#guest;
  }

  /**
   * Changes parameters, also while migrating (`migrate-set-parameters`):
   * `max-bandwidth` applies from the current window, `downtime-limit` at
   * the next decision, `xbzrle-cache-size` replaces the cache with an empty
   * one.
   *
   * @param parameters The parameters to change.
   * @throws {RangeError} If a value is out of QEMU's range.
   */
  setParameters(parameters: Partial<MigrationParameters>): void {
    const pageSize = this.#guest.memory.pageSize;
    for (const [name, value] of Object.entries(parameters)) {
      if (!Object.hasOwn(DEFAULT_PARAMETERS, name)) {
        throw new TypeError(
          `Cannot set parameter "${name}": it is not a migration parameter`,
        );
      }
      checkParameter(
        name as keyof MigrationParameters,
        value as number,
        pageSize,
      );
    }
    Object.assign(this.#parameters, parameters);
    if (this.#limiter && parameters["max-bandwidth"] !== undefined) {
      if (this.status === "active" || this.status === "setup") {
        this.#limiter.bytesPerSecond = parameters["max-bandwidth"];
      }
    }
    if (this.#xbzrle && parameters["xbzrle-cache-size"] !== undefined) {
      this.#newXbzrle();
    }
  }

  /**
   * Requests postcopy (`migrate-start-postcopy`).
   *
   * @throws {TypeError} If `postcopy-ram` is off.
   */
  startPostcopy(): void {
    if (!this.#capabilities["postcopy-ram"]) {
      throw new TypeError(
        "Cannot start postcopy: enable postcopy with the postcopy-ram capability before the start of migration",
      );
    }
    this.#postcopyRequested = true;
  }

  /**
   * Lets a migration paused in `pre-switchover` go on
   * (`migrate-continue state=pre-switchover`).
   *
   * @param status The status the migration must be in.
   * @throws {TypeError} If the migration is not in that status.
   */
  continue(status: MigrationStatus): void {
    if (this.status !== status || status !== "pre-switchover") {
      throw new TypeError(
        `Cannot continue migration: it is in "${this.status}", not "${status}"`,
      );
    }
    this.#continue?.resolve();
  }

  /**
   * Cancels a running migration (`migrate_cancel`): it moves to
   * `cancelling`, then `cancelled`, and the guest keeps running.
   *
   * @throws {TypeError} If the migration is in postcopy, where cancelling
   *   would leave neither end with a whole guest.
   */
  cancel(): void {
    const status = this.status;
    if (!isRunningStatus(status) || status === "cancelling") return;
    if (status.startsWith("postcopy")) {
      throw new TypeError(
        `Cannot cancel migration in "${status}": the destination already runs the guest, so neither end would keep a whole guest`,
      );
    }
    this.#cancelRequested = true;
    this.#state.moveTo("cancelling");
    this.#abort?.abort(
      new MigrationAbortedError("Cannot complete migration: it was cancelled", {
        reason: "cancelled",
      }),
    );
  }

  /**
   * What `query-migrate` would report now.
   *
   * @returns The info.
   */
  query(): MigrationInfo {
    const status = this.status;
    const info: MigrationInfo = { status };
    if (status === "none") return info;
    const now = this.#endTime ?? this.#clock.now();
    if (this.#setupTime !== undefined) info["setup-time"] = this.#setupTime;
    info["total-time"] = Math.round(now - this.#startTime);
    if (isRunningStatus(status) && status !== "cancelling") {
      info["expected-downtime"] = this.#expectedDowntime();
    }
    if (status === "completed" && this.#downtime !== undefined) {
      info.downtime = this.#downtime;
    }
    info.ram = this.#ramStats();
    if (this.#xbzrle) info["xbzrle-cache"] = this.#xbzrle.stats();
    if (status === "failed" && this.#errorDesc !== undefined) {
      info["error-desc"] = this.#errorDesc;
    }
    return info;
  }

  /**
   * Runs the migration over `transport` until it completes.
   *
   * @param transport A connection to the destination.
   * @returns The final info, status `completed`.
   * @throws {MigrationAbortedError} When the migration fails or is
   *   cancelled; the guest is then running again with its RAM intact.
   */
  async migrate(transport: Transport): Promise<MigrationInfo> {
    if (isRunningStatus(this.status)) {
      throw new TypeError(
        `Cannot start a migration: one is already in "${this.status}"`,
      );
    }
    this.#reset();
    this.#state.moveTo("setup");
    const abort = new AbortController();
    this.#abort = abort;
    const signal = abort.signal;
    const clock = this.#clock;
    const memory = this.#guest.memory;
    const pageSize = memory.pageSize;
    this.#startTime = clock.now();
    this.#ratePeriodStart = this.#startTime;
    const limiter = new RateLimitStream({
      bytesPerSecond: this.#parameters["max-bandwidth"],
      clock,
      signal,
      onWindow: (window) => this.#onWindow(window),
    });
    this.#limiter = limiter;
    const encoder = new MigrationEncoderStream({ pageSize });
    const piped = encoder.readable.pipeThrough(limiter).pipeTo(
      transport.writable,
      {
        signal,
        preventClose: true,
      },
    );
    piped.catch((error) => abort.abort(error));
    const writer = encoder.writable.getWriter();
    const write = (records: readonly MigrationRecord[]) =>
      writer.write(records);
    let pausedByUs = false;
    let returnPath: ReturnPath | undefined;
    try {
      const configuration: MigrationRecord[] = [
        { type: "header", version: 3 },
        { type: "configuration", machine: this.#machine },
      ];
      if (this.#capabilities["mapped-ram"]) {
        throw new TypeError(
          "Cannot migrate with mapped-ram over a stream transport: it needs a file:",
        );
      }
      await write(configuration);
      if (
        this.#capabilities["return-path"] || this.#capabilities["postcopy-ram"]
      ) {
        returnPath = new ReturnPath(
          transport.readable,
          (error) => abort.abort(error),
        );
        await write([
          { type: "command", command: "OPEN_RETURN_PATH" },
          { type: "command", command: "PING", value: 1 },
        ]);
      }
      const scanner = new DirtyPageScanner(memory);
      this.#scanner = scanner;
      this.#pass(scanner.syncCount);
      if (this.#capabilities.xbzrle) this.#newXbzrle();
      await write([
        {
          type: "section-start",
          sectionId: RAM_SECTION_ID,
          idstr: "ram",
          instanceId: 0,
          versionId: 4,
        },
        {
          type: "ram-mem-size",
          blocks: memory.blocks.map((b) => ({
            idstr: b.idstr,
            usedLength: b.bytes.byteLength,
          })),
        },
        { type: "ram-eos" },
        { type: "section-footer", sectionId: RAM_SECTION_ID },
      ]);
      this.#setupTime = Math.round(clock.now() - this.#startTime);
      this.#state.moveTo("active");
      const lastBlock = { name: undefined as string | undefined };
      while (true) {
        signal.throwIfAborted();
        limiter.measure();
        const decision = this.#decide(scanner);
        if (decision.step === "complete") break;
        if (decision.step === "postcopy") {
          throw new MigrationAbortedError(
            "Cannot start postcopy: livemig's postcopy is not available in this build",
            { reason: "postcopy-refused" },
          );
        }
        await write([{ type: "section-part", sectionId: RAM_SECTION_ID }]);
        const started = clock.now();
        const pages = new PageSourceStream(scanner, {
          batchPages: this.#partBatchPages(),
          shouldStop: () =>
            signal.aborted || clock.now() - started >= this.#stepMs,
        }).pipeThrough(this.#pageEncoder(lastBlock, false));
        for await (const batch of pages) await write(batch);
        await write([{ type: "section-footer", sectionId: RAM_SECTION_ID }]);
        this.#progress(false);
        await yieldToTasks();
      }

      // Completion: stop the guest; the downtime starts here.
      await this.#guest.pause();
      pausedByUs = true;
      this.#downtimeStart = clock.now();
      this.#bytesAtStop = limiter.bytesPassed;
      if (this.#capabilities["pause-before-switchover"]) {
        this.#continue = Promise.withResolvers();
        this.#state.moveTo("pre-switchover");
        await Promise.race([this.#continue.promise, aborted(signal)]);
      }
      this.#state.moveTo("device");
      limiter.bytesPerSecond = 0;
      await write([{ type: "section-end", sectionId: RAM_SECTION_ID }]);
      this.#sync(scanner);
      const rest = new PageSourceStream(scanner, {
        batchPages: this.#batchPages,
      })
        .pipeThrough(this.#pageEncoder(lastBlock, true));
      for await (const batch of rest) await write(batch);
      await write([
        { type: "section-footer", sectionId: RAM_SECTION_ID },
        ...guestStateRecords(
          this.#guest.saveState(),
          this.#guest.stateFields,
          pageSize,
        ),
      ]);
      await writer.close();
      await piped;
      // Close our direction (a half-close on sockets): an exec: command
      // gets EOF and is waited for, a file is flushed, so every byte is
      // where it belongs before the migration says completed.
      await transport.writable.close();
      if (returnPath) {
        const shut = await Promise.race([returnPath.shut, aborted(signal)]);
        if (shut !== 0) {
          throw new MigrationAbortedError(
            `Cannot complete migration: the destination reported an error loading the stream (SHUT ${shut})`,
            { reason: "destination-failed" },
          );
        }
      }
      const end = clock.now();
      this.#downtime = Math.round(end - this.#downtimeStart);
      this.#endTime = end;
      const active = end - this.#startTime - (this.#setupTime ?? 0);
      this.#mbps = active > 0 ? limiter.bytesPassed * 8 / active / 1000 : 0;
      scanner.stop();
      this.#state.moveTo("completed");
      this.#progress(true);
      await transport.close();
      return this.query();
    } catch (error) {
      const reason = signal.aborted ? signal.reason : error;
      abort.abort(reason);
      writer.releaseLock();
      await transport.close().catch(() => {});
      this.#scanner?.stop();
      if (pausedByUs) this.#guest.resume();
      this.#endTime = clock.now();
      if (this.#cancelRequested) {
        this.#state.moveTo("cancelled");
        this.#progress(true);
        throw reason instanceof MigrationAbortedError
          ? reason
          : new MigrationAbortedError(
            "Cannot complete migration: it was cancelled",
            { reason: "cancelled", cause: reason },
          );
      }
      const failure = reason instanceof MigrationAbortedError
        ? reason
        : new MigrationAbortedError(
          `Cannot complete migration: ${describe(reason)}`,
          { reason: "transport-failed", cause: reason },
        );
      this.#errorDesc = failure.message;
      this.#state.moveTo("failed");
      this.#progress(true);
      throw failure;
    } finally {
      this.#abort = undefined;
      this.#continue = undefined;
      returnPath?.stop();
    }
  }

  /**
   * Pages per batch in an iteration step: at most half a rate-limit
   * window's budget, so a low max-bandwidth is held to smoothly (QEMU
   * checks the limit between pages).
   */
  #partBatchPages(): number {
    const limit = this.#parameters["max-bandwidth"];
    if (limit === 0) return this.#batchPages;
    const pages = Math.floor(limit / 10 / 2 / this.#guest.memory.pageSize);
    return Math.max(1, Math.min(this.#batchPages, pages));
  }

  #newState(): MigrationState {
    const state = new MigrationState("source");
    state.addEventListener("migration", (event) => {
      if (!this.#capabilities.events) return;
      this.dispatchEvent(
        new CustomEvent<MigrationEventDetail>("migration", {
          detail: (event as CustomEvent<MigrationEventDetail>).detail,
        }),
      );
    });
    return state;
  }

  #reset(): void {
    if (this.status !== "none") {
      // A new migration after a finished one: QEMU goes back to setup.
      this.#state.moveTo("setup");
      this.#state = this.#newState();
    }
    this.#cancelRequested = false;
    this.#postcopyRequested = false;
    this.#counters = { duplicate: 0, normal: 0, xbzrle: 0, unchanged: 0 };
    this.#setupTime = undefined;
    this.#endTime = undefined;
    this.#downtimeStart = undefined;
    this.#downtime = undefined;
    this.#bytesAtStop = 0;
    this.#bytesPerMs = 0;
    this.#mbps = 0;
    this.#pagesPerSecond = 0;
    this.#pagesAtWindow = 0;
    this.#dirtyPagesRate = 0;
    this.#ratePeriodDirtied = 0;
    this.#ratePeriodPages = 0;
    this.#errorDesc = undefined;
    this.#xbzrle = undefined;
    this.#scanner = undefined;
  }

  #newXbzrle(): void {
    this.#xbzrle = new XbzrlePageEncoder({
      cache: new XbzrleCache(
        this.#parameters["xbzrle-cache-size"],
        this.#guest.memory.pageSize,
      ),
    });
    if (this.#scanner) this.#xbzrle.setGeneration(this.#scanner.syncCount);
  }

  #pageEncoder(
    lastBlock: { name: string | undefined },
    finalPass: boolean,
  ): PageEncoderStream {
    return new PageEncoderStream({
      ...(this.#xbzrle ? { xbzrle: this.#xbzrle } : {}),
      finalPass,
      counters: this.#counters,
      lastBlock,
    });
  }

  /** QEMU's decision, with the sync it asks for when the estimate is low. */
  #decide(scanner: DirtyPageScanner): IterationDecision {
    const pageSize = this.#guest.memory.pageSize;
    const state = {
      pendingBytes: scanner.remainingPages * pageSize,
      exact: false,
      thresholdBytes: this.#threshold(),
      postcopyRequested: this.#postcopyRequested,
      inPostcopy: false,
      mustPrecopyBytes: 0,
    };
    const decision = decideIteration(state);
    if (decision.step !== "sync") return decision;
    this.#sync(scanner);
    return decideIteration({
      ...state,
      pendingBytes: scanner.remainingPages * pageSize,
      exact: true,
    });
  }

  #threshold(): number {
    return switchoverThreshold({
      measuredBytesPerMs: this.#bytesPerMs,
      downtimeLimitMs: this.#parameters["downtime-limit"],
      availSwitchoverBandwidth: this.#parameters["avail-switchover-bandwidth"],
    });
  }

  #sync(scanner: DirtyPageScanner): void {
    this.#ratePeriodDirtied += scanner.sync();
    this.#xbzrle?.setGeneration(scanner.syncCount);
    const now = this.#clock.now();
    const period = now - this.#ratePeriodStart;
    if (period >= 1000) {
      this.#dirtyPagesRate = Math.round(
        this.#ratePeriodDirtied * 1000 / period,
      );
      const sent = this.#pagesSent();
      this.#xbzrle?.closeRatePeriod(sent - this.#ratePeriodPages);
      this.#ratePeriodPages = sent;
      this.#ratePeriodDirtied = 0;
      this.#ratePeriodStart = now;
    }
    this.#pass(scanner.syncCount);
  }

  #pass(count: number): void {
    if (!this.#capabilities.events) return;
    this.dispatchEvent(
      new CustomEvent<MigrationPassDetail>("pass", { detail: { pass: count } }),
    );
  }

  #pagesSent(): number {
    const c = this.#counters;
    return c.duplicate + c.normal + c.xbzrle;
  }

  #onWindow(window: RateWindow): void {
    if (this.status === "device" || this.status === "completed") return;
    this.#bytesPerMs = window.bytesPerMs;
    this.#mbps = window.bytes * 8 / window.ms / 1000;
    const pages = this.#pagesSent();
    this.#pagesPerSecond = Math.round(
      (pages - this.#pagesAtWindow) * 1000 / window.ms,
    );
    this.#pagesAtWindow = pages;
    this.#progress(false);
  }

  #expectedDowntime(): number {
    const remaining = (this.#scanner?.remainingPages ?? 0) *
      this.#guest.memory.pageSize;
    return expectedDowntime({
      remainingBytes: remaining,
      bytesPerMs: this.#bytesPerMs,
      downtimeLimitMs: this.#parameters["downtime-limit"],
    });
  }

  #ramStats(): RamStats {
    const pageSize = this.#guest.memory.pageSize;
    const transferred = this.#limiter?.bytesPassed ?? 0;
    const stopped = this.#downtimeStart !== undefined;
    const remaining = this.status === "completed"
      ? 0
      : (this.#scanner?.remainingPages ?? 0) * pageSize;
    return {
      transferred,
      remaining,
      total: this.#guest.memory.totalBytes,
      duplicate: this.#counters.duplicate,
      skipped: 0,
      normal: this.#counters.normal,
      "normal-bytes": this.#counters.normal * pageSize,
      "dirty-pages-rate": this.#dirtyPagesRate,
      mbps: this.#mbps,
      "dirty-sync-count": this.#scanner?.syncCount ?? 0,
      "postcopy-requests": 0,
      "page-size": pageSize,
      "multifd-bytes": 0,
      "pages-per-second": this.#pagesPerSecond,
      "precopy-bytes": stopped ? this.#bytesAtStop : transferred,
      "downtime-bytes": stopped ? transferred - this.#bytesAtStop : 0,
      "postcopy-bytes": 0,
      "dirty-sync-missed-zero-copy": 0,
    };
  }

  #progress(force: boolean): void {
    const now = this.#clock.now();
    if (!force && now - this.#lastProgress < PROGRESS_EVERY_MS) return;
    this.#lastProgress = now;
    this.dispatchEvent(
      new CustomEvent<MigrationInfo>("progress", { detail: this.query() }),
    );
  }
}

/** Reads the return path during a precopy migration. */
class ReturnPath {
  readonly shut: Promise<number>;
  #stopped = false;
  #reader: ReadableStreamDefaultReader | undefined;

  constructor(
    readable: ReadableStream<Uint8Array>,
    onError: (error: unknown) => void,
  ) {
    const { promise, resolve, reject } = Promise.withResolvers<number>();
    this.shut = promise;
    promise.catch(() => {});
    const run = async () => {
      const messages = readable.pipeThrough(new ReturnPathDecoderStream());
      this.#reader = messages.getReader();
      while (true) {
        const { done, value } = await this.#reader.read();
        if (done) break;
        if (value.type === "SHUT") {
          resolve(value.value);
          return;
        }
        if (value.type !== "PONG") {
          throw new MigrationAbortedError(
            `Cannot use the return path: ${value.type} is not expected in precopy`,
            { reason: "destination-failed" },
          );
        }
      }
      throw new MigrationAbortedError(
        "Cannot complete migration: the destination closed the return path without SHUT",
        { reason: "destination-failed" },
      );
    };
    run().catch((error) => {
      reject(error);
      if (!this.#stopped) onError(error);
    });
  }

  stop(): void {
    this.#stopped = true;
    this.#reader?.cancel().catch(() => {});
  }
}

function aborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), {
      once: true,
    });
  });
}

/** Lets timers run (the guest's workload task) between iteration steps. */
function yieldToTasks(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    return error.message.replace(/^Cannot [^:]*: /, "") || error.name;
  }
  return String(error);
}
