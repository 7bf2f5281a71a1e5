/**
 * Decoding the bytes of one multifd channel (QEMU 7.2):
 *
 * ```
 * channel := initial-packet packet*              then the connection closes
 * packet  := header (320 + 8 × slots bytes) data
 * ```
 *
 * The layouts are in multifd_initial_packet.ts and multifd_packet.ts.
 *
 * @module
 */

import { ByteReader } from "../streams/byte_reader.ts";
import {
  decodeMultifdInitialPacket,
  MULTIFD_INITIAL_PACKET_SIZE,
  type MultifdInitialPacket,
} from "./multifd_initial_packet.ts";
import type { MultifdCompression } from "./multifd_flags.ts";
import {
  decodeMultifdPacketHeader,
  type MultifdPacket,
  multifdPacketDataLength,
  multifdPacketHeaderSize,
} from "./multifd_packet.ts";

/** What a multifd channel carries: one initial packet, then page packets. */
export type MultifdChannelRecord = MultifdInitialPacket | MultifdPacket;

/** Options for {@linkcode MultifdChannelDecoderStream}. */
export interface MultifdChannelDecoderStreamOptions {
  /**
   * The target page size; it fixes the packet header size.
   *
   * @default {4096}
   */
  pageSize?: number;
  /**
   * The compression method the receiver expects; packets with pages that
   * name another one are refused. Unset, each packet's bits decide.
   */
  compression?: MultifdCompression;
  /**
   * Stream offset of the first byte, for error messages.
   *
   * @default {0}
   */
  startOffset?: number;
}

/**
 * A stream stage that decodes the bytes of one multifd channel into its
 * initial packet and its page packets, with the checks of a QEMU 7.2
 * receiver (see {@linkcode decodeMultifdPacketHeader}). The stream may end
 * only between packets; a decoding error names the byte offset, errors the
 * readable side and cancels the writable side.
 *
 * Packet data may alias the chunks written in: copy it before the producer
 * reuses them.
 *
 * @example Usage
 * ```ts
 * import {
 *   encodeMultifdInitialPacket,
 *   encodeMultifdPacket,
 *   MULTIFD_FLAG,
 *   MultifdChannelDecoderStream,
 * } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const initial = encodeMultifdInitialPacket({ type: "multifd-initial", uuid: "00000000-0000-0000-0000-000000000000", channelId: 1 });
 * const sync = encodeMultifdPacket({
 *   type: "multifd-packet", flags: MULTIFD_FLAG.SYNC, pagesAlloc: 128, nextPacketSize: 0,
 *   packetNum: 1n, ramBlock: "", offsets: [], data: new Uint8Array(0),
 * });
 * const records = await Array.fromAsync(
 *   ReadableStream.from([initial, sync]).pipeThrough(new MultifdChannelDecoderStream()),
 * );
 * assert.deepEqual(records.map((r) => r.type), ["multifd-initial", "multifd-packet"]);
 * ```
 *
 * @example A channel cut inside a packet
 * ```ts
 * import { encodeMultifdInitialPacket, MultifdChannelDecoderStream, UnexpectedEndOfStreamError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const initial = encodeMultifdInitialPacket({ type: "multifd-initial", uuid: "00000000-0000-0000-0000-000000000000", channelId: 0 });
 * await assert.rejects(
 *   Array.fromAsync(ReadableStream.from([initial, new Uint8Array(100)]).pipeThrough(new MultifdChannelDecoderStream())),
 *   (error) => error instanceof UnexpectedEndOfStreamError && error.offset === 64,
 * );
 * ```
 */
export class MultifdChannelDecoderStream
  implements TransformStream<Uint8Array, MultifdChannelRecord> {
  readonly #writable: WritableStream<Uint8Array>;
  readonly #readable: ReadableStream<MultifdChannelRecord>;

  /**
   * Constructs a new instance.
   *
   * @param options Page size, expected compression, start offset.
   * @throws {RangeError} If the page size is not a power of two from 512 to 512 KiB.
   */
  constructor(options: MultifdChannelDecoderStreamOptions = {}) {
    const pageSize = options.pageSize ?? 4096;
    multifdPacketHeaderSize(pageSize); // checks the page size now
    const { readable, writable } = new TransformStream<
      Uint8Array,
      Uint8Array
    >();
    this.#writable = writable;
    const reader = new ByteReader(readable, options.startOffset ?? 0);
    this.#readable = ReadableStream.from(
      run(reader, { ...options, pageSize }),
    );
  }

  /** Channel bytes go in here. */
  get writable(): WritableStream<Uint8Array> {
    return this.#writable;
  }

  /** The initial packet, then page packets, come out here. */
  get readable(): ReadableStream<MultifdChannelRecord> {
    return this.#readable;
  }
}

async function* run(
  reader: ByteReader,
  options: MultifdChannelDecoderStreamOptions & { pageSize: number },
): AsyncGenerator<MultifdChannelRecord> {
  try {
    yield* decode(reader, options);
  } catch (error) {
    await reader.cancel(error).catch(() => {});
    throw error;
  }
}

async function* decode(
  reader: ByteReader,
  options: MultifdChannelDecoderStreamOptions & { pageSize: number },
): AsyncGenerator<MultifdChannelRecord> {
  const { pageSize } = options;
  const start = reader.offset;
  yield decodeMultifdInitialPacket(
    await reader.readExact(
      MULTIFD_INITIAL_PACKET_SIZE,
      "a multifd initial packet",
    ),
    start,
  );
  const headerSize = multifdPacketHeaderSize(pageSize);
  while (true) {
    const offset = reader.offset;
    const bytes = await reader.readExactOrEnd(
      headerSize,
      "a multifd packet header",
    );
    if (bytes === undefined) return;
    const header = decodeMultifdPacketHeader(bytes, { ...options, offset });
    if (header.unusedOffsetSlots !== undefined) {
      // A small copy, so that the record does not keep a large chunk alive.
      header.unusedOffsetSlots = header.unusedOffsetSlots.slice();
    }
    const length = multifdPacketDataLength(header, pageSize);
    const data = length === 0
      ? new Uint8Array(0)
      : await reader.readExact(length, "multifd packet data");
    yield { ...header, data };
  }
}
