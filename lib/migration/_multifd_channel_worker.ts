/**
 * The worker that decodes one multifd channel on the destination (QEMU
 * 7.2's per-channel receiving thread, `multifd_recv_thread`): it gets the
 * channel's bytes from the main thread (socket chunks, transferred, not
 * copied), parses the packets, decompresses them with the channel's own
 * zlib/zstd session, and writes the pages straight into guest RAM when the
 * RAM is shared (a `SharedArrayBuffer`); otherwise it hands the decoded
 * pages back for the main thread to place. Private to the destination;
 * _multifd_channel.ts is the main thread's side.
 *
 * ```
 * main → worker   start (settings), blocks (the shared RAM), data (a
 *                 chunk, transferred), ring (the shared memory a socket is
 *                 read into) and ring-data (where a read landed), end,
 *                 release (after the round's RAM EOS),
 *                 placed (pages handed back were placed)
 * worker → main   ready (loaded), initial (channel id), consumed (a chunk
 *                 was read),
 *                 released (ring bytes it is done with),
 *                 packet (byte counts, pages placed or handed back, SYNC),
 *                 ended (clean end between packets), error
 * ```
 *
 * After a SYNC packet the worker reads nothing more until `release`: a
 * channel never runs ahead of the main stream's RAM EOS, as in QEMU.
 *
 * @module
 */

import {
  MigrationProtocolError,
  UnexpectedEndOfStreamError,
} from "../errors.ts";
import { ByteReader } from "../streams/byte_reader.ts";
import {
  MULTIFD_FLAG,
  type MultifdCompression,
} from "../wire/multifd_flags.ts";
import {
  decodeMultifdInitialPacket,
  MULTIFD_INITIAL_PACKET_SIZE,
} from "../wire/multifd_initial_packet.ts";
import {
  decodeMultifdPacketHeader,
  multifdPacketDataLength,
  type MultifdPacketHeader,
  multifdPacketHeaderSize,
} from "../wire/multifd_packet.ts";
import { MultifdPageDecompressor } from "../wire/multifd_page_decompressor.ts";
import { serializeError, type WorkerErrorData } from "./_worker_error.ts";

/** A RAM block the worker may write: a view over a `SharedArrayBuffer`. */
export interface SharedRamBlock {
  /** The block idstr. */
  idstr: string;
  /** The block's memory. */
  bytes: Uint8Array;
}

/** What the main thread posts to a channel worker. */
export type ToChannelWorker =
  | { type: "start"; pageSize: number; compression: MultifdCompression }
  | { type: "data"; bytes: Uint8Array }
  | { type: "ring"; ring: Uint8Array }
  | { type: "ring-data"; start: number; length: number }
  | { type: "end" }
  | { type: "blocks"; blocks: SharedRamBlock[] }
  | { type: "release" }
  | { type: "placed" };

/** Pages a worker hands back (RAM not shared): the packet's pages. */
export interface ChannelPages {
  /** The block idstr. */
  block: string;
  /** Each page's byte offset in the block. */
  offsets: readonly number[];
  /** The pages, one after the other (a buffer of its own). */
  data: Uint8Array;
}

/** One packet's outcome, as the worker posts it. */
export interface ChannelPacketReport {
  type: "packet";
  /** Channel bytes of the packet (header and data as sent). */
  bytes: number;
  /** What QEMU counts as `multifd-bytes` (header, uncompressed pages). */
  multifdBytes: number;
  /** Pages the worker placed in shared RAM. */
  placed: number;
  /** Pages handed back instead; the worker waits for `placed`. */
  pages?: ChannelPages;
  /** Whether the packet carries the SYNC flag. */
  sync: boolean;
}

/** What a channel worker posts to the main thread. */
export type FromChannelWorker =
  | { type: "ready" }
  | { type: "initial"; channelId: number }
  | { type: "consumed"; bytes: number }
  | { type: "released"; bytes: number }
  | ChannelPacketReport
  | { type: "ended" }
  | { type: "error"; error: WorkerErrorData };

/** The worker's side of the message channel. */
export interface ChannelWorkerScope {
  postMessage(message: FromChannelWorker, transfer?: Transferable[]): void;
  addEventListener(
    type: "message",
    listener: (event: MessageEvent<ToChannelWorker>) => void,
  ): void;
}

/** Keeps what the main thread sent until the decoder wants it. */
class Inbox {
  readonly #chunks: { bytes: Uint8Array; ring: boolean }[] = [];
  #ring: Uint8Array | undefined;
  #ended = false;
  #wake: (() => void) | undefined;
  readonly #early = new Set<string>();
  readonly #waits = new Map<string, () => void>();
  blocks: Map<string, Uint8Array> | undefined;

  deliver(message: ToChannelWorker): void {
    switch (message.type) {
      case "data":
        this.#chunks.push({ bytes: message.bytes, ring: false });
        return this.#wake?.();
      case "ring":
        this.#ring = message.ring;
        return;
      case "ring-data": {
        const { start, length } = message;
        const bytes = this.#ring!.subarray(start, start + length);
        this.#chunks.push({ bytes, ring: true });
        return this.#wake?.();
      }
      case "end":
        this.#ended = true;
        return this.#wake?.();
      case "blocks":
        this.blocks = new Map(message.blocks.map((b) => [b.idstr, b.bytes]));
        return;
      case "release":
      case "placed": {
        const wait = this.#waits.get(message.type);
        this.#waits.delete(message.type);
        if (wait === undefined) this.#early.add(message.type);
        else wait();
        return;
      }
    }
  }

  /** The next chunk, or undefined once the channel ended. */
  async next(): Promise<{ bytes: Uint8Array; ring: boolean } | undefined> {
    while (this.#chunks.length === 0 && !this.#ended) {
      await new Promise<void>((resolve) => this.#wake = resolve);
      this.#wake = undefined;
    }
    return this.#chunks.shift();
  }

  /** Resolves once the main thread sent `type` (or had sent it). */
  expect(type: "release" | "placed"): Promise<void> {
    if (this.#early.delete(type)) return Promise.resolve();
    return new Promise((resolve) => this.#waits.set(type, resolve));
  }
}

/**
 * Runs a channel worker on `scope` (the worker's global scope): waits for
 * `start`, then decodes until the channel ends or fails.
 *
 * @param scope Where messages come from and go to.
 */
export function runChannelWorker(scope: ChannelWorkerScope): void {
  const inbox = new Inbox();
  let started = false;
  scope.addEventListener("message", (event) => {
    const message = event.data;
    if (message.type !== "start") return inbox.deliver(message);
    if (started) return;
    started = true;
    const decoder = new ChannelDecoder(scope, inbox, message);
    decoder.run().then(
      () => scope.postMessage({ type: "ended" }),
      (error) =>
        scope.postMessage({ type: "error", error: serializeError(error) }),
    );
  });
}

/** Decodes one channel's packets and places or hands back their pages. */
class ChannelDecoder {
  readonly #scope: ChannelWorkerScope;
  readonly #inbox: Inbox;
  readonly #pageSize: number;
  readonly #compression: MultifdCompression;
  readonly #reader: ByteReader;
  /** Ring chunks read into the reader: their end offset and size. */
  readonly #held: { end: number; bytes: number }[] = [];
  #pulled = 0;
  #id = -1;

  constructor(
    scope: ChannelWorkerScope,
    inbox: Inbox,
    settings: { pageSize: number; compression: MultifdCompression },
  ) {
    this.#scope = scope;
    this.#inbox = inbox;
    this.#pageSize = settings.pageSize;
    this.#compression = settings.compression;
    const readable = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        // Whatever was used up goes back now: the main thread may need that
        // room to read what this pull waits for.
        this.#giveBack();
        const chunk = await inbox.next();
        if (chunk === undefined) return controller.close();
        const { bytes, ring } = chunk;
        const size = bytes.byteLength;
        this.#pulled += size;
        controller.enqueue(bytes);
        if (ring) this.#held.push({ end: this.#pulled, bytes: size });
        else scope.postMessage({ type: "consumed", bytes: size });
      },
    }, { highWaterMark: 0 });
    this.#reader = new ByteReader(readable);
  }

  async run(): Promise<void> {
    const reader = this.#reader;
    const initial = decodeMultifdInitialPacket(
      await reader.readExact(
        MULTIFD_INITIAL_PACKET_SIZE,
        "a multifd initial packet",
      ),
      0,
    );
    this.#id = initial.channelId;
    this.#scope.postMessage({ type: "initial", channelId: this.#id });
    const decompressor = new MultifdPageDecompressor(this.#compression, {
      pageSize: this.#pageSize,
    });
    try {
      while (await this.#packet(decompressor));
    } finally {
      decompressor.close();
    }
  }

  /** Reads, places and reports one packet; false at the channel's end. */
  async #packet(decompressor: MultifdPageDecompressor): Promise<boolean> {
    const reader = this.#reader;
    const pageSize = this.#pageSize;
    const headerSize = multifdPacketHeaderSize(pageSize);
    const offset = reader.offset;
    const bytes = await reader.readExactOrEnd(
      headerSize,
      "a multifd packet header",
    );
    if (bytes === undefined) return false;
    const header = decodeMultifdPacketHeader(bytes, {
      pageSize,
      compression: this.#compression,
      offset,
    });
    const length = multifdPacketDataLength(header, pageSize);
    const count = header.offsets.length;
    const report: ChannelPacketReport = {
      type: "packet",
      bytes: headerSize + length,
      multifdBytes: headerSize + count * pageSize,
      placed: 0,
      sync: (header.flags & MULTIFD_FLAG.SYNC) !== 0,
    };
    const transfer: Transferable[] = [];
    if (count > 0) {
      const target = this.#target(header);
      if (target !== undefined && this.#compression === "none") {
        await this.#copyIntoPlace(header, target, length);
        report.placed = count;
      } else {
        const dataOffset = reader.offset;
        const data = await reader.readExact(length, "multifd packet data");
        const pages = await decompressor.decompress(data, count, {
          offset: dataOffset,
        });
        if (target !== undefined) {
          for (let i = 0; i < count; i++) {
            const at = header.offsets[i]!;
            target.set(pages.subarray(i * pageSize, (i + 1) * pageSize), at);
          }
          report.placed = count;
        } else {
          const own = ownBuffer(pages);
          report.pages = {
            block: header.ramBlock,
            offsets: header.offsets,
            data: own,
          };
          transfer.push(own.buffer);
        }
      }
    }
    this.#scope.postMessage(report, transfer);
    this.#giveBack();
    if (report.pages !== undefined) await this.#inbox.expect("placed");
    if (report.sync) await this.#inbox.expect("release");
    return true;
  }

  /** Gives the ring back up to the last chunk whose bytes were all used. */
  #giveBack(): void {
    const held = this.#held;
    let bytes = 0;
    let count = 0;
    while (count < held.length && held[count]!.end <= this.#reader.offset) {
      bytes += held[count++]!.bytes;
    }
    if (count === 0) return;
    held.splice(0, count);
    this.#scope.postMessage({ type: "released", bytes });
  }

  /**
   * The block the packet's pages go to in shared RAM (undefined: hand them
   * back), each offset checked as the main thread's loader checks it.
   */
  #target(header: MultifdPacketHeader): Uint8Array | undefined {
    const blocks = this.#inbox.blocks;
    if (blocks === undefined) return undefined;
    const bytes = blocks.get(header.ramBlock);
    const fail = (message: string) =>
      new MigrationProtocolError(
        `Cannot place a page of multifd channel ${this.#id}: ${message}`,
        { cause: new RangeError(message) },
      );
    if (bytes === undefined) {
      throw fail(`Cannot find RAM block "${header.ramBlock}"`);
    }
    for (const offset of header.offsets) {
      if (offset < 0 || offset + this.#pageSize > bytes.byteLength) {
        throw fail(
          `Cannot access offset ${offset} of RAM block "${header.ramBlock}": the block is ${bytes.byteLength} bytes`,
        );
      }
    }
    return bytes;
  }

  /**
   * Copies `length` bytes of uncompressed pages from the chunks as they
   * arrived straight into their pages: no packet-sized buffer in between.
   */
  async #copyIntoPlace(
    header: MultifdPacketHeader,
    target: Uint8Array,
    length: number,
  ): Promise<void> {
    const reader = this.#reader;
    const pageSize = this.#pageSize;
    const start = reader.offset;
    let done = 0;
    while (done < length) {
      const piece = await reader.readChunk(length - done);
      if (piece === undefined) {
        throw new UnexpectedEndOfStreamError(length, {
          offset: start,
          receivedBytes: done,
          what: "multifd packet data",
        });
      }
      let used = 0;
      while (used < piece.byteLength) {
        const page = Math.floor(done / pageSize);
        const inPage = done % pageSize;
        const size = Math.min(piece.byteLength - used, pageSize - inPage);
        target.set(
          piece.subarray(used, used + size),
          header.offsets[page]! + inPage,
        );
        used += size;
        done += size;
      }
    }
  }
}

/** `bytes` as the whole of a buffer of its own, to transfer. */
function ownBuffer(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const whole = bytes.buffer instanceof ArrayBuffer &&
    bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
  return whole ? bytes as Uint8Array<ArrayBuffer> : bytes.slice();
}

if ("WorkerGlobalScope" in globalThis) {
  const scope = globalThis as unknown as ChannelWorkerScope;
  runChannelWorker(scope);
  scope.postMessage({ type: "ready" });
}
