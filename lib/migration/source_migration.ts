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
 *   or    stop the guest; postcopy: discards, PACKAGED device state, then
 *         the background copy serving the destination's page requests
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
 * This class is the public face: options, status, events and QMP-like
 * commands. Each migration runs on a fresh per-run object
 * (`_source_run.ts`, with its `MigrationMetrics`), driven through
 * its phases by `_migration_thread.ts`: precopy in `_precopy_loop.ts`,
 * postcopy in `_postcopy_source.ts` (its preempt connection in
 * `_preempt_channel.ts`).
 *
 * @module
 */

import { parseUuid } from "../bytes/parse_uuid.ts";
import { MigrationAbortedError } from "../errors.ts";
import type { MigratableGuest } from "../guest/migratable_guest.ts";
import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import type { RandomAccessFile, Transport } from "../transport/transport.ts";
import type { OutgoingChannel } from "./_outgoing_channel.ts";
import { runMigrationThread } from "./_migration_thread.ts";
import type { Connect } from "./_postcopy_source.ts";
import { migrateMultifd, type Open } from "./_multifd_send.ts";
import { type SourceConfig, SourceRun } from "./_source_run.ts";
import { sourceState } from "./_source_state.ts";
import type { MigrationInfo } from "./migration_info.ts";
import {
  checkCapabilities,
  checkParameter,
  checkParameters,
  DEFAULT_CAPABILITIES,
  DEFAULT_PARAMETERS,
  type MigrationCapabilities,
  type MigrationParameters,
} from "./migration_parameters.ts";
import {
  isRunningStatus,
  type MigrationState,
  type MigrationStatus,
} from "./migration_state.ts";

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
  /** The VM's UUID (QEMU's `-uuid`), sent when `validate-uuid` is on. */
  uuid?: string;
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
   * passes over RAM are complete without converging: 0 before any page
   * is sent, 1 after the first pass (every page once), 2 after the pages
   * dirtied meanwhile went once more, and so on. A pass ends at a
   * dirty-bitmap sync (QEMU's `MIGRATION_PASS`), so postcopy starts at
   * `dirty-sync-count` N + 1. Needs `postcopy-ram`. Off by default.
   */
  postcopyAfterPasses?: number;
  /**
   * With `background-snapshot`: most bytes of pages copied aside before
   * the guest writes them, held until the pass saves them; past that a
   * guest write to a page not saved yet waits for the pass.
   *
   * @default {67108864}
   */
  snapshotCopyBytes?: number;
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
  readonly #config: SourceConfig;
  readonly #capabilities: MigrationCapabilities;
  readonly #parameters: MigrationParameters;
  #state: MigrationState;
  /** The current or last run; each migration starts a fresh one. */
  #run: SourceRun | undefined;
  #lastProgress = 0;

  /**
   * Constructs a new instance.
   *
   * @param guest The guest to migrate.
   * @param options Capabilities, parameters, clock.
   * @throws {TypeError} If a capability combination is not allowed, or
   *   `uuid` is not a UUID.
   * @throws {RangeError} If a parameter is out of range.
   */
  constructor(guest: MigratableGuest, options: SourceMigrationOptions = {}) {
    super();
    this.#capabilities = { ...DEFAULT_CAPABILITIES, ...options.capabilities };
    checkCapabilities(this.#capabilities);
    this.#parameters = { ...DEFAULT_PARAMETERS };
    this.#config = {
      guest,
      clock: options.clock ?? SYSTEM_CLOCK,
      machine: options.machine ?? "livemig",
      uuid: options.uuid === undefined ? undefined : parseUuid(options.uuid),
      batchPages: options.batchPages ?? 256,
      stepMs: options.stepMs ?? 50,
      postcopyAfterPasses: options.postcopyAfterPasses,
      snapshotCopyBytes: options.snapshotCopyBytes ?? 64 * 1024 * 1024,
      capabilities: this.#capabilities,
      parameters: this.#parameters,
    };
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
    return this.#config.guest;
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
    const pageSize = this.#config.guest.memory.pageSize;
    for (const [name, value] of Object.entries(parameters)) {
      if (!Object.hasOwn(DEFAULT_PARAMETERS, name)) {
        throw new TypeError(
          `Cannot set parameter "${name}": it is not a migration parameter`,
        );
      }
      checkParameter(
        name as keyof MigrationParameters,
        value as number | boolean,
        pageSize,
      );
    }
    checkParameters({ ...this.#parameters, ...parameters });
    Object.assign(this.#parameters, parameters);
    this.#run?.parametersChanged(parameters);
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
    this.#run?.requestPostcopy();
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
    this.#run?.continue();
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
    this.#state.moveTo("cancelling");
    this.#run?.abort(
      new MigrationAbortedError("Cannot complete migration: it was cancelled", {
        reason: "cancelled",
      }),
    );
  }

  /**
   * Gives up a migration in postcopy (QEMU has no command for it but
   * quitting): the connection is closed, a paused migration no longer
   * waits for {@linkcode SourceMigration.resume}, and `migrate()` rejects
   * with a {@linkcode MigrationAbortedError} of reason `"abandoned"`. The
   * status stays `postcopy-paused`, never `completed` nor `failed`: the
   * destination runs the guest without all of its RAM, and the pages it
   * lacks are only here, so neither end holds a whole guest. The source
   * guest stays stopped. Use it only when the guest is lost anyway (the
   * destination is gone for good), or before quitting.
   *
   * @example Usage
   * ```ts
   * import { SimulatedGuest, SourceMigration } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const source = new SourceMigration(new SimulatedGuest({ ramBytes: 1 << 20, running: false }));
   * // Outside postcopy there is nothing to give up: cancel() instead.
   * assert.throws(() => source.abandon(), /only a migration in postcopy/);
   * ```
   *
   * @throws {TypeError} Outside postcopy (`postcopy-active`,
   *   `postcopy-paused`, `postcopy-recover`).
   */
  abandon(): void {
    const status = this.status;
    if (!status.startsWith("postcopy")) {
      throw new TypeError(
        `Cannot abandon migration in "${status}": only a migration in postcopy can be abandoned; cancel() the others`,
      );
    }
    this.#run?.abandon(
      new MigrationAbortedError("Cannot go on: the migration was abandoned", {
        reason: "abandoned",
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
    if (status === "none" || this.#run === undefined) return { status };
    return this.#run.info(status);
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
    this.#run?.pause();
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
    const run = this.#run;
    if (this.status !== "postcopy-paused" || !run?.awaitingResume) {
      throw new TypeError(
        `Cannot resume migration in "${this.status}": it must be in "postcopy-paused"`,
      );
    }
    run.resume({ transport, ...(preempt ? { preempt } : {}) });
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
    const { connect } = options;
    const start = (open: Open) => this.#start(open, connect);
    if (this.#capabilities.multifd) {
      return migrateMultifd(transport, { connect, start, ...this.#parameters });
    }
    return start((run) => run.openChannel(transport, run.usesReturnPath));
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
    return this.#start((run) =>
      run.openMappedRamFile(file, options.offset ?? 0)
    );
  }

  /** Starts a fresh run on the channel `open` makes, and drives it. */
  async #start(
    open: (run: SourceRun) => OutgoingChannel,
    connect?: Connect,
  ): Promise<MigrationInfo> {
    if (isRunningStatus(this.status)) {
      throw new TypeError(
        `Cannot start a migration: one is already in "${this.status}"`,
      );
    }
    if (this.status !== "none") {
      // A new migration after a finished one: QEMU goes back to setup.
      this.#state.moveTo("setup");
      this.#state = this.#newState();
    }
    const run = new SourceRun(this.#config, {
      state: this.#state,
      onPass: (count) => this.#pass(count),
      onProgress: (force) => this.#progress(force),
    });
    this.#run = run;
    this.#state.moveTo("setup");
    const channel = open(run);
    const signal = run.signal;
    signal.addEventListener("abort", () => channel.fail(signal.reason), {
      once: true,
    });
    try {
      return await runMigrationThread(run, connect);
    } finally {
      run.release();
    }
  }

  #newState(): MigrationState {
    return sourceState(this, () => this.#capabilities.events);
  }

  #pass(count: number): void {
    if (!this.#capabilities.events) return;
    this.dispatchEvent(
      new CustomEvent<MigrationPassDetail>("pass", { detail: { pass: count } }),
    );
  }

  #progress(force: boolean): void {
    const now = this.#config.clock.now();
    if (!force && now - this.#lastProgress < PROGRESS_EVERY_MS) return;
    this.#lastProgress = now;
    this.dispatchEvent(
      new CustomEvent<MigrationInfo>("progress", { detail: this.query() }),
    );
  }
}
