/**
 * The destination end of a live migration (QEMU's incoming side): loads
 * the stream into a guest of the announced size, answers the return path,
 * and resumes the guest only after the whole stream is loaded — or, in
 * postcopy, runs it as soon as the device state is in and pulls the pages
 * it touches before they arrive.
 *
 * ```
 * transport.readable → MigrationDecoderStream → records
 *   OPEN_RETURN_PATH → open the reverse direction    PING n → PONG n
 *   block list       → create the guest (size capped by maxRamBytes)
 *   ZERO/PAGE/XBZRLE → apply to guest RAM in stream order
 *   livemig-guest    → load the guest's device state
 *   EOF (+ vmdesc)   → completed, SHUT 0, resume the guest
 * postcopy:
 *   ADVISE, DISCARD  → the discarded pages are missing
 *   PACKAGED         → LISTEN: postcopy-active; device state; RUN: the guest
 *                      runs; a write to a missing page blocks and sends
 *                      REQ_PAGES(_ID) on the return path
 *   connection lost  → postcopy-paused, until recover(): RECV_BITMAP
 *                      answered with what arrived, RESUME → RESUME_ACK
 * any other error    → failed, SHUT 1, the guest is never resumed
 * ```
 *
 * @module
 */

import { MigrationAbortedError, StreamFormatError } from "../errors.ts";
import { DirtyBitmap } from "../guest/dirty_bitmap.ts";
import { GuestMemory, type GuestMemoryOptions } from "../guest/guest_memory.ts";
import { HostedGuest } from "../guest/hosted_guest.ts";
import type { MigratableGuest } from "../guest/migratable_guest.ts";
import { SimulatedGuest } from "../guest/simulated_guest.ts";
import { yieldToIo } from "./_yield_to_io.ts";
import { applyRamRecord } from "../ram/apply_ram_record.ts";
import type { RamBlockInfo, RamPageCarrier } from "../ram/ram_record.ts";
import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import { convertMappedRamToStream } from "../inspect/convert_mapped_ram_to_stream.ts";
import { createMemoryTransportPair } from "../transport/memory_transport.ts";
import type { RandomAccessFile, Transport } from "../transport/transport.ts";
import { ByteReader } from "../streams/byte_reader.ts";
import { MigrationDecoder } from "../wire/migration_decoder.ts";
import { MigrationDecoderStream } from "../wire/migration_decoder_stream.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import { decodePostcopyPackage } from "../wire/postcopy_package.ts";
import {
  encodeReturnPathMessage,
  type ReturnPathMessage,
} from "../wire/return_path_message.ts";
import {
  GUEST_SECTION_IDSTR,
  guestDeviceDescription,
  RAM_SECTION_ID,
} from "./guest_device_section.ts";
import type { MigrationInfo } from "./migration_info.ts";
import {
  type MigrationEventDetail,
  MigrationState,
  type MigrationStatus,
} from "./migration_state.ts";

/** Longest stretch of postcopy loading between two socket polls. */
const IO_TURN_MS = 0.5;
/** How long after a page request the loader polls after every record. */
const FAULT_TURNS_MS = 1;
/**
 * Most socket polls the main loader spends waiting for a requested page to
 * come in on the preempt connection (about 60 µs each when nothing is
 * ready) before it goes on loading background pages anyway.
 */
const URGENT_WAIT_TURNS = 50;

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
   * @default {(size) => new Uint8Array(size)}
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
   * Called with the loaded guest after EOF, before it is resumed in
   * precopy (e.g. to dump its RAM); in postcopy, once all RAM is in.
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
   * Whether the source opens a postcopy-preempt connection at postcopy
   * start (QEMU's `postcopy-preempt`).
   *
   * @default {false}
   */
  preempt?: boolean;
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
}

/** Options for {@linkcode DestinationMigration.incoming}. */
export interface IncomingOptions {
  /**
   * Accepts further connections from the same source: the
   * postcopy-preempt channel.
   */
  accept?: () => Promise<Transport>;
}

interface Connection {
  transport: Transport;
  /** Serialised writes to the return path. */
  reply(message: ReturnPathMessage): Promise<void>;
  returnPath: boolean;
  lastRequestedBlock: number | undefined;
}

/**
 * Receives a migration over a {@linkcode Transport} into a new guest.
 *
 * Events: `"status"` with `{ status }` on every status change, and
 * `"migration"` (QEMU's `MIGRATION` event) too when `events` is set.
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
  #state: MigrationState;
  #startTime = 0;
  #endTime: number | undefined;
  #errorDesc: string | undefined;
  #guest: MigratableGuest | undefined;
  #received = { duplicate: 0, normal: 0, xbzrle: 0, bytes: 0, postcopy: 0 };
  #connection: Connection | undefined;
  #machine: string | undefined;
  #livemig = false;
  #guestState: Uint8Array | undefined;
  #missing: DirtyBitmap[] | undefined;
  #listening = false;
  #running = false;
  #requests = 0;
  #lastRequestAt = -Infinity;
  #lastIoTurn = 0;
  /** Requested pages (block index, page pairs) not yet seen placed. */
  #urgent: number[] = [];
  #recoverWaiter:
    | PromiseWithResolvers<
      { transport: Transport; accept?: () => Promise<Transport> }
    >
    | undefined;
  #preemptLoad: Promise<void> | undefined;

  /**
   * Constructs a new instance in status `none`.
   *
   * @param options How to build the guest and the limits.
   */
  constructor(options: DestinationMigrationOptions = {}) {
    super();
    this.#options = options;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#state = new MigrationState("destination");
    this.#state.addEventListener("migration", (event) => {
      this.dispatchEvent(
        new CustomEvent<MigrationEventDetail>("status", {
          detail: (event as CustomEvent<MigrationEventDetail>).detail,
        }),
      );
      if (!options.events) return;
      this.dispatchEvent(
        new CustomEvent<MigrationEventDetail>("migration", {
          detail: (event as CustomEvent<MigrationEventDetail>).detail,
        }),
      );
    });
  }

  /** The current status. */
  get status(): MigrationStatus {
    return this.#state.status;
  }

  /** The guest, once the block list arrived. */
  get guest(): MigratableGuest | undefined {
    return this.#guest;
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
    const pageSize = this.#guest?.memory.pageSize ?? 4096;
    info.ram = {
      transferred: this.#received.bytes,
      remaining: (this.#guest?.memory.missingPages ?? 0) * pageSize,
      total: this.#guest?.memory.totalBytes ?? 0,
      duplicate: this.#received.duplicate,
      skipped: 0,
      normal: this.#received.normal,
      "normal-bytes": this.#received.normal * pageSize,
      "dirty-pages-rate": 0,
      mbps: 0,
      "dirty-sync-count": 0,
      "postcopy-requests": this.#requests,
      "page-size": pageSize,
      "multifd-bytes": 0,
      "pages-per-second": 0,
      "precopy-bytes": this.#received.bytes - this.#received.postcopy,
      "downtime-bytes": 0,
      "postcopy-bytes": this.#received.postcopy,
      "dirty-sync-missed-zero-copy": 0,
    };
    const guest = this.#guest;
    if (this.#listening && guest instanceof SimulatedGuest) {
      info["postcopy-blocktime"] = Math.round(guest.blockedMs);
      info["postcopy-vcpu-blocktime"] = [Math.round(guest.blockedMs)];
    }
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
   * {@linkcode DestinationMigration.recover}.
   *
   * @param reason Why.
   */
  abort(reason = "the incoming migration was aborted"): void {
    if (!this.#listening) this.#errorDesc ??= reason;
    void this.#connection?.transport.close();
  }

  /**
   * Pauses a postcopy migration (`migrate-pause`): the connection is
   * closed, the guest keeps running, and pages it touches wait for a
   * recovery.
   *
   * @throws {TypeError} Outside postcopy-active.
   */
  pause(): void {
    if (this.status !== "postcopy-active") {
      throw new TypeError(
        `Cannot pause migration in "${this.status}": it is only supported during postcopy-active state`,
      );
    }
    void this.#connection?.transport.close();
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
    if (
      this.status !== "postcopy-paused" || this.#recoverWaiter === undefined
    ) {
      throw new TypeError(
        `Cannot recover migration in "${this.status}": it must be in "postcopy-paused"`,
      );
    }
    this.#recoverWaiter.resolve({ transport, ...options });
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
    this.listen();
    if (this.status !== "setup") {
      throw new TypeError(
        `Cannot receive a migration: the destination is in "${this.status}"`,
      );
    }
    this.#startTime = this.#clock.now();
    this.#state.moveTo("active");
    let next: { transport: Transport; accept?: () => Promise<Transport> } = {
      transport,
      ...options,
    };
    let recovery = false;
    try {
      while (true) {
        try {
          await this.#load(next.transport, recovery, next.accept);
          break;
        } catch (error) {
          await this.#connection?.transport.close().catch(() => {});
          if (!this.#listening) throw error;
          // Postcopy: the guest already runs here; wait for a new
          // connection instead of failing.
          this.#errorDesc = error instanceof Error
            ? error.message
            : String(error);
          this.#connection = undefined;
          this.#state.moveTo("postcopy-paused");
          this.#recoverWaiter = Promise.withResolvers();
          next = await this.#recoverWaiter.promise;
          this.#recoverWaiter = undefined;
          this.#state.moveTo("postcopy-recover");
          recovery = true;
        }
      }
      const guest = this.#guest;
      if (guest === undefined) {
        throw new StreamFormatError(
          "Cannot complete the incoming migration: the stream held no RAM",
          { offset: 0 },
        );
      }
      if (this.#listening) {
        await this.#preemptLoad?.catch(() => {});
        const missing = guest.memory.missingPages;
        if (missing > 0) {
          throw new StreamFormatError(
            `Cannot complete the incoming migration: ${missing} pages never arrived`,
            { offset: 0 },
          );
        }
        guest.memory.finishPostcopy();
      } else if (this.#guestState !== undefined) {
        guest.loadState(this.#guestState);
      }
      this.#endTime = this.#clock.now();
      this.#errorDesc = undefined;
      this.#state.moveTo("completed");
      const connection = this.#connection;
      if (connection?.returnPath) {
        await connection.reply({ type: "SHUT", value: 0 });
      }
      await this.#options.beforeResume?.(guest);
      if (!this.#running && (this.#options.autostart ?? true)) guest.resume();
      await connection?.transport.close();
      return {
        guest,
        info: this.query(),
        machine: this.#machine,
        livemig: this.#livemig,
      };
    } catch (error) {
      this.#endTime = this.#clock.now();
      const message = this.#errorDesc ??
        (error instanceof Error ? error.message : String(error));
      this.#errorDesc = message;
      if ((this.status as MigrationStatus) !== "failed") {
        this.#state.moveTo("failed");
      }
      const connection = this.#connection;
      if (connection?.returnPath) {
        await connection.reply({ type: "SHUT", value: 1 }).catch(() => {});
      }
      await connection?.transport.close().catch(() => {});
      throw new MigrationAbortedError(
        `Cannot complete the incoming migration: ${message}`,
        { reason: "stream-error", cause: error },
      );
    }
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
    const [writing, reading] = createMemoryTransportPair();
    const converted = convertMappedRamToStream(file, writing.writable, {
      ...(options.offset === undefined ? {} : { offset: options.offset }),
    });
    converted.catch((error) => {
      this.abort(error instanceof Error ? error.message : String(error));
    });
    const [result] = await Promise.all([this.incoming(reading), converted]);
    await writing.close();
    return result;
  }

  /** Decodes one connection until EOF. */
  async #load(
    transport: Transport,
    recovery: boolean,
    accept: (() => Promise<Transport>) | undefined,
  ): Promise<void> {
    const connection = this.#connect(transport, recovery);
    const guest = this.#guest;
    const decoder = new MigrationDecoder(
      recovery && guest
        ? {
          kind: "postcopy-recovery",
          blocks: guest.memory.blocks.map((b) => ({
            idstr: b.idstr,
            usedLength: b.bytes.byteLength,
          })),
          sections: [{
            sectionId: this.#ramSectionId,
            idstr: "ram",
            instanceId: 0,
            versionId: 4,
          }],
          pageSize: guest.memory.pageSize,
        }
        : { deviceState: "walk" },
    );
    // Read into one reused buffer: every record of a batch is applied (its
    // bytes copied into guest RAM) before the decoder reads again, which is
    // when the buffer is reused. Fresh chunks would mean first-touch page
    // faults on every read.
    const reader = new ByteReader(transport.readable, 0, {
      bufferBytes: 1 << 20,
    });
    let counted = 0;
    try {
      for await (const batch of decoder.decode(reader)) {
        const bytes = reader.offset - counted;
        counted = reader.offset;
        this.#received.bytes += bytes;
        if (this.#listening) this.#received.postcopy += bytes;
        for (const record of batch) {
          await this.#record(record, connection, accept);
          if (this.#ioTurnDue()) {
            await yieldToIo();
            await this.#awaitUrgentPages();
          }
        }
      }
    } catch (error) {
      await reader.cancel(error).catch(() => {});
      throw error;
    }
  }

  /**
   * Whether the loader should let the runtime poll its sockets now: in
   * postcopy with preempt, reads from a ready main connection never wait,
   * so the preempt connection would be read only when the main one runs
   * dry. Every half millisecond, and after every record for a moment
   * after a page request, while its page is due on the preempt channel.
   * (Without preempt the requested page comes on this connection: polling
   * would only slow it down.)
   */
  #ioTurnDue(): boolean {
    if (!this.#listening || this.#options.preempt !== true) return false;
    const now = this.#clock.now();
    const faulting = now - this.#lastRequestAt < FAULT_TURNS_MS;
    if (!faulting && now - this.#lastIoTurn < IO_TURN_MS) return false;
    this.#lastIoTurn = now;
    return true;
  }

  /**
   * With preempt, holds the main connection while a requested page is on
   * its way on the preempt connection: on a single thread, every
   * background page placed meanwhile (a copy into RAM touched for the
   * first time) delays the read that answers the fault. Bounded, so a
   * page that comes some other way (or a preempt connection that broke)
   * only costs a few milliseconds of background loading.
   */
  async #awaitUrgentPages(): Promise<void> {
    const memory = this.#guest?.memory;
    if (memory === undefined) return;
    for (let turns = 0; turns < URGENT_WAIT_TURNS; turns++) {
      const urgent = this.#urgent;
      let kept = 0;
      for (let i = 0; i < urgent.length; i += 2) {
        if (memory.isMissing(urgent[i]!, urgent[i + 1]!)) {
          urgent[kept++] = urgent[i]!;
          urgent[kept++] = urgent[i + 1]!;
        }
      }
      urgent.length = kept;
      if (kept === 0) return;
      await yieldToIo();
    }
  }

  #ramSectionId = RAM_SECTION_ID;

  #connect(transport: Transport, recovery: boolean): Connection {
    let chain = Promise.resolve();
    let writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
    const connection: Connection = {
      transport,
      // In a recovery the return path comes back without OPEN_RETURN_PATH.
      returnPath: recovery,
      lastRequestedBlock: undefined,
      reply: (message) => {
        if (!connection.returnPath) {
          return Promise.reject(
            new StreamFormatError(
              `Cannot answer ${message.type}: the source never opened the return path`,
              { offset: 0 },
            ),
          );
        }
        writer ??= transport.writable.getWriter();
        const bytes = encodeReturnPathMessage(message);
        chain = chain.then(() => writer!.write(bytes));
        return chain;
      },
    };
    this.#connection = connection;
    return connection;
  }

  async #record(
    record: MigrationRecord,
    connection: Connection,
    accept: (() => Promise<Transport>) | undefined,
  ): Promise<void> {
    switch (record.type) {
      case "configuration":
        this.#machine = record.machine;
        return;
      case "section-start":
        this.#ramSectionId = record.sectionId;
        return;
      case "command":
        await this.#command(record, connection, accept);
        return;
      case "ram-mem-size":
        this.#createGuest(record.blocks);
        return;
      case "ram-zero":
      case "ram-page":
      case "ram-xbzrle":
      case "ram-compressed":
        this.#place(record);
        return;
      case "device-state":
        if (record.idstr === GUEST_SECTION_IDSTR) {
          this.#guestState = record.data;
          this.#livemig = true;
        }
        return;
      default:
        return;
    }
  }

  async #command(
    record: MigrationRecord & { type: "command" },
    connection: Connection,
    accept: (() => Promise<Transport>) | undefined,
  ): Promise<void> {
    switch (record.command) {
      case "OPEN_RETURN_PATH":
        connection.returnPath = true;
        return;
      case "PING":
        await connection.reply({ type: "PONG", value: record.value });
        return;
      case "SWITCHOVER_START":
        return;
      case "POSTCOPY_ADVISE":
        if (record.pageSizeSummary === undefined) return;
        if (!this.#options.postcopy) {
          throw new StreamFormatError(
            "Cannot accept POSTCOPY_ADVISE: postcopy-ram is off on this destination",
            { offset: 0 },
          );
        }
        return;
      case "POSTCOPY_RAM_DISCARD": {
        const memory = this.#memory("POSTCOPY_RAM_DISCARD");
        const block = memory.block(record.block);
        this.#missing ??= memory.blocks.map((b) =>
          new DirtyBitmap(b.pageCount)
        );
        const pageSize = memory.pageSize;
        for (const range of record.ranges) {
          if (range.start % pageSize !== 0 || range.length % pageSize !== 0) {
            throw new StreamFormatError(
              `Cannot discard ${record.block}@${range.start}+${range.length}: not whole pages`,
              { offset: 0 },
            );
          }
          this.#missing[block.index]!.setRange(
            range.start / pageSize,
            range.length / pageSize,
          );
        }
        return;
      }
      case "PACKAGED": {
        const memory = this.#memory("PACKAGED");
        const guest = this.#guest!;
        const layouts = guest.stateFields
          ? [guestDeviceDescription(
            new Uint8Array(
              guest.stateFields.reduce((sum, f) => sum + f.size, 0),
            ),
            guest.stateFields,
          )]
          : [];
        const records = await decodePostcopyPackage(record.data, {
          deviceLayouts: layouts,
          pageSize: memory.pageSize,
        });
        for (const inner of records) {
          if (inner.type === "device-tail") {
            this.#guestState = ownDeviceState(inner.data);
            if (this.#guestState) this.#livemig = true;
            // The trailing PING 3 and RUN are inside the opaque tail.
            await connection.reply({ type: "PONG", value: 3 }).catch(() => {});
            this.#run();
            continue;
          }
          if (inner.type === "command" && inner.command === "POSTCOPY_LISTEN") {
            this.#listen(accept);
          } else if (
            inner.type === "command" && inner.command === "POSTCOPY_RUN"
          ) {
            this.#run();
          } else {
            await this.#record(inner, connection, accept);
          }
        }
        return;
      }
      case "RECV_BITMAP": {
        const memory = this.#memory("RECV_BITMAP");
        const block = memory.block(record.block);
        await connection.reply({
          type: "RECV_BITMAP",
          block: record.block,
          bitmap: memory.receivedPages(block.index).toLittleEndian(),
        });
        return;
      }
      case "POSTCOPY_RESUME": {
        if (this.status !== "postcopy-recover") {
          throw new StreamFormatError(
            `Cannot resume postcopy in "${this.status}"`,
            { offset: 0 },
          );
        }
        this.#errorDesc = undefined;
        this.#state.moveTo("postcopy-active");
        await connection.reply({ type: "RESUME_ACK", value: 1 });
        for (
          const [blockIndex, page] of this.#memory("RESUME").pendingFaults()
        ) {
          this.#requestPage(blockIndex, page);
        }
        if (this.#options.preempt && accept) this.#acceptPreempt(accept);
        return;
      }
      default:
        throw new StreamFormatError(
          `Cannot load command ${record.command} outside its postcopy package`,
          { offset: 0 },
        );
    }
  }

  #memory(what: string): GuestMemory {
    if (this.#guest === undefined) {
      throw new StreamFormatError(
        `Cannot load ${what} before the block list`,
        { offset: 0 },
      );
    }
    return this.#guest.memory;
  }

  /** POSTCOPY_LISTEN: from here on pages that did not arrive are missing. */
  #listen(accept: (() => Promise<Transport>) | undefined): void {
    const memory = this.#memory("POSTCOPY_LISTEN");
    this.#listening = true;
    this.#state.moveTo("postcopy-active");
    memory.startPostcopy(
      this.#missing ?? memory.blocks.map((b) => new DirtyBitmap(b.pageCount)),
      (blockIndex, page) => this.#requestPage(blockIndex, page),
    );
    if (this.#options.preempt && accept) this.#acceptPreempt(accept);
  }

  /** POSTCOPY_RUN: the guest runs before all of its RAM is here. */
  #run(): void {
    if (this.#running) return;
    const guest = this.#guest!;
    if (this.#guestState !== undefined) guest.loadState(this.#guestState);
    this.#running = true;
    // Like QEMU started with -S, autostart off leaves the guest paused;
    // its pages keep arriving in the background.
    if (this.#options.autostart ?? true) guest.resume();
  }

  #requestPage(blockIndex: number, page: number): void {
    const connection = this.#connection;
    if (connection === undefined || !connection.returnPath) return; // re-sent after a recovery
    const memory = this.#guest!.memory;
    const pageSize = memory.pageSize;
    this.#requests++;
    this.#lastRequestAt = this.#clock.now();
    if (this.#options.preempt === true && this.#urgent.length < 2 * 64) {
      this.#urgent.push(blockIndex, page);
    }
    const message: ReturnPathMessage =
      connection.lastRequestedBlock === blockIndex
        ? { type: "REQ_PAGES", start: page * pageSize, length: pageSize }
        : {
          type: "REQ_PAGES_ID",
          start: page * pageSize,
          length: pageSize,
          block: memory.blocks[blockIndex]!.idstr,
        };
    connection.lastRequestedBlock = blockIndex;
    connection.reply(message).catch(() => {});
  }

  #acceptPreempt(accept: () => Promise<Transport>): void {
    this.#preemptLoad = (async () => {
      const transport = await accept();
      const guest = this.#guest!;
      const decoder = new MigrationDecoderStream({
        kind: "postcopy-preempt",
        blocks: guest.memory.blocks.map((b) => ({
          idstr: b.idstr,
          usedLength: b.bytes.byteLength,
        })),
        pageSize: guest.memory.pageSize,
      });
      try {
        for await (const batch of transport.readable.pipeThrough(decoder)) {
          for (const record of batch) {
            if (
              record.type === "ram-zero" || record.type === "ram-page" ||
              record.type === "ram-xbzrle" || record.type === "ram-compressed"
            ) {
              this.#place(record);
            }
          }
        }
      } finally {
        await transport.close().catch(() => {});
      }
    })();
    this.#preemptLoad.catch(() => {
      // A broken preempt channel pauses postcopy like a broken main one.
      void this.#connection?.transport.close();
    });
  }

  /** Applies one page record; in postcopy only to a page still missing. */
  #place(record: RamPageCarrier): void {
    const memory = this.#memory("a page");
    if (this.#listening) {
      if (record.type === "ram-xbzrle") {
        throw new StreamFormatError(
          "Cannot load an XBZRLE record in postcopy",
          { offset: 0 },
        );
      }
      const block = memory.block(record.block);
      const page = record.offset / memory.pageSize;
      if (!memory.isMissing(block.index, page)) return; // already placed
      applyRamRecord(record, memory);
      memory.markReceived(block.index, page);
    } else {
      applyRamRecord(record, memory);
    }
    if (record.type === "ram-zero") this.#received.duplicate++;
    else if (record.type === "ram-xbzrle") this.#received.xbzrle++;
    else this.#received.normal++;
  }

  #createGuest(blocks: readonly RamBlockInfo[]): void {
    if (this.#guest !== undefined) {
      const known = this.#guest.memory.blocks;
      const same = blocks.length === known.length &&
        blocks.every((b, i) =>
          b.idstr === known[i]!.idstr &&
          b.usedLength === known[i]!.bytes.byteLength
        );
      if (!same) {
        throw new StreamFormatError(
          "Cannot load a second, different block list",
          { offset: 0 },
        );
      }
      return;
    }
    const total = blocks.reduce((sum, b) => sum + b.usedLength, 0);
    const limit = this.#options.maxRamBytes ?? 16 * 1024 ** 3;
    if (total > limit) {
      throw new RangeError(
        `Cannot create a guest of ${total} bytes: the limit is ${limit} bytes (maxRamBytes)`,
      );
    }
    const create = this.#options.createGuest ??
      ((list, name) =>
        defaultGuest(list, name, this.#clock, this.#options.allocate));
    this.#guest = create(blocks, this.#machine);
  }
}

/**
 * The state bytes of livemig's own device section inside an opaque
 * package tail (`FULL header, state, footer, PING 3, RUN`), for guests
 * whose state has no fixed layout.
 */
function ownDeviceState(tail: Uint8Array): Uint8Array | undefined {
  const name = new TextEncoder().encode(GUEST_SECTION_IDSTR);
  const header = 1 + 4 + 1 + name.byteLength + 8;
  const trailer = 5 + (5 + 4) + 5; // footer, PING 3, RUN
  if (tail.byteLength < header + trailer || tail[0] !== 0x04) return undefined;
  if (tail[5] !== name.byteLength) return undefined;
  for (let i = 0; i < name.byteLength; i++) {
    if (tail[6 + i] !== name[i]) return undefined;
  }
  return tail.slice(header, tail.byteLength - trailer);
}

/** livemig's own streams get a simulated guest; others a memory-only one. */
function defaultGuest(
  blocks: readonly RamBlockInfo[],
  machine: string | undefined,
  clock: Clock,
  allocate: ((size: number) => Uint8Array) | undefined,
): MigratableGuest {
  if (machine === "livemig" && blocks.length === 1) {
    return new SimulatedGuest({
      ramBytes: blocks[0]!.usedLength,
      blockName: blocks[0]!.idstr,
      running: false,
      clock,
      ...(allocate ? { allocate } : {}),
    });
  }
  const memory = new GuestMemory(
    blocks.map((b) => ({ idstr: b.idstr, size: b.usedLength })),
    allocate ? { allocate } : {},
  );
  const guest = new HostedGuest({ memory });
  void guest.pause();
  return guest;
}
