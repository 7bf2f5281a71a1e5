/**
 * The destination end of a live migration (QEMU's incoming side): loads
 * the stream into a guest of the announced size, answers the return path,
 * and resumes the guest only after the whole stream is loaded — or, in
 * postcopy, runs it as soon as the device state is in and pulls the pages
 * it touches before they arrive.
 *
 * ```
 * transport.readable → MigrationDecoder → record batches → RecordLoader
 *   OPEN_RETURN_PATH → open the reverse direction    PING n → PONG n
 *   block list       → create the guest (size capped by maxRamBytes)
 *   ZERO/PAGE/XBZRLE → apply to guest RAM in stream order
 *   livemig-guest    → load the guest's device state
 *   EOF (+ vmdesc)   → beforeResume (e.g. a RAM dump), then completed,
 *                      SHUT 0, resume the guest
 * postcopy (DestinationPostcopy):
 *   ADVISE, DISCARD  → the discarded pages are missing
 *   PACKAGED         → LISTEN: postcopy-active; device state; RUN: the guest
 *                      runs; a write to a missing page blocks and sends
 *                      REQ_PAGES(_ID) on the return path
 *   connection lost  → postcopy-paused, until recover(): RECV_BITMAP
 *                      answered with what arrived, RESUME → RESUME_ACK;
 *                      or abandon(): the app gives the guest up, the
 *                      status stays postcopy-paused
 * any other error    → failed, SHUT 1, the guest is never resumed (also
 *                      when beforeResume fails)
 * ```
 *
 * This file holds the session (status, connections, recovery, the end);
 * decoding a connection and its return path are `_incoming_connection.ts`,
 * applying the records `_record_loader.ts`, postcopy's page requests and
 * recovery `_destination_postcopy.ts`.
 *
 * @module
 */

import { parseUuid } from "../bytes/parse_uuid.ts";
import {
  describeError,
  MigrationAbortedError,
  type MigrationAbortReason,
} from "../errors.ts";
import type { GuestMemoryOptions } from "../guest/guest_memory.ts";
import type { MigratableGuest } from "../guest/migratable_guest.ts";
import type { RamBlockInfo } from "../ram/ram_record.ts";
import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import { readMappedRamRecords } from "../mapped_ram/read_mapped_ram_records.ts";
import type { RandomAccessFile, Transport } from "../transport/transport.ts";
import type { MultifdCompression } from "../wire/multifd_flags.ts";
import { IncomingConnection } from "./_incoming_connection.ts";
import {
  loadWithChannels,
  type MultifdReceiver,
  multifdSettings,
  startMultifd,
} from "./_multifd_receive.ts";
import { PostcopyPause } from "./_postcopy_pause.ts";
import { RecordLoader } from "./_record_loader.ts";
import type { MigrationInfo } from "./migration_info.ts";
import { ramSha256 } from "./ram_sha256.ts";
import {
  type MigrationEventDetail,
  MigrationState,
  type MigrationStatus,
} from "./migration_state.ts";

/** The guest a destination builds from the announced RAM blocks. */
export type GuestFactory = (
  blocks: readonly RamBlockInfo[],
  machine: string | undefined,
) => MigratableGuest;

/** Options for {@linkcode DestinationMigration}. */
export interface DestinationMigrationOptions {
  /**
   * Builds the guest once the block list arrives. The default builds a
   * paused {@linkcode SimulatedGuest} for livemig streams (machine
   * `livemig`, one block) and a memory-only guest for anything else (a
   * QEMU guest's RAM).
   */
  createGuest?: GuestFactory;
  /**
   * Allocates guest RAM for the default guests (see
   * {@linkcode GuestMemoryOptions.allocate}).
   *
   * @default {(size) => new Uint8Array(new SharedArrayBuffer(size))}
   */
  allocate?: GuestMemoryOptions["allocate"];
  /**
   * Largest total RAM the stream may announce.
   *
   * @default {16 * 1024 ** 3}
   */
  maxRamBytes?: number;
  /**
   * Whether to resume the guest once loaded (QEMU's autostart).
   *
   * @default {true}
   */
  autostart?: boolean;
  /** Time source. Defaults to the real clock. */
  clock?: Clock;
  /**
   * Called with the loaded guest after EOF, before the status moves to
   * `completed` and the guest is resumed (e.g. to dump its RAM); in
   * postcopy, once all RAM is in. If it throws, the migration fails (SHUT 1
   * to a source with a return path) and the guest is not resumed.
   */
  beforeResume?: (guest: MigratableGuest) => void | Promise<void>;
  /**
   * Whether to emit `"migration"` events (QEMU's `events` capability).
   *
   * @default {false}
   */
  events?: boolean;
  /**
   * Whether postcopy is allowed (QEMU's `postcopy-ram` on the
   * destination): a POSTCOPY_ADVISE is refused without it.
   *
   * @default {false}
   */
  postcopy?: boolean;
  /**
   * Whether the digest of RAM as it arrived goes into the result
   * ({@linkcode IncomingResult.ramSha256Received}), to compare with the
   * source's digest when its guest stopped. In postcopy, where the guest
   * runs while pages arrive, each page it writes is first kept as it
   * arrived (copy before first write), until the end.
   *
   * @default {false}
   */
  ramSha256Received?: boolean;
  /**
   * Whether the source opens a postcopy-preempt connection at postcopy
   * start (QEMU's `postcopy-preempt`).
   *
   * @default {false}
   */
  preempt?: boolean;
  /** multifd on (QEMU's `multifd` capability), with its parameters. */
  multifd?: DestinationMultifdOptions;
  /**
   * This VM's UUID (QEMU's `-uuid`, 8-4-4-4-12 hex digits). A stream whose
   * CONFIGURATION carries another one (a source with `validate-uuid` on)
   * fails with QEMU's "UUID received is … and local is …"; without a
   * UUID here a received one is only warned about (a `"warning"` event),
   * as QEMU does. The destination needs no capability for this.
   */
  uuid?: string;
  /**
   * QEMU 8.1's `switchover-ack`: send SWITCHOVER_ACK on the return path
   * once the block list is loaded and the guest made; a source with the
   * capability does not stop its guest before. Needs a return path.
   *
   * @default {false}
   */
  switchoverAck?: boolean;
}

/**
 * multifd on a {@linkcode DestinationMigration}: pages arrive on more
 * connections. Nothing is negotiated on the wire: set what the source has.
 */
export interface DestinationMultifdOptions {
  /**
   * `multifd-channels`: channel connections.
   * @default {2}
   */
  channels?: number;
  /**
   * `multifd-compression` of the source.
   * @default {"none"}
   */
  compression?: MultifdCompression;
  /**
   * Milliseconds the channels may take to connect after the first one.
   * @default {10000}
   */
  connectTimeoutMs?: number;
}

/** What a completed incoming migration produced. */
export interface IncomingResult {
  /** The guest, loaded (and running unless autostart is off). */
  guest: MigratableGuest;
  /** The final info, status `completed`. */
  info: MigrationInfo;
  /** The machine name the stream announced, if any. */
  machine: string | undefined;
  /** Whether the stream came from livemig (its own device section). */
  livemig: boolean;
  /**
   * SHA-256 of each RAM block as it arrived from the source, by idstr
   * (with the `ramSha256Received` option): in postcopy, pages the guest
   * wrote since it started count with the content they arrived with.
   */
  ramSha256Received?: Record<string, string>;
}

/** Options for {@linkcode DestinationMigration.incoming}. */
export interface IncomingOptions {
  /**
   * Accepts further connections from the same source: the
   * postcopy-preempt channel.
   */
  accept?: () => Promise<Transport>;
  /** With `multifd`: the channel connections, accepted with this one. */
  multifdChannels?: Transport[];
}

/** A connection to load from, and how to accept its preempt channel. */
type IncomingConnectionOffer = IncomingOptions & { transport: Transport };

/**
 * Receives a migration over a {@linkcode Transport} into a new guest.
 *
 * Events: `"status"` with `{ status }` on every status change, and
 * `"migration"` (QEMU's `MIGRATION` event) too when `events` is set;
 * `"warning"` with `{ message }` for what QEMU would warn about.
 *
 * Never reports `completed` for RAM it did not fully receive: the status
 * moves to `completed` only after EOF (and the vmdesc trailer) decoded
 * without error and, in postcopy, every page arrived.
 *
 * @example Usage
 * ```ts
 * import {
 *   createMemoryTransportPair, DestinationMigration, SimulatedGuest, SourceMigration,
 * } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const guest = new SimulatedGuest({ ramBytes: 64 * 4096, workload: { kind: "fill" }, running: false });
 * const [a, b] = createMemoryTransportPair();
 * const destination = new DestinationMigration({ autostart: false });
 * const [, incoming] = await Promise.all([new SourceMigration(guest).migrate(a), destination.incoming(b)]);
 * assert.equal(destination.status, "completed");
 * assert.equal(incoming.livemig, true);
 * assert.equal(incoming.guest.running, false);
 * ```
 */
export class DestinationMigration extends EventTarget {
  readonly #options: DestinationMigrationOptions;
  readonly #clock: Clock;
  readonly #state: MigrationState;
  readonly #loader: RecordLoader;
  #startTime = 0;
  #endTime: number | undefined;
  #errorDesc: string | undefined;
  /** The connection being loaded (none while postcopy is paused). */
  #connection: IncomingConnection | undefined;
  readonly #pause = new PostcopyPause<IncomingConnectionOffer>();
  #multifd: MultifdReceiver | undefined;

  /**
   * Constructs a new instance in status `none`.
   *
   * @param options How to build the guest and the limits.
   * @throws {TypeError} If `uuid` is not a UUID.
   */
  constructor(options: DestinationMigrationOptions = {}) {
    super();
    this.#options = options;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#state = new MigrationState("destination");
    this.#state.addEventListener("migration", (event) => {
      const { detail } = event as CustomEvent<MigrationEventDetail>;
      this.dispatchEvent(new CustomEvent("status", { detail }));
      if (options.events) {
        this.dispatchEvent(new CustomEvent("migration", { detail }));
      }
      // The guest may run from here on, before all of its RAM arrived.
      if (options.ramSha256Received && detail.status === "postcopy-active") {
        this.#loader.guest?.memory.keepReceivedPages();
      }
    });
    this.#loader = new RecordLoader({
      state: this.#state,
      clock: this.#clock,
      createGuest: options.createGuest,
      allocate: options.allocate,
      maxRamBytes: options.maxRamBytes ?? 16 * 1024 ** 3,
      autostart: options.autostart ?? true,
      postcopy: options.postcopy ?? false,
      preempt: options.preempt ?? false,
      connection: () => this.#connection,
      onResume: () => {
        this.#errorDesc = undefined;
      },
      onRamEos: () => this.#multifd?.sync(),
      uuid: options.uuid === undefined ? undefined : parseUuid(options.uuid),
      switchoverAck: options.switchoverAck ?? false,
      onWarning: (message) =>
        this.dispatchEvent(new CustomEvent("warning", { detail: { message } })),
    });
  }

  /** The current status. */
  get status(): MigrationStatus {
    return this.#state.status;
  }

  /** Whether a postcopy-preempt connection is expected (`preempt`). */
  get preempt(): boolean {
    return this.#options.preempt ?? false;
  }

  /** The guest, once the block list arrived. */
  get guest(): MigratableGuest | undefined {
    return this.#loader.guest;
  }

  /** The multifd settings, defaults filled in; undefined when off. */
  get multifd(): Readonly<Required<DestinationMultifdOptions>> | undefined {
    return multifdSettings(this.#options.multifd);
  }

  /**
   * What `query-migrate` reports on the destination.
   *
   * @returns The info.
   */
  query(): MigrationInfo {
    const info: MigrationInfo = { status: this.status };
    if (this.status === "none" || this.status === "setup") return info;
    info["total-time"] = Math.round(
      (this.#endTime ?? this.#clock.now()) - this.#startTime,
    );
    info.ram = this.#loader.ramStats();
    Object.assign(info, this.#loader.blocktime());
    if (this.#errorDesc !== undefined) info["error-desc"] = this.#errorDesc;
    return info;
  }

  /**
   * Marks the destination as waiting (QEMU's `-incoming`): status `setup`.
   * {@linkcode DestinationMigration.incoming} does it when not done yet.
   */
  listen(): void {
    if (this.status === "none") this.#state.moveTo("setup");
  }

  /**
   * Closes the current connection: before postcopy the migration fails;
   * in postcopy it pauses (`migrate-pause`), waiting for
   * {@linkcode DestinationMigration.recover}. A destination still waiting
   * for its source (status `setup`) fails at once.
   *
   * @param reason Why.
   */
  abort(reason = "the incoming migration was aborted"): void {
    if (this.#loader.postcopy === undefined) this.#errorDesc ??= reason;
    if (this.status === "none" || this.status === "setup") {
      this.#startTime = this.#endTime = this.#clock.now();
      this.#state.moveTo("failed");
      return;
    }
    void this.#connection?.close();
    void this.#multifd?.close(); // a RAM EOS may be waiting for them
  }

  /**
   * Gives up a postcopy migration: the app will not wait for a recovery
   * (QEMU has no such command; quitting the process is its way). The
   * connection, if any, is closed, and {@linkcode DestinationMigration.incoming}
   * rejects with a {@linkcode MigrationAbortedError} (reason `cancelled`).
   * The status stays `postcopy-paused`: the guest runs here without the
   * pages that never arrived, so it is neither completed nor safe.
   *
   * @param reason Why, for the error.
   * @throws {TypeError} Outside postcopy (before it, `abort()`).
   */
  abandon(reason = "the postcopy migration was given up"): void {
    const status = this.status;
    if (
      status !== "postcopy-active" && status !== "postcopy-paused" &&
      status !== "postcopy-recover"
    ) {
      throw new TypeError(
        `Cannot abandon migration in "${status}": only a postcopy migration can be given up`,
      );
    }
    if (!this.#pause.abandon(reason)) void this.#connection?.close();
  }

  /**
   * Pauses a postcopy migration (`migrate-pause`): the connection closes,
   * the guest keeps running, pages it touches wait for a recovery.
   *
   * @throws {TypeError} Outside postcopy-active.
   */
  pause(): void {
    if (this.status !== "postcopy-active") {
      throw new TypeError(
        `Cannot pause migration in "${this.status}": it is only supported during postcopy-active state`,
      );
    }
    void this.#connection?.close();
  }

  /**
   * Continues a paused postcopy migration on a new connection from the
   * source (`migrate-recover`).
   *
   * @param transport The new connection.
   * @param options `accept` for a new postcopy-preempt connection.
   * @throws {TypeError} Outside postcopy-paused.
   */
  recover(transport: Transport, options: IncomingOptions = {}): void {
    if (this.status !== "postcopy-paused" || !this.#pause.waiting) {
      throw new TypeError(
        `Cannot recover migration in "${this.status}": it must be in "postcopy-paused"`,
      );
    }
    this.#pause.recover({ transport, ...options });
  }

  /**
   * Loads the migration that arrives on `transport`.
   *
   * @param transport The connection from the source.
   * @param options How to accept a postcopy-preempt connection.
   * @returns The loaded guest and the final info.
   * @throws {MigrationAbortedError} When the stream is bad or cut before
   *   postcopy; the status is then `failed` and the guest was not resumed.
   */
  async incoming(
    transport: Transport,
    options: IncomingOptions = {},
  ): Promise<IncomingResult> {
    return await this.#receive(() =>
      this.#loadConnections({ transport, ...options })
    );
  }

  /**
   * Loads a mapped-ram file (written by a migration with the `mapped-ram`
   * capability, or converted): its pages are read from their fixed
   * offsets and the rest of the stream is loaded as usual.
   *
   * @param file The file.
   * @param options `offset`: where the stream starts in the file.
   * @returns The loaded guest and the final info.
   * @throws {MigrationAbortedError} When the file is not a valid
   *   mapped-ram file.
   */
  async incomingMappedRam(
    file: RandomAccessFile,
    options: { offset?: number } = {},
  ): Promise<IncomingResult> {
    // Pages go from their fixed offsets straight to the record loader that
    // a network stream feeds: nothing is re-encoded.
    const records = readMappedRamRecords(
      file,
      options.offset === undefined ? {} : { offset: options.offset },
    );
    return await this.#receive(() => this.#loader.load(records));
  }

  /**
   * The steps of every incoming migration: `active`, `load` every record,
   * the end of the load, then `completed` (or `failed`).
   *
   * `load` may feed the loader from anything: `this.#loader.load(batches)`
   * takes any async iterable of record batches. Without a connection no
   * return path exists, so nothing answers a PING and no SHUT is sent.
   */
  async #receive(load: () => Promise<void>): Promise<IncomingResult> {
    this.listen(); // from none or setup to active
    if (this.status !== "setup") {
      throw new TypeError(
        `Cannot receive a migration: the destination is in "${this.status}"`,
      );
    }
    this.#startTime = this.#clock.now();
    this.#state.moveTo("active");
    let guest: MigratableGuest;
    try {
      await load();
      guest = await this.#loader.finish();
    } catch (error) {
      throw await this.#fail(error, "stream-error");
    }
    try {
      // Before "completed": a failing step (a RAM dump) fails the migration.
      await this.#options.beforeResume?.(guest);
    } catch (error) {
      throw await this.#fail(error, "destination-failed");
    }
    return await this.#complete(guest);
  }

  /**
   * Loads connection after connection until one reaches EOF: a connection
   * lost in postcopy pauses the migration until the next one is handed
   * over by {@linkcode DestinationMigration.recover}.
   */
  async #loadConnections(first: IncomingConnectionOffer): Promise<void> {
    let next = first;
    let recovery = false;
    this.#multifd = startMultifd(
      this.multifd,
      first.multifdChannels ?? [],
      this.#loader,
      !(this.#options.postcopy ?? false),
    );
    await this.#multifd?.ready; // workers start before the first round
    while (true) {
      const connection = new IncomingConnection(next.transport, { recovery });
      this.#connection = connection;
      try {
        await loadWithChannels(
          connection.load(this.#loader, next.accept),
          this.#multifd,
        );
        return;
      } catch (error) {
        await this.#connection?.close().catch(() => {});
        const status = this.status;
        if (status !== "postcopy-active" && status !== "postcopy-recover") {
          throw error;
        }
        // Postcopy: the guest already runs here, so a lost connection waits
        // for a new one instead of failing.
        this.#errorDesc = describeError(error);
        this.#connection = undefined;
        this.#state.moveTo("postcopy-paused");
        next = await this.#pause.wait(() =>
          `the guest is lost in ${this.status} (${
            this.#loader.guest?.memory.missingPages ?? 0
          } pages never arrived)`
        );
        this.#state.moveTo("postcopy-recover");
        recovery = true;
      }
    }
  }

  /**
   * Everything arrived: `completed`, SHUT 0, and the guest resumes
   * (unless it already runs, or autostart is off).
   */
  async #complete(guest: MigratableGuest): Promise<IncomingResult> {
    this.#endTime = this.#clock.now();
    await this.#multifd?.close();
    this.#loader.close();
    this.#errorDesc = undefined;
    this.#state.moveTo("completed");
    const connection = this.#connection;
    if (connection?.returnPath) {
      await connection.reply({ type: "SHUT", value: 0 });
    }
    const received = this.#options.ramSha256Received
      ? await ramSha256(guest.memory, { received: true })
      : undefined;
    guest.memory.releaseReceivedPages();
    if (!this.#loader.guestStarted && (this.#options.autostart ?? true)) {
      guest.resume();
    }
    await connection?.finish();
    return {
      guest,
      info: this.query(),
      machine: this.#loader.machine,
      livemig: this.#loader.livemig,
      ...(received ? { ramSha256Received: received } : {}),
    };
  }

  /**
   * The migration failed: `failed`, SHUT 1, the connection closed. A
   * postcopy migration the app gave up stays `postcopy-paused`.
   *
   * @returns The error to throw.
   */
  async #fail(
    error: unknown,
    reason: MigrationAbortReason,
  ): Promise<MigrationAbortedError> {
    this.#endTime = this.#clock.now();
    this.#loader.close(); // a postcopy placer's worker
    if (
      this.#pause.abandoned !== undefined &&
      error instanceof MigrationAbortedError
    ) {
      return error; // given up in postcopy-paused, which it stays in
    }
    await this.#multifd?.close();
    const message = this.#errorDesc ?? describeError(error);
    this.#errorDesc = message;
    if ((this.status as MigrationStatus) !== "failed") {
      this.#state.moveTo("failed");
    }
    this.#loader.guest?.memory.releaseReceivedPages();
    const connection = this.#connection;
    if (connection?.returnPath) {
      await connection.reply({ type: "SHUT", value: 1 }).catch(() => {});
    }
    await connection?.finish().catch(() => {});
    return new MigrationAbortedError(
      `Cannot complete the incoming migration: ${message}`,
      { reason, cause: error },
    );
  }
}
