/**
 * Applies decoded migration records to a new guest: the part of the
 * destination that does not care where the records come from (a
 * connection, a file). Private to the destination.
 *
 * ```
 * configuration    → the machine name; a UUID is checked against ours
 * section-start    → the RAM section's id (for a recovery's decoder)
 * command          → its handler (one per MIG_CMD, see #commands)
 * block list       → create the guest (size capped by maxRamBytes)
 * ZERO/PAGE/XBZRLE → apply to guest RAM in stream order (in postcopy:
 *                    only to a page still missing)
 * livemig-guest    → keep the guest's device state, loaded at the end
 * PACKAGED         → its records in turn: LISTEN starts postcopy, the
 *                    device state, RUN starts the guest
 * ```
 *
 * @module
 */

import { MigrationProtocolError } from "../errors.ts";
import type { DirtyBitmap } from "../guest/dirty_bitmap.ts";
import type { GuestMemory } from "../guest/guest_memory.ts";
import type { MigratableGuest } from "../guest/migratable_guest.ts";
import { SimulatedGuest } from "../guest/simulated_guest.ts";
import { applyRamRecord } from "../ram/apply_ram_record.ts";
// deno-fmt-ignore
import type { RamBlockInfo, RamPageCarrier, RamPageRecord } from "../ram/ram_record.ts";
import type { Clock } from "../streams/clock.ts";
import type { Transport } from "../transport/transport.ts";
import type {
  CommandRecord,
  MigrationRecord,
} from "../wire/migration_record.ts";
import type { ReturnPathMessage } from "../wire/return_path_message.ts";
import { checkUuid } from "./_check_uuid.ts";
import { defaultGuest } from "./_default_guest.ts";
import {
  DestinationPostcopy,
  discardPages,
  ownDeviceState,
  receivedBitmapMessage,
  unpackPackage,
} from "./_destination_postcopy.ts";
import {
  type IncomingConnection,
  noReturnPath,
} from "./_incoming_connection.ts";
import { GUEST_SECTION_IDSTR, RAM_SECTION_ID } from "./guest_device_section.ts";
import type { MigrationInfo, RamStats } from "./migration_info.ts";
import type { MigrationState } from "./migration_state.ts";

/** Options for {@linkcode RecordLoader}. */
export interface RecordLoaderOptions {
  /** The destination's status (moved by the postcopy commands). */
  state: MigrationState;
  /** Time source. */
  clock: Clock;
  /**
   * Builds the guest once the block list arrives. By default a paused
   * simulated guest for livemig streams, a memory-only guest otherwise.
   */
  createGuest?:
    | ((
      blocks: readonly RamBlockInfo[],
      machine: string | undefined,
    ) => MigratableGuest)
    | undefined;
  /** Allocates guest RAM for the default guests. */
  allocate?: ((size: number) => Uint8Array) | undefined;
  /** Largest total RAM the stream may announce. */
  maxRamBytes: number;
  /** Whether to resume the guest at POSTCOPY_RUN. */
  autostart: boolean;
  /** Whether a POSTCOPY_ADVISE is accepted. */
  postcopy: boolean;
  /** Whether the source opens a postcopy-preempt connection. */
  preempt: boolean;
  /** The connection replies go out on (undefined while paused). */
  connection(): IncomingConnection | undefined;
  /** Called at POSTCOPY_RESUME, before the status moves back. */
  onResume(): void;
  /**
   * This VM's UUID (QEMU's `-uuid`): a CONFIGURATION that carries another
   * one is refused, as QEMU refuses it whatever its own capabilities.
   */
  uuid?: Uint8Array | undefined;
  /**
   * Send SWITCHOVER_ACK (switchover-ack, QEMU 8.1 on) once the block list
   * is loaded and the guest made: from then on this side is ready.
   */
  switchoverAck?: boolean | undefined;
  /** Told what QEMU would warn about (a UUID sent to a VM without one). */
  onWarning?: ((message: string) => void) | undefined;
  /** Called at each RAM EOS (the multifd channels' sync of the round). */
  onRamEos?: () => Promise<void> | undefined;
}

/** Options for {@linkcode RecordLoader.load}. */
export interface LoadOptions {
  /** Accepts further connections from the source (postcopy-preempt). */
  accept?: (() => Promise<Transport>) | undefined;
  /**
   * How many bytes the records came from so far; read after each batch to
   * count the bytes received. Without it nothing is counted.
   */
  position?: () => number;
}

/** Page records and bytes received, for `query-migrate`. */
interface ReceivedCounts {
  /** ZERO records. */
  duplicate: number;
  /** PAGE and COMPRESS_PAGE records. */
  normal: number;
  /** XBZRLE records. */
  xbzrle: number;
  /** Bytes of the stream. */
  bytes: number;
  /** Bytes of the stream that came after POSTCOPY_LISTEN. */
  postcopy: number;
  /** Channel bytes as QEMU counts them (headers and uncompressed pages). */
  multifd: number;
}

type CommandName = CommandRecord["command"];
type CommandHandler<C extends CommandName> = (
  record: CommandRecord & { command: C },
) => void | Promise<void>;

/**
 * Loads batches of decoded records into a guest it creates from the block
 * list. Whatever the batches come from, the destination then finishes
 * with {@linkcode RecordLoader.finish}.
 */
export class RecordLoader {
  readonly #options: RecordLoaderOptions;
  #accept: (() => Promise<Transport>) | undefined;
  #guest: MigratableGuest | undefined;
  #machine: string | undefined;
  #switchoverAcked = false;
  #livemig = false;
  #guestState: Uint8Array | undefined;
  #guestStarted = false;
  #ramSectionId = RAM_SECTION_ID;
  #discarded: DirtyBitmap[] | undefined;
  #postcopy: DestinationPostcopy | undefined;
  readonly #received: ReceivedCounts = {
    duplicate: 0,
    normal: 0,
    xbzrle: 0,
    bytes: 0,
    postcopy: 0,
    multifd: 0,
  };

  /** What each MIG_CMD does on the destination. */
  readonly #commands: { readonly [C in CommandName]: CommandHandler<C> } = {
    OPEN_RETURN_PATH: () => this.#openReturnPath(),
    PING: (record) => this.#reply({ type: "PONG", value: record.value }),
    SWITCHOVER_START: () => {},
    POSTCOPY_ADVISE: (record) => this.#advise(record),
    POSTCOPY_RAM_DISCARD: (record) => {
      const memory = this.#memory("POSTCOPY_RAM_DISCARD");
      this.#discarded = discardPages(memory, record, this.#discarded);
    },
    PACKAGED: (record) => this.#loadPackage(record),
    RECV_BITMAP: (record) =>
      this.#reply(
        receivedBitmapMessage(this.#memory("RECV_BITMAP"), record.block),
      ),
    POSTCOPY_RESUME: () => this.#resume(),
    // Only inside a PACKAGED command (see #loadPackage); COLO is not
    // supported.
    POSTCOPY_LISTEN: outsidePackage,
    POSTCOPY_RUN: outsidePackage,
    ENABLE_COLO: outsidePackage,
  };

  /**
   * Constructs a new instance, with no guest yet.
   *
   * @param options The status, the limits, how to build the guest.
   */
  constructor(options: RecordLoaderOptions) {
    this.#options = options;
  }

  /** The guest, once the block list arrived. */
  get guest(): MigratableGuest | undefined {
    return this.#guest;
  }

  /** The machine name the stream announced, if any. */
  get machine(): string | undefined {
    return this.#machine;
  }

  /** Whether the stream came from livemig (its own device section). */
  get livemig(): boolean {
    return this.#livemig;
  }

  /** The id of the RAM section (a recovery's stream goes on with it). */
  get ramSectionId(): number {
    return this.#ramSectionId;
  }

  /**
   * What `query-migrate` reports as `ram` on the destination.
   *
   * @returns The statistics so far.
   */
  ramStats(): RamStats {
    const received = this.#received;
    const memory = this.#guest?.memory;
    const pageSize = memory?.pageSize ?? 4096;
    return {
      transferred: received.bytes,
      remaining: (memory?.missingPages ?? 0) * pageSize,
      total: memory?.totalBytes ?? 0,
      duplicate: received.duplicate,
      skipped: 0,
      normal: received.normal,
      "normal-bytes": received.normal * pageSize,
      "dirty-pages-rate": 0,
      mbps: 0,
      "dirty-sync-count": 0,
      "postcopy-requests": this.#postcopy?.requests ?? 0,
      "page-size": pageSize,
      "multifd-bytes": received.multifd,
      "pages-per-second": 0,
      "precopy-bytes": received.bytes - received.postcopy,
      "downtime-bytes": 0,
      "postcopy-bytes": received.postcopy,
      "dirty-sync-missed-zero-copy": 0,
    };
  }

  /** `postcopy-blocktime` in postcopy, for a simulated guest. */
  blocktime(): Partial<MigrationInfo> {
    const guest = this.#guest;
    if (this.#postcopy === undefined || !(guest instanceof SimulatedGuest)) {
      return {};
    }
    const blockedMs = Math.round(guest.blockedMs);
    return {
      "postcopy-blocktime": blockedMs,
      "postcopy-vcpu-blocktime": [blockedMs],
    };
  }

  /** Postcopy, once POSTCOPY_LISTEN was loaded. */
  get postcopy(): DestinationPostcopy | undefined {
    return this.#postcopy;
  }

  /** Whether POSTCOPY_RUN started the guest before the end of the stream. */
  get guestStarted(): boolean {
    return this.#guestStarted;
  }

  /**
   * Applies every record of `batches`, in order. The records may come
   * from anywhere: a decoder reading a connection, a file, an array.
   *
   * @param batches The records, in batches as a decoder yields them.
   * @param options How to accept the preempt connection; how far the
   *   source of the records has read.
   * @returns When the last batch was applied.
   */
  async load(
    batches: AsyncIterable<readonly MigrationRecord[]>,
    options: LoadOptions = {},
  ): Promise<void> {
    const { position } = options;
    this.#accept = options.accept;
    let counted = position?.() ?? 0;
    for await (const batch of batches) {
      if (position !== undefined) {
        const now = position();
        this.#countBytes(now - counted);
        counted = now;
      }
      for (const record of batch) {
        const room = this.#postcopy?.roomForPage();
        if (room !== undefined) await room;
        await this.apply(record);
        const postcopy = this.#postcopy;
        if (postcopy?.ioTurnDue()) await postcopy.takeTurn();
      }
      this.#postcopy?.flush();
    }
  }

  /**
   * Applies one record.
   *
   * @param record The record.
   * @returns When it was applied (a command may wait for a reply to go
   *   out).
   */
  async apply(record: MigrationRecord): Promise<void> {
    switch (record.type) {
      case "configuration":
        this.#machine = record.machine;
        if (record.uuid !== undefined) {
          const { uuid, onWarning } = this.#options;
          checkUuid(record.uuid, uuid, onWarning);
        }
        return;
      case "section-start":
        this.#ramSectionId = record.sectionId;
        return;
      case "command":
        await this.#command(record);
        return;
      case "ram-mem-size":
        this.#createGuest(record.blocks);
        if (this.#options.switchoverAck && !this.#switchoverAcked) {
          this.#switchoverAcked = true;
          await this.#reply({ type: "SWITCHOVER_ACK" });
        }
        return;
      case "ram-zero":
      case "ram-page":
      case "ram-xbzrle":
      case "ram-compressed":
        this.#place(record);
        return;
      case "ram-eos":
        await this.#options.onRamEos?.();
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

  /**
   * Ends the load: in postcopy every page must have arrived; otherwise the
   * guest's device state is loaded now.
   *
   * @returns The loaded guest.
   * @throws {MigrationProtocolError} If the stream held no RAM, or pages
   *   never arrived.
   */
  async finish(): Promise<MigratableGuest> {
    const guest = this.#guest;
    if (guest === undefined) {
      throw new MigrationProtocolError(
        "Cannot complete the incoming migration: the stream held no RAM",
      );
    }
    if (this.#postcopy !== undefined) await this.#postcopy.finish();
    else if (this.#guestState !== undefined) {
      guest.loadState(this.#guestState);
    }
    return guest;
  }

  /** Stops what the load runs beside it (postcopy's placer worker). */
  close(): void {
    this.#postcopy?.close();
  }

  /** Places a page that arrived on a multifd channel. */
  placeChannelPage(record: RamPageRecord): void {
    this.#place(record);
  }

  /**
   * Counts channel bytes: all, and QEMU's `multifd-bytes`; and pages a
   * channel's worker placed itself.
   */
  countChannelBytes(bytes: number, multifdBytes: number, pages = 0): void {
    this.#received.normal += pages;
    this.#countBytes(bytes);
    this.#received.multifd += multifdBytes;
  }

  #countBytes(bytes: number): void {
    this.#received.bytes += bytes;
    if (this.#postcopy !== undefined) this.#received.postcopy += bytes;
  }

  #command(record: CommandRecord): void | Promise<void> {
    const handler = this.#commands[record.command] as CommandHandler<
      CommandName
    >;
    return handler(record);
  }

  #reply(message: ReturnPathMessage): Promise<void> {
    const connection = this.#options.connection();
    if (connection === undefined) return Promise.reject(noReturnPath(message));
    return connection.reply(message);
  }

  #openReturnPath(): void {
    const connection = this.#options.connection();
    if (connection !== undefined) connection.returnPath = true;
  }

  #advise(record: CommandRecord & { command: "POSTCOPY_ADVISE" }): void {
    if (record.pageSizeSummary === undefined) return;
    if (!this.#options.postcopy) {
      throw new MigrationProtocolError(
        "Cannot accept POSTCOPY_ADVISE: postcopy-ram is off on this destination",
      );
    }
  }

  /**
   * PACKAGED: the records of the package, with LISTEN and RUN, which are
   * allowed only there.
   */
  async #loadPackage(
    record: CommandRecord & { command: "PACKAGED" },
  ): Promise<void> {
    const records = await unpackPackage(
      this.#guestFor("PACKAGED"),
      record.data,
    );
    for (const inner of records) {
      if (inner.type === "device-tail") {
        this.#guestState = ownDeviceState(inner.data);
        if (this.#guestState) this.#livemig = true;
        // The trailing PING 3 and RUN are inside the opaque tail.
        await this.#reply({ type: "PONG", value: 3 }).catch(() => {});
        this.#startGuest();
      } else if (
        inner.type === "command" && inner.command === "POSTCOPY_LISTEN"
      ) {
        this.#listen();
      } else if (inner.type === "command" && inner.command === "POSTCOPY_RUN") {
        this.#startGuest();
      } else {
        await this.apply(inner);
      }
    }
  }

  /** POSTCOPY_LISTEN: from here on pages that did not arrive are missing. */
  #listen(): void {
    const memory = this.#memory("POSTCOPY_LISTEN");
    this.#postcopy ??= new DestinationPostcopy(memory, {
      state: this.#options.state,
      clock: this.#options.clock,
      preempt: this.#options.preempt,
      connection: () => this.#options.connection(),
      place: (record, urgent) => this.#place(record, urgent),
    });
    this.#postcopy.listen(this.#discarded, this.#accept);
  }

  /** POSTCOPY_RUN: the guest runs before all of its RAM is here. */
  #startGuest(): void {
    if (this.#guestStarted) return;
    const guest = this.#guest!;
    if (this.#guestState !== undefined) guest.loadState(this.#guestState);
    this.#guestStarted = true;
    // Like QEMU started with -S, autostart off leaves the guest paused;
    // its pages keep arriving in the background.
    if (this.#options.autostart) guest.resume();
  }

  /** POSTCOPY_RESUME: only while recovering a paused postcopy. */
  #resume(): Promise<void> {
    const status = this.#options.state.status;
    if (status !== "postcopy-recover" || this.#postcopy === undefined) {
      throw new MigrationProtocolError(
        `Cannot resume postcopy in "${status}"`,
      );
    }
    this.#options.onResume();
    return this.#postcopy.resume(this.#accept);
  }

  /** Applies one page record; in postcopy only to a page still missing. */
  #place(record: RamPageCarrier, urgent = false): void {
    const memory = this.#memory("a page");
    if (this.#postcopy === undefined) applyRamRecord(record, memory);
    else if (!this.#postcopy.place(record, urgent)) return; // placed before
    if (record.type === "ram-zero") this.#received.duplicate++;
    else if (record.type === "ram-xbzrle") this.#received.xbzrle++;
    else this.#received.normal++;
  }

  #guestFor(what: string): MigratableGuest {
    if (this.#guest === undefined) {
      throw new MigrationProtocolError(
        `Cannot load ${what} before the block list`,
      );
    }
    return this.#guest;
  }

  #memory(what: string): GuestMemory {
    return this.#guestFor(what).memory;
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
        throw new MigrationProtocolError(
          "Cannot load a second, different block list",
        );
      }
      return;
    }
    const total = blocks.reduce((sum, b) => sum + b.usedLength, 0);
    const limit = this.#options.maxRamBytes;
    if (total > limit) {
      throw new RangeError(
        `Cannot create a guest of ${total} bytes: the limit is ${limit} bytes (maxRamBytes)`,
      );
    }
    const { clock, allocate } = this.#options;
    const create = this.#options.createGuest ??
      ((list, name) => defaultGuest(list, name, { clock, allocate }));
    this.#guest = create(blocks, this.#machine);
  }
}

function outsidePackage(record: CommandRecord): never {
  throw new MigrationProtocolError(
    `Cannot load command ${record.command} outside its postcopy package`,
  );
}
