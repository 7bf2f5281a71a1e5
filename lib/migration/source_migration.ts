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

import { isZeroPage } from "../bytes/is_zero_page.ts";
import { MigrationAbortedError } from "../errors.ts";
import { DirtyBitmap } from "../guest/dirty_bitmap.ts";
import type { MigratableGuest } from "../guest/migratable_guest.ts";
import { PageRequestQueue } from "../postcopy/page_request_queue.ts";
import { yieldToIo } from "./_yield_to_io.ts";
import {
  PostcopyPageSourceStream,
  takeRequested,
} from "../postcopy/postcopy_page_source_stream.ts";
import { DirtyPageScanner } from "../ram/dirty_page_scanner.ts";
import {
  type PageEncoderCounters,
  PageEncoderStream,
} from "../ram/page_encoder_stream.ts";
import { PageSourceStream } from "../ram/page_source_stream.ts";
import { XbzrleCache } from "../ram/xbzrle_cache.ts";
import { XbzrlePageEncoder } from "../ram/xbzrle_page_encoder.ts";
import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import type { RateWindow } from "../streams/rate_limit_stream.ts";
import type { RandomAccessFile, Transport } from "../transport/transport.ts";
import { MAX_DISCARDS_PER_COMMAND } from "../wire/mig_cmd.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import { encodePostcopyPackage } from "../wire/postcopy_package.ts";
import { OutgoingChannel } from "./_outgoing_channel.ts";
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
  /**
   * Request postcopy (as `migrate-start-postcopy` would) once this many
   * dirty-bitmap syncs happened without converging; needs `postcopy-ram`.
   * Off by default.
   */
  postcopyAfterPasses?: number;
}

/** Detail of a `"pass"` event: QEMU's `MIGRATION_PASS` event data. */
export interface MigrationPassDetail {
  /** The dirty-sync count. */
  pass: number;
}

const PROGRESS_EVERY_MS = 100;

/** Longest stretch of postcopy background work between two socket polls. */
const IO_TURN_MS = 0.5;

/**
 * Migrates a guest to a destination over a {@linkcode Transport}.
 *
 * Events (an `EventTarget`): `"migration"` with `{ status }` on every
 * status change and `"pass"` with `{ pass }` on every dirty-bitmap sync,
 * when the `events` capability is on (QEMU's `MIGRATION` and
 * `MIGRATION_PASS`); always `"status"` with `{ status }` on every status
 * change and `"progress"` with the current {@linkcode MigrationInfo} about
 * every 100 ms.
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
  readonly #postcopyAfterPasses: number | undefined;
  #channel: OutgoingChannel | undefined;
  #channelOf: OutgoingChannel | undefined;
  #bytesBefore = 0;
  #inPostcopy = false;
  #postcopyStartBytes: number | undefined;
  #preempt: PreemptChannel | undefined;
  #requests = new PageRequestQueue();
  #resumeWaiter:
    | PromiseWithResolvers<{ transport: Transport; preempt?: Transport }>
    | undefined;
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
    this.#postcopyAfterPasses = options.postcopyAfterPasses;
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
    const limiter = this.#channel?.limiter;
    if (
      limiter && !this.#inPostcopy && parameters["max-bandwidth"] !== undefined
    ) {
      if (this.status === "active" || this.status === "setup") {
        limiter.bytesPerSecond = parameters["max-bandwidth"];
      }
    }
    if (
      limiter && this.#inPostcopy &&
      parameters["max-postcopy-bandwidth"] !== undefined
    ) {
      limiter.bytesPerSecond = parameters["max-postcopy-bandwidth"];
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
   * Leaves postcopy-active for postcopy-paused (`migrate-pause`): the
   * connection is closed, the destination keeps running the guest, and a
   * later {@linkcode SourceMigration.resume} continues.
   *
   * @throws {TypeError} Outside postcopy-active.
   */
  pause(): void {
    if (this.status !== "postcopy-active") {
      throw new TypeError(
        `Cannot pause migration in "${this.status}": it is only supported during postcopy-active state`,
      );
    }
    this.#channel?.fail(
      new MigrationAbortedError("Cannot go on: the migration was paused", {
        reason: "transport-failed",
      }),
    );
  }

  /**
   * Resumes a migration in postcopy-paused over a new connection (`migrate
   * uri=… resume=true`): the destination reports which pages it has, the
   * rest are sent.
   *
   * @param transport The new connection.
   * @param preempt A new postcopy-preempt connection, when that
   *   capability is on.
   * @throws {TypeError} Outside postcopy-paused.
   */
  resume(transport: Transport, preempt?: Transport): void {
    if (this.status !== "postcopy-paused" || this.#resumeWaiter === undefined) {
      throw new TypeError(
        `Cannot resume migration in "${this.status}": it must be in "postcopy-paused"`,
      );
    }
    this.#resumeWaiter.resolve({ transport, ...(preempt ? { preempt } : {}) });
  }

  /**
   * Runs the migration over `transport` until it completes.
   *
   * @param transport A connection to the destination.
   * @param options `connect` opens further connections to the same
   *   destination (the postcopy-preempt channel).
   * @returns The final info, status `completed`.
   * @throws {MigrationAbortedError} When the migration fails or is
   *   cancelled; before postcopy starts the guest is then running again
   *   with its RAM intact.
   */
  migrate(
    transport: Transport,
    options: { connect?: () => Promise<Transport> } = {},
  ): Promise<MigrationInfo> {
    if (this.#capabilities["mapped-ram"]) {
      return Promise.reject(
        new TypeError(
          "Cannot migrate with mapped-ram over a stream: mapped-ram needs a random-access file (migrateToFile)",
        ),
      );
    }
    return this.#run(
      (returnPath) => this.#openChannel(transport, returnPath),
      options.connect,
    );
  }

  /**
   * Migrates into a mapped-ram file (QEMU 10.0's layout, capability
   * `mapped-ram`): pages go to fixed offsets and a page sent again is
   * rewritten in place, so the file stays the size of RAM plus metadata
   * however long the guest keeps dirtying; the device state follows.
   *
   * @param file The file, opened for writing; cut to `offset` first and
   *   not closed.
   * @param options `offset`: where the stream starts in the file (QEMU's
   *   `file:PATH,offset=N`).
   * @returns The final info, status `completed`.
   * @throws {MigrationAbortedError} When the migration fails or is
   *   cancelled; the guest then runs again with its RAM intact.
   */
  migrateToFile(
    file: RandomAccessFile,
    options: { offset?: number } = {},
  ): Promise<MigrationInfo> {
    if (!this.#capabilities["mapped-ram"]) {
      return Promise.reject(
        new TypeError(
          "Cannot migrate to a mapped-ram file: the mapped-ram capability is off",
        ),
      );
    }
    return this.#run(() =>
      OutgoingChannel.toMappedRamFile(file, options.offset ?? 0, {
        clock: this.#clock,
        pageSize: this.#guest.memory.pageSize,
        bytesPerSecond: this.#parameters["max-bandwidth"],
        onWindow: (window) => this.#onWindow(window),
      })
    );
  }

  async #run(
    open: (returnPath: boolean) => OutgoingChannel,
    connect?: () => Promise<Transport>,
  ): Promise<MigrationInfo> {
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
    const postcopy = this.#capabilities["postcopy-ram"];
    const returnPath = this.#capabilities["return-path"] || postcopy;
    const channel = open(returnPath);
    this.#channel = channel;
    this.#channelOf = channel;
    signal.addEventListener("abort", () => channel.fail(signal.reason), {
      once: true,
    });
    let pausedByUs = false;
    try {
      const setup: MigrationRecord[] = [
        { type: "header", version: 3 },
        { type: "configuration", machine: this.#machine },
      ];
      if (returnPath) {
        setup.push(
          { type: "command", command: "OPEN_RETURN_PATH" },
          { type: "command", command: "PING", value: 1 },
        );
      }
      if (postcopy) {
        setup.push({
          type: "command",
          command: "POSTCOPY_ADVISE",
          pageSizeSummary: pageSize,
          targetPageSize: pageSize,
        });
      }
      await channel.write(setup);
      const scanner = new DirtyPageScanner(memory);
      this.#scanner = scanner;
      this.#pass(scanner.syncCount);
      if (this.#capabilities.xbzrle) this.#newXbzrle();
      await channel.write([
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
      let decision: IterationDecision;
      while (true) {
        signal.throwIfAborted();
        channel.limiter.measure();
        if (
          this.#postcopyAfterPasses !== undefined && postcopy &&
          scanner.syncCount >= this.#postcopyAfterPasses
        ) {
          this.#postcopyRequested = true;
        }
        decision = this.#decide(scanner);
        if (decision.step === "complete" || decision.step === "postcopy") break;
        await channel.write([{
          type: "section-part",
          sectionId: RAM_SECTION_ID,
        }]);
        const started = clock.now();
        const pages = new PageSourceStream(scanner, {
          batchPages: this.#partBatchPages(),
          shouldStop: () =>
            signal.aborted || clock.now() - started >= this.#stepMs,
        }).pipeThrough(this.#pageEncoder(lastBlock, false));
        for await (const batch of pages) await channel.write(batch);
        await channel.write([{
          type: "section-footer",
          sectionId: RAM_SECTION_ID,
        }]);
        this.#progress(false);
        await yieldToTasks();
      }

      // Stop the guest; the downtime starts here.
      const wasRunning = this.#guest.running;
      await this.#guest.pause();
      pausedByUs = wasRunning;
      this.#downtimeStart = clock.now();
      this.#bytesAtStop = channel.limiter.bytesPassed;
      if (this.#capabilities["pause-before-switchover"]) {
        this.#continue = Promise.withResolvers();
        this.#state.moveTo("pre-switchover");
        await Promise.race([this.#continue.promise, aborted(signal)]);
      }
      if (decision.step === "postcopy") {
        await this.#startPostcopy(channel, scanner, lastBlock, connect);
        pausedByUs = false; // the destination runs the guest from now on
        await this.#postcopy(channel, scanner, lastBlock, connect);
      } else {
        await this.#completePrecopy(channel, scanner, lastBlock);
      }
      const end = clock.now();
      this.#endTime = end;
      const active = end - this.#startTime - (this.#setupTime ?? 0);
      this.#mbps = active > 0 ? this.#transferred() * 8 / active / 1000 : 0;
      scanner.stop();
      this.#state.moveTo("completed");
      this.#progress(true);
      return this.query();
    } catch (error) {
      const reason = signal.aborted ? signal.reason : error;
      abort.abort(reason);
      this.#channel?.fail(reason);
      channel.fail(reason);
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
      this.#channel = undefined;
    }
  }

  #openChannel(transport: Transport, returnPath: boolean): OutgoingChannel {
    const memory = this.#guest.memory;
    const channel = OutgoingChannel.toTransport(transport, {
      clock: this.#clock,
      pageSize: memory.pageSize,
      bytesPerSecond: this.#inPostcopy
        ? this.#parameters["max-postcopy-bandwidth"]
        : this.#parameters["max-bandwidth"],
      onWindow: (window) => this.#onWindow(window),
      ...(returnPath
        ? {
          returnPath: {
            onRequest: (block: string, start: number, length: number) =>
              this.#onPageRequest(block, start, length),
            bitmapBytes: (block: string) => {
              const found = memory.blocks.find((b) => b.idstr === block);
              return found === undefined
                ? undefined
                : Math.ceil(found.pageCount / 64) * 8;
            },
          },
        }
        : {}),
    });
    if (this.#channelOf) {
      this.#bytesBefore += this.#channelOf.limiter.bytesPassed;
    }
    this.#channel = channel;
    this.#channelOf = channel;
    return channel;
  }

  /** Precopy completion: END with the final pass, device state, EOF. */
  async #completePrecopy(
    channel: OutgoingChannel,
    scanner: DirtyPageScanner,
    lastBlock: { name: string | undefined },
  ): Promise<void> {
    const pageSize = this.#guest.memory.pageSize;
    this.#state.moveTo("device");
    channel.limiter.bytesPerSecond = 0;
    await channel.write([{ type: "section-end", sectionId: RAM_SECTION_ID }]);
    this.#sync(scanner);
    const rest = new PageSourceStream(scanner, { batchPages: this.#batchPages })
      .pipeThrough(this.#pageEncoder(lastBlock, true));
    for await (const batch of rest) await channel.write(batch);
    await channel.write([
      { type: "section-footer", sectionId: RAM_SECTION_ID },
      ...guestStateRecords(
        this.#guest.saveState(),
        this.#guest.stateFields,
        pageSize,
      ),
    ]);
    // Closing our direction (a half-close on sockets) gives an exec:
    // command EOF and waits for it, and flushes a file, so every byte is
    // where it belongs before the migration says completed.
    await channel.finish();
    if (
      this.#capabilities["return-path"] || this.#capabilities["postcopy-ram"]
    ) {
      const shut = await Promise.race([channel.shut, channel.failed]);
      if (shut !== 0) {
        throw new MigrationAbortedError(
          `Cannot complete migration: the destination reported an error loading the stream (SHUT ${shut})`,
          { reason: "destination-failed" },
        );
      }
    }
    this.#downtime = Math.round(this.#clock.now() - this.#downtimeStart!);
    await channel.close();
  }

  /**
   * Postcopy start (QEMU's `postcopy_start()`): final sync, discard every
   * page still to send, then the package with the device state; the
   * destination runs the guest once RUN arrives.
   */
  async #startPostcopy(
    channel: OutgoingChannel,
    scanner: DirtyPageScanner,
    lastBlock: { name: string | undefined },
    connect: (() => Promise<Transport>) | undefined,
  ): Promise<void> {
    const memory = this.#guest.memory;
    const pageSize = memory.pageSize;
    this.#state.moveTo("postcopy-active");
    this.#inPostcopy = true;
    channel.limiter.bytesPerSecond = this.#parameters["max-postcopy-bandwidth"];
    this.#sync(scanner);
    const discards: MigrationRecord[] = [];
    scanner.bitmaps.forEach((bitmap, index) => {
      const block = memory.blocks[index]!.idstr;
      const runs = bitmap.runs();
      for (let i = 0; i < runs.length; i += MAX_DISCARDS_PER_COMMAND) {
        discards.push({
          type: "command",
          command: "POSTCOPY_RAM_DISCARD",
          block,
          ranges: runs.slice(i, i + MAX_DISCARDS_PER_COMMAND).map((
            [first, count],
          ) => ({
            start: first * pageSize,
            length: count * pageSize,
          })),
        });
      }
    });
    channel.forgetCurrentBlock();
    lastBlock.name = undefined;
    await channel.write([...discards, {
      type: "command",
      command: "PING",
      value: 2,
    }]);
    const device = guestStateRecords(
      this.#guest.saveState(),
      this.#guest.stateFields,
      pageSize,
    )
      .slice(0, 3); // FULL section: header, state, footer (no EOF or vmdesc in postcopy)
    await channel.write([
      encodePostcopyPackage([
        { type: "command", command: "POSTCOPY_LISTEN" },
        ...device,
        { type: "command", command: "PING", value: 3 },
        { type: "command", command: "POSTCOPY_RUN" },
      ], { pageSize }),
      { type: "command", command: "PING", value: 4 },
    ]);
    this.#downtime = Math.round(this.#clock.now() - this.#downtimeStart!);
    this.#postcopyStartBytes = this.#transferred();
    if (this.#capabilities["postcopy-preempt"] && connect) {
      this.#preempt = new PreemptChannel(
        this.#openPreempt(await connect()),
        scanner,
        this.#requests,
      );
    }
  }

  /**
   * The postcopy background copy, serving requested pages first, across
   * connection failures (postcopy-paused) and recoveries.
   */
  async #postcopy(
    first: OutgoingChannel,
    scanner: DirtyPageScanner,
    lastBlock: { name: string | undefined },
    connect: (() => Promise<Transport>) | undefined,
  ): Promise<void> {
    let channel = first;
    while (true) {
      try {
        await this.#background(channel, scanner, lastBlock);
        await channel.close();
        return;
      } catch (error) {
        channel.fail(error);
        this.#preempt?.close();
        this.#preempt = undefined;
        if (this.#cancelRequested) throw error;
        this.#errorDesc = describe(error);
        this.#state.moveTo("postcopy-paused");
        this.#progress(true);
      }
      // Wait for a new connection, then recover; a failed recovery goes
      // back to paused and waits again.
      while (true) {
        this.#resumeWaiter = Promise.withResolvers();
        const next = await this.#resumeWaiter.promise;
        this.#resumeWaiter = undefined;
        this.#state.moveTo("postcopy-recover");
        channel = this.#openChannel(next.transport, true);
        try {
          await this.#recover(channel, scanner);
          if (this.#capabilities["postcopy-preempt"]) {
            const preempt = next.preempt ??
              (connect ? await connect() : undefined);
            if (preempt) {
              this.#preempt = new PreemptChannel(
                this.#openPreempt(preempt),
                scanner,
                this.#requests,
              );
            }
          }
          lastBlock.name = undefined;
          this.#errorDesc = undefined;
          this.#state.moveTo("postcopy-active");
          this.#progress(true);
          break;
        } catch (error) {
          channel.fail(error);
          this.#errorDesc = describe(error);
          this.#state.moveTo("postcopy-paused");
          this.#progress(true);
        }
      }
    }
  }

  /** The recovery handshake: RECV_BITMAP per block, then RESUME. */
  async #recover(
    channel: OutgoingChannel,
    scanner: DirtyPageScanner,
  ): Promise<void> {
    const memory = this.#guest.memory;
    await channel.write(
      memory.blocks.map((
        b,
      ) => ({
        type: "command",
        command: "RECV_BITMAP",
        block: b.idstr,
      } as const)),
    );
    for (const block of memory.blocks) {
      const bytes = await Promise.race([
        channel.bitmap(block.idstr),
        channel.failed,
      ]);
      const received = DirtyBitmap.fromLittleEndian(bytes, block.pageCount);
      const toSend = new DirtyBitmap(block.pageCount);
      toSend.setAll();
      toSend.andNot(received);
      scanner.replace(block.index, toSend);
    }
    await channel.write([{ type: "command", command: "POSTCOPY_RESUME" }]);
    const ack = await Promise.race([channel.resumeAck, channel.failed]);
    if (ack !== 1) {
      throw new MigrationAbortedError(
        `Cannot resume postcopy: RESUME_ACK carried ${ack}, expected 1`,
        { reason: "destination-failed" },
      );
    }
    scanner.seek(0, 0);
  }

  /** Sends what is left, requests first, then END and EOF; waits for SHUT. */
  async #background(
    channel: OutgoingChannel,
    scanner: DirtyPageScanner,
    lastBlock: { name: string | undefined },
  ): Promise<void> {
    const clock = this.#clock;
    let ioTurn = clock.now();
    while (scanner.remainingPages > 0) {
      await channel.write([{
        type: "section-part",
        sectionId: RAM_SECTION_ID,
      }]);
      const started = clock.now();
      let urgent = false;
      const pages = new PostcopyPageSourceStream(scanner, this.#requests, {
        batchPages: this.#partBatchPages(),
        shouldStop: () => clock.now() - started >= this.#stepMs,
        requestsElsewhere: this.#preempt !== undefined,
        onUrgent: () => {
          urgent = true;
        },
      }).pipeThrough(this.#pageEncoder(lastBlock, false, false));
      for await (const batch of pages) {
        await channel.write(batch);
        if (clock.now() - ioTurn >= IO_TURN_MS) {
          // Writes to a ready socket never wait: let the return path (page
          // requests) be read, or they wait until this step ends.
          await yieldToIo();
          ioTurn = clock.now();
        }
        if (urgent) {
          // Requested pages must not wait for the rate limit.
          channel.limiter.passUntil(channel.encodedBytes);
          urgent = false;
        }
      }
      await channel.write([{
        type: "section-footer",
        sectionId: RAM_SECTION_ID,
      }]);
      this.#progress(false);
      await yieldToTasks();
    }
    await this.#preempt?.finish();
    await channel.write([
      { type: "section-end", sectionId: RAM_SECTION_ID },
      { type: "ram-eos" },
      { type: "section-footer", sectionId: RAM_SECTION_ID },
      { type: "eof" },
    ]);
    await channel.finish();
    const shut = await Promise.race([channel.shut, channel.failed]);
    if (shut !== 0) {
      throw new MigrationAbortedError(
        `Cannot complete migration: the destination reported an error (SHUT ${shut})`,
        { reason: "destination-failed" },
      );
    }
    await this.#preempt?.close();
  }

  #openPreempt(transport: Transport): OutgoingChannel {
    return OutgoingChannel.toTransport(transport, {
      clock: this.#clock,
      pageSize: this.#guest.memory.pageSize,
      bytesPerSecond: 0,
    });
  }

  #onPageRequest(block: string, start: number, length: number): void {
    const memory = this.#guest.memory;
    const found = memory.blocks.find((b) => b.idstr === block);
    const pageSize = memory.pageSize;
    if (
      found === undefined || start % pageSize !== 0 ||
      length % pageSize !== 0 ||
      length === 0 || start + length > found.bytes.byteLength
    ) {
      throw new MigrationAbortedError(
        `Cannot serve a page request for ${block}@${start}+${length}: it is not a whole page range inside a block`,
        { reason: "destination-failed" },
      );
    }
    this.#requests.push(found.index, start / pageSize, length / pageSize);
    if (this.#preempt === undefined && this.#channel) {
      // Let what is already encoded go now: the requested page comes next
      // and must not wait behind a rate-limit window.
      this.#channel.limiter.passUntil(this.#channel.encodedBytes);
    }
  }

  #transferred(): number {
    return this.#bytesBefore + (this.#channelOf?.limiter.bytesPassed ?? 0) +
      (this.#preempt?.bytes ?? 0);
  }

  /**
   * Pages per batch in an iteration step: at most half a rate-limit
   * window's budget, so a low max-bandwidth is held to smoothly (QEMU
   * checks the limit between pages).
   */
  #partBatchPages(): number {
    const limit = this.#inPostcopy
      ? this.#parameters["max-postcopy-bandwidth"]
      : this.#parameters["max-bandwidth"];
    if (limit === 0) return this.#batchPages;
    const pages = Math.floor(limit / 10 / 2 / this.#guest.memory.pageSize);
    return Math.max(1, Math.min(this.#batchPages, pages));
  }

  #newState(): MigrationState {
    const state = new MigrationState("source");
    state.addEventListener("migration", (event) => {
      this.dispatchEvent(
        new CustomEvent<MigrationEventDetail>("status", {
          detail: (event as CustomEvent<MigrationEventDetail>).detail,
        }),
      );
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
    this.#channel = undefined;
    this.#channelOf = undefined;
    this.#bytesBefore = 0;
    this.#inPostcopy = false;
    this.#postcopyStartBytes = undefined;
    this.#preempt = undefined;
    this.#requests = new PageRequestQueue();
    this.#resumeWaiter = undefined;
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
    xbzrle = true,
  ): PageEncoderStream {
    return new PageEncoderStream({
      ...(this.#xbzrle && xbzrle ? { xbzrle: this.#xbzrle } : {}),
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
    const transferred = this.#transferred();
    const stopped = this.#downtimeStart !== undefined;
    const postcopyStart = this.#postcopyStartBytes;
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
      "postcopy-requests": this.#requests.requests,
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

  #progress(force: boolean): void {
    const now = this.#clock.now();
    if (!force && now - this.#lastProgress < PROGRESS_EVERY_MS) return;
    this.#lastProgress = now;
    this.dispatchEvent(
      new CustomEvent<MigrationInfo>("progress", { detail: this.query() }),
    );
  }
}

/**
 * The postcopy-preempt channel: requested pages go out on their own
 * connection as soon as they are asked for, so they never queue behind the
 * background copy. RAM records only, no header, no sections, EOS at the
 * end.
 */
class PreemptChannel {
  readonly #channel: OutgoingChannel;
  readonly #stop = Promise.withResolvers<void>();
  readonly #served: Promise<void>;
  #stopping = false;

  constructor(
    channel: OutgoingChannel,
    scanner: DirtyPageScanner,
    requests: PageRequestQueue,
  ) {
    this.#channel = channel;
    this.#served = this.#serve(scanner, requests);
    this.#served.catch((error) => channel.fail(error));
  }

  get bytes(): number {
    return this.#channel.limiter.bytesPassed;
  }

  async #serve(
    scanner: DirtyPageScanner,
    requests: PageRequestQueue,
  ): Promise<void> {
    while (!this.#stopping) {
      await Promise.race([requests.wait(), this.#stop.promise]);
      for (
        let batch = takeRequested(scanner, requests, { resend: true });
        batch;
        batch = takeRequested(scanner, requests, { resend: true })
      ) {
        const { block, pages } = batch;
        const pageSize = block.bytes.byteLength / block.pageCount;
        const records: MigrationRecord[] = [];
        for (const page of pages) {
          const offset = page * pageSize;
          const data = block.bytes.subarray(offset, offset + pageSize);
          records.push(
            isZeroPage(data)
              ? { type: "ram-zero", block: block.idstr, offset, fill: 0 }
              : { type: "ram-page", block: block.idstr, offset, data },
          );
        }
        await this.#channel.write(records);
      }
    }
  }

  async finish(): Promise<void> {
    this.#stopping = true;
    this.#stop.resolve();
    await this.#served;
    await this.#channel.write([{ type: "ram-eos" }]);
    await this.#channel.finish();
  }

  close(): void {
    this.#stopping = true;
    this.#stop.resolve();
    void this.#channel.close();
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
