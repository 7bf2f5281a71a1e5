/**
 * The destination's side of postcopy (QEMU's `postcopy-ram` on the
 * incoming side). Private to the destination.
 *
 * ```
 * POSTCOPY_RAM_DISCARD → the discarded pages will be missing      discardPages()
 * PACKAGED             → its records (device state, LISTEN, RUN)  unpackPackage()
 * POSTCOPY_LISTEN      → postcopy-active: pages that did not       listen()
 *                        arrive are missing; a write to one blocks
 *                        the guest and sends REQ_PAGES(_ID)         requestPage()
 * a page (main or preempt connection) → placed if still missing   place()
 * with preempt: a second connection carries requested pages; the
 *   main loader polls for it and holds back while a request is out  ioTurnDue(), takeTurn()
 * background pages go to a worker that writes them into RAM         (_postcopy_placer.ts)
 * connection lost      → (the session) postcopy-paused, until a new one:
 *   RECV_BITMAP        → the pages that arrived                   receivedBitmapMessage()
 *   POSTCOPY_RESUME    → postcopy-active, RESUME_ACK, the pending
 *                        faults requested again                    resume()
 * end of the stream    → every page must have arrived              finish()
 * ```
 *
 * @module
 */

import { MigrationProtocolError } from "../errors.ts";
import { DirtyBitmap } from "../guest/dirty_bitmap.ts";
import type { GuestMemory } from "../guest/guest_memory.ts";
import type { MigratableGuest } from "../guest/migratable_guest.ts";
import { applyRamRecord } from "../ram/apply_ram_record.ts";
import type { RamPageCarrier } from "../ram/ram_record.ts";
import type { Clock } from "../streams/clock.ts";
import type { Transport } from "../transport/transport.ts";
import { MigrationDecoderStream } from "../wire/migration_decoder_stream.ts";
import type {
  CommandRecord,
  MigrationRecord,
} from "../wire/migration_record.ts";
import { decodePostcopyPackage } from "../wire/postcopy_package.ts";
import type { ReturnPathMessage } from "../wire/return_path_message.ts";
import {
  type IncomingConnection,
  noReturnPath,
} from "./_incoming_connection.ts";
import { PostcopyPlacer } from "./_postcopy_placer.ts";
import { yieldToIo } from "./_yield_to_io.ts";
import {
  GUEST_SECTION_IDSTR,
  guestDeviceDescription,
} from "./guest_device_section.ts";
import type { MigrationState } from "./migration_state.ts";

/** Longest stretch of postcopy loading between two socket polls. */
const IO_TURN_MS = 0.5;
/**
 * Longest the main loader holds the background pages while a requested
 * page is on its way on the preempt connection.
 */
const URGENT_WAIT_MS = 3;
/** Most requested pages remembered as urgent. */
const MAX_URGENT_PAGES = 64;

/** A POSTCOPY_RAM_DISCARD command. */
export type DiscardCommand = CommandRecord & {
  command: "POSTCOPY_RAM_DISCARD";
};

/**
 * POSTCOPY_RAM_DISCARD: marks the discarded pages of one block as pages
 * that will be missing once postcopy starts.
 *
 * @param memory The guest's RAM.
 * @param record The command.
 * @param missing The pages discarded so far, one bitmap per block.
 * @returns The pages discarded so far, with this command's.
 * @throws {MigrationProtocolError} If a range is not made of whole pages.
 */
export function discardPages(
  memory: GuestMemory,
  record: DiscardCommand,
  missing: DirtyBitmap[] | undefined,
): DirtyBitmap[] {
  const block = memory.block(record.block);
  missing ??= noPages(memory);
  const pageSize = memory.pageSize;
  for (const range of record.ranges) {
    if (range.start % pageSize !== 0 || range.length % pageSize !== 0) {
      throw new MigrationProtocolError(
        `Cannot discard ${record.block}@${range.start}+${range.length}: not whole pages`,
      );
    }
    missing[block.index]!.setRange(
      range.start / pageSize,
      range.length / pageSize,
    );
  }
  return missing;
}

/**
 * RECV_BITMAP: the answer telling a recovering source which pages of a
 * block arrived.
 *
 * @param memory The guest's RAM.
 * @param block The block's idstr.
 * @returns The return-path message.
 */
export function receivedBitmapMessage(
  memory: GuestMemory,
  block: string,
): ReturnPathMessage {
  const { index } = memory.block(block);
  return {
    type: "RECV_BITMAP",
    block,
    bitmap: memory.receivedPages(index).toLittleEndian(),
  };
}

/** Options for {@linkcode DestinationPostcopy}. */
export interface DestinationPostcopyOptions {
  /** The destination's status, moved at LISTEN and RESUME. */
  state: MigrationState;
  /** Time source for the socket polls. */
  clock: Clock;
  /** Whether the source opens a postcopy-preempt connection. */
  preempt: boolean;
  /** The connection page requests go out on (undefined while paused). */
  connection(): IncomingConnection | undefined;
  /** Places a page that came on the preempt connection (urgent). */
  place(record: RamPageCarrier, urgent: true): void;
}

/**
 * The destination once postcopy started: it asks for the pages the guest
 * touches before they arrived, and places each page only once.
 */
export class DestinationPostcopy {
  readonly #memory: GuestMemory;
  readonly #options: DestinationPostcopyOptions;
  #requests = 0;
  #lastIoTurn = 0;
  /** Requested pages (block index, page pairs) not yet seen placed. */
  #urgent: number[] = [];
  #preemptLoad: Promise<void> | undefined;
  #placer: PostcopyPlacer | undefined;

  /**
   * Constructs a new instance.
   *
   * @param memory The guest's RAM.
   * @param options The status, the clock, the connections.
   */
  constructor(memory: GuestMemory, options: DestinationPostcopyOptions) {
    this.#memory = memory;
    this.#options = options;
  }

  /** Page requests sent (QEMU's `postcopy-requests`). */
  get requests(): number {
    return this.#requests;
  }

  /**
   * POSTCOPY_LISTEN: moves to `postcopy-active`; from here on the pages
   * that did not arrive (and the discarded ones) are missing.
   *
   * @param discarded The pages discarded before, one bitmap per block.
   * @param accept Accepts the postcopy-preempt connection.
   */
  listen(
    discarded: DirtyBitmap[] | undefined,
    accept: (() => Promise<Transport>) | undefined,
  ): void {
    this.#options.state.moveTo("postcopy-active");
    this.#memory.startPostcopy(
      discarded ?? noPages(this.#memory),
      (blockIndex, page) => this.requestPage(blockIndex, page),
    );
    if (PostcopyPlacer.canPlace(this.#memory)) {
      this.#placer = new PostcopyPlacer(this.#memory);
    }
    if (this.#options.preempt && accept) this.#acceptPreempt(accept);
  }

  /**
   * POSTCOPY_RESUME (in `postcopy-recover`): back to `postcopy-active`,
   * RESUME_ACK, and the pages the guest waits for are requested again.
   *
   * @param accept Accepts a new postcopy-preempt connection.
   * @returns When RESUME_ACK was sent.
   */
  async resume(accept: (() => Promise<Transport>) | undefined): Promise<void> {
    this.#options.state.moveTo("postcopy-active");
    await this.#reply({ type: "RESUME_ACK", value: 1 });
    for (const [blockIndex, page] of this.#memory.pendingFaults()) {
      this.requestPage(blockIndex, page);
    }
    if (this.#options.preempt && accept) this.#acceptPreempt(accept);
  }

  /**
   * Asks the source for a page the guest waits for (dropped while the
   * return path is gone: a recovery requests it again).
   *
   * @param blockIndex The block's index.
   * @param page The page.
   */
  requestPage(blockIndex: number, page: number): void {
    const connection = this.#options.connection();
    if (connection === undefined || !connection.returnPath) return;
    const pageSize = this.#memory.pageSize;
    this.#requests++;
    if (
      this.#options.preempt && this.#urgent.length < 2 * MAX_URGENT_PAGES
    ) {
      this.#urgent.push(blockIndex, page);
    }
    const message: ReturnPathMessage =
      connection.lastRequestedBlock === blockIndex
        ? { type: "REQ_PAGES", start: page * pageSize, length: pageSize }
        : {
          type: "REQ_PAGES_ID",
          start: page * pageSize,
          length: pageSize,
          block: this.#memory.blocks[blockIndex]!.idstr,
        };
    connection.lastRequestedBlock = blockIndex;
    connection.reply(message).catch(() => {});
  }

  /**
   * Places a page that is still missing: a background page (main
   * connection) through the worker when there is one, a requested page
   * (preempt connection, or any page the guest waits for) at once. A page
   * already on its way through the worker is not placed twice: the guest
   * waits for the worker's copy. (The decoder checked the offset against
   * the block.)
   *
   * @param record The page.
   * @param urgent Whether it came on the preempt connection.
   * @returns Whether it was placed or handed to the worker (false: it
   *   arrived before).
   * @throws {MigrationProtocolError} For an XBZRLE record.
   */
  place(record: RamPageCarrier, urgent = false): boolean {
    if (record.type === "ram-xbzrle") {
      throw new MigrationProtocolError(
        "Cannot load an XBZRLE record in postcopy",
      );
    }
    const memory = this.#memory;
    const block = memory.block(record.block);
    const page = record.offset / memory.pageSize;
    if (!memory.isMissing(block.index, page)) return false;
    const placer = this.#placer;
    if (placer !== undefined) {
      if (placer.has(block.index, page)) return false;
      if (
        !urgent && !memory.isWaitedFor(block.index, page) &&
        (record.type === "ram-page" ||
          (record.type === "ram-zero" && record.fill === 0))
      ) {
        placer.submit(
          block.index,
          page,
          record.type === "ram-page" ? record.data : undefined,
        );
        return true;
      }
    }
    applyRamRecord(record, memory);
    memory.markReceived(block.index, page);
    return true;
  }

  /**
   * Before a background page: waits while the placer's worker has no room
   * (undefined when it has).
   *
   * @returns Undefined, or a promise that resolves once there is room.
   * @throws {Error} The placer's error, if its worker failed.
   */
  roomForPage(): Promise<void> | undefined {
    return this.#placer?.room();
  }

  /** Hands the background pages gathered so far to the placer's worker. */
  flush(): void {
    this.#placer?.flush();
  }

  /** Stops the placer's worker, if any. */
  close(): void {
    this.#placer?.close();
  }

  /**
   * Whether the loader should stop for a turn now (then it calls
   * {@linkcode DestinationPostcopy.takeTurn}): with preempt, reads from a
   * ready main connection never wait, so the preempt connection would be
   * read only when the main one runs dry. While a requested page is out,
   * after every record; otherwise every half millisecond. (Without
   * preempt the requested page comes on the main connection: stopping
   * would only slow it down.)
   *
   * @returns Whether to take a turn.
   */
  ioTurnDue(): boolean {
    if (!this.#options.preempt) return false;
    if (this.#urgent.length > 0) return true;
    const now = this.#options.clock.now();
    if (now - this.#lastIoTurn < IO_TURN_MS) return false;
    this.#lastIoTurn = now;
    return true;
  }

  /**
   * One turn of the loader (with preempt): while requested pages are out,
   * holds the main connection until they are placed, for at most a few
   * milliseconds (every background page taken meanwhile costs the CPU the
   * fault's path needs: on a machine with few cores that wait is what
   * keeps a fault short); otherwise lets the runtime poll its sockets once.
   *
   * @returns When the turn is over.
   */
  async takeTurn(): Promise<void> {
    this.#placer?.flush();
    const memory = this.#memory;
    const urgent = this.#urgent;
    const waits: Promise<void>[] = [];
    let kept = 0;
    for (let i = 0; i < urgent.length; i += 2) {
      const blockIndex = urgent[i]!;
      const page = urgent[i + 1]!;
      if (memory.isMissing(blockIndex, page)) {
        urgent[kept++] = blockIndex;
        urgent[kept++] = page;
        waits.push(memory.waitForPage(blockIndex, page));
      }
    }
    urgent.length = kept;
    if (kept === 0) return await yieldToIo();
    const timeout = new AbortController();
    const late = this.#options.clock.sleep(URGENT_WAIT_MS, timeout.signal)
      .then(() => true, () => false);
    const timedOut = await Promise.race([
      Promise.all(waits).then(() => false),
      late,
    ]);
    timeout.abort();
    // Pages that come some other way (or a preempt connection that broke)
    // stop holding the background after one wait.
    if (timedOut) urgent.length = 0;
  }

  /**
   * At the end of the stream: waits for the preempt connection, checks
   * that every page arrived, and leaves postcopy.
   *
   * @returns When the RAM is complete.
   * @throws {MigrationProtocolError} If pages never arrived.
   */
  async finish(): Promise<void> {
    await this.#preemptLoad?.catch(() => {});
    await this.#placer?.drain();
    this.#placer?.close();
    const missing = this.#memory.missingPages;
    if (missing > 0) {
      throw new MigrationProtocolError(
        `Cannot complete the incoming migration: ${missing} pages never arrived`,
      );
    }
    this.#memory.finishPostcopy();
  }

  #reply(message: ReturnPathMessage): Promise<void> {
    const connection = this.#options.connection();
    if (connection === undefined) return Promise.reject(noReturnPath(message));
    return connection.reply(message);
  }

  /** Loads the pages of a postcopy-preempt connection as they come. */
  #acceptPreempt(accept: () => Promise<Transport>): void {
    this.#preemptLoad = (async () => {
      const transport = await accept();
      const memory = this.#memory;
      const decoder = new MigrationDecoderStream({
        kind: "postcopy-preempt",
        blocks: memory.blocks.map((b) => ({
          idstr: b.idstr,
          usedLength: b.bytes.byteLength,
        })),
        pageSize: memory.pageSize,
      });
      try {
        for await (const batch of transport.readable.pipeThrough(decoder)) {
          for (const record of batch) {
            if (
              record.type === "ram-zero" || record.type === "ram-page" ||
              record.type === "ram-xbzrle" || record.type === "ram-compressed"
            ) {
              this.#options.place(record, true);
            }
          }
        }
      } finally {
        await transport.close().catch(() => {});
      }
    })();
    this.#preemptLoad.catch(() => {
      // A broken preempt channel pauses postcopy like a broken main one.
      void this.#options.connection()?.close();
    });
  }
}

/**
 * PACKAGED: the records of the package. The guest's device section is
 * walked with the guest's own state layout when it has one; otherwise it
 * stays in an opaque tail (see {@linkcode ownDeviceState}).
 *
 * @param guest The guest the package is for.
 * @param data The package's bytes.
 * @returns The records.
 */
export function unpackPackage(
  guest: MigratableGuest,
  data: Uint8Array,
): Promise<MigrationRecord[]> {
  const layouts = guest.stateFields
    ? [guestDeviceDescription(
      new Uint8Array(guest.stateFields.reduce((sum, f) => sum + f.size, 0)),
      guest.stateFields,
    )]
    : [];
  return decodePostcopyPackage(data, {
    deviceLayouts: layouts,
    pageSize: guest.memory.pageSize,
  });
}

/**
 * The state bytes of livemig's own device section inside an opaque
 * package tail (`FULL header, state, footer, PING 3, RUN`), for guests
 * whose state has no fixed layout.
 *
 * @param tail The tail's bytes.
 * @returns A copy of the state bytes, or undefined when the tail holds
 *   some other device.
 */
export function ownDeviceState(tail: Uint8Array): Uint8Array | undefined {
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

/** One empty page bitmap per block. */
function noPages(memory: GuestMemory): DirtyBitmap[] {
  return memory.blocks.map((b) => new DirtyBitmap(b.pageCount));
}
