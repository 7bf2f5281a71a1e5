/**
 * A multifd page packet as QEMU 7.2 writes it on a multifd channel after
 * the initial packet (`MultiFDPacket_t`, `migration/multifd.h`): a fixed
 * header, then the data of the packet's pages. Big-endian and packed. With
 * P = 512 KiB / page size offset slots (128 for 4 KiB pages) the header is
 * 320 + 8 × P bytes (1,344 for 4 KiB pages):
 *
 * ```
 * +0    be32      magic             0x11223344 (MULTIFD_MAGIC)
 * +4    be32      version           1
 * +8    be32      flags             bit 0 SYNC; bits 1-3 compression (0 none, 1 zlib, 2 zstd)
 * +12   be32      pages_alloc       P (a 7.2 receiver refuses more)
 * +16   be32      normal_pages      n <= pages_alloc: pages in this packet
 * +20   be32      next_packet_size  bytes of data that follow (compressed methods)
 * +24   be64      packet_num        one counter over all channels of a migration
 * +32   4 × be64  reserved          zero
 * +64   256 bytes ramblock          block idstr, NUL-padded
 * +320  P × be64  offset            byte offsets in the block; the first n are this packet's
 * then  data      none: n pages in offset order; zlib/zstd: next_packet_size bytes
 * ```
 *
 * QEMU reuses one packet buffer per channel and writes only what a packet
 * changes, so some fields hold leftovers that mean nothing:
 *
 * - a packet without pages (n = 0, a SYNC-only packet) keeps the block name
 *   and `next_packet_size` of the channel's previous packet with pages, and
 *   its compression bits are 0 whatever the method;
 * - offset slots past n keep offsets of earlier packets.
 *
 * A receiver ignores those when n = 0, and for `none` reads n pages
 * whatever `next_packet_size` says. `unusedOffsetSlots` keeps the leftover
 * slots, so decoding QEMU's bytes and encoding them again gives them back.
 *
 * @module
 */

import { StreamFormatError, UnexpectedEndOfStreamError } from "../errors.ts";
import {
  MULTIFD_FLAG,
  type MultifdCompression,
  multifdCompressionOf,
} from "./multifd_flags.ts";
import { MULTIFD_MAGIC, MULTIFD_VERSION } from "./multifd_initial_packet.ts";

/**
 * The data bytes one packet may carry before compression (QEMU
 * `MULTIFD_PACKET_SIZE`): it fixes the number of offset slots, 512 KiB /
 * page size.
 *
 * @example Usage
 * ```ts
 * import { MULTIFD_PACKET_SIZE } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(MULTIFD_PACKET_SIZE / 4096, 128);
 * ```
 */
export const MULTIFD_PACKET_SIZE = 512 * 1024;

/**
 * The most compressed data a QEMU 7.2 receiver takes for one packet: its
 * receive buffer is twice {@linkcode MULTIFD_PACKET_SIZE}.
 *
 * @example Usage
 * ```ts
 * import { MULTIFD_MAX_COMPRESSED_SIZE, MULTIFD_PACKET_SIZE } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(MULTIFD_MAX_COMPRESSED_SIZE, 2 * MULTIFD_PACKET_SIZE);
 * ```
 */
export const MULTIFD_MAX_COMPRESSED_SIZE = 2 * MULTIFD_PACKET_SIZE;

/**
 * How many offset slots a packet header has for `pageSize`: 512 KiB /
 * page size.
 *
 * @example Usage
 * ```ts
 * import { multifdPageSlots } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(multifdPageSlots(4096), 128);
 * assert.equal(multifdPageSlots(65536), 8);
 * ```
 *
 * @param pageSize The target page size: a power of two from 512 to 512 KiB.
 * @returns The slot count.
 * @throws {RangeError} If the page size is not such a power of two.
 */
export function multifdPageSlots(pageSize: number): number {
  if (
    !Number.isInteger(pageSize) || pageSize < 512 ||
    pageSize > MULTIFD_PACKET_SIZE || (pageSize & (pageSize - 1)) !== 0
  ) {
    throw new RangeError(
      `Cannot size multifd packets as pageSize must be a power of two from 512 to 524288: received ${pageSize}`,
    );
  }
  return MULTIFD_PACKET_SIZE / pageSize;
}

/**
 * Size in bytes of a multifd packet header for `pageSize`: 320 + 8 ×
 * slots. A QEMU 7.2 receiver always reads this many bytes, whatever the
 * packet's `pages_alloc`.
 *
 * @example Usage
 * ```ts
 * import { multifdPacketHeaderSize } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(multifdPacketHeaderSize(4096), 1344);
 * ```
 *
 * @param pageSize The target page size.
 * @returns The header size.
 * @throws {RangeError} If the page size is not a power of two from 512 to 512 KiB.
 */
export function multifdPacketHeaderSize(pageSize: number): number {
  return OFFSETS_AT + 8 * multifdPageSlots(pageSize);
}

const RAMBLOCK_AT = 64;
const RAMBLOCK_SIZE = 256;
const OFFSETS_AT = RAMBLOCK_AT + RAMBLOCK_SIZE;

/** The header of a multifd page packet: everything but the data. */
export interface MultifdPacketHeader {
  /** Discriminant. */
  type: "multifd-packet";
  /**
   * The flags word: {@linkcode MULTIFD_FLAG} bits; other bits are kept as
   * they came (QEMU 7.2 ignores them).
   */
  flags: number;
  /** `pages_alloc`: the sender's slot count (QEMU writes 512 KiB / page size). */
  pagesAlloc: number;
  /**
   * `next_packet_size`: bytes of compressed data for zlib and zstd, page
   * bytes for none; a leftover when the packet has no pages.
   */
  nextPacketSize: number;
  /** `packet_num`: a counter over all channels of the migration. */
  packetNum: bigint;
  /** The RAM block's idstr; a leftover when the packet has no pages. */
  ramBlock: string;
  /** Byte offsets of this packet's pages in the block (`normal_pages` of them). */
  offsets: readonly number[];
  /**
   * The raw bytes of the offset slots after this packet's, when any is not
   * zero: QEMU leaves earlier packets' offsets there. Absent means zeros.
   */
  unusedOffsetSlots?: Uint8Array;
}

/** A multifd page packet: its header and its data. */
export interface MultifdPacket extends MultifdPacketHeader {
  /**
   * The pages (none: `offsets.length` pages in offset order) or the
   * compressed bytes (zlib, zstd); empty for a packet without pages. May
   * alias the bytes it was decoded from.
   */
  data: Uint8Array;
}

/** Options for {@linkcode decodeMultifdPacketHeader} and the packet encoders. */
export interface MultifdPacketOptions {
  /**
   * The target page size; it fixes the header size.
   *
   * @default {4096}
   */
  pageSize?: number;
  /**
   * The compression method the receiver runs with (its
   * `multifd-compression`): when set, a packet with pages whose bits name
   * another method is refused, as QEMU 7.2 refuses it. Unset, the bits
   * decide.
   */
  compression?: MultifdCompression;
  /**
   * Stream offset of the packet's first byte, for error messages.
   *
   * @default {0}
   */
  offset?: number;
}

/**
 * How many data bytes follow a packet header: none for a packet without
 * pages, `offsets.length` × page size for `none`, `next_packet_size` for
 * zlib and zstd.
 *
 * @example Usage
 * ```ts
 * import { MULTIFD_FLAG, multifdPacketDataLength } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const header = { type: "multifd-packet", flags: MULTIFD_FLAG.NOCOMP, pagesAlloc: 128, nextPacketSize: 188416, packetNum: 3n, ramBlock: "pc.ram", offsets: [0, 4096] } as const;
 * assert.equal(multifdPacketDataLength({ ...header, offsets: [0, 4096] }), 8192);
 * assert.equal(multifdPacketDataLength({ ...header, offsets: [] }), 0); // next_packet_size is a leftover
 * assert.equal(multifdPacketDataLength({ ...header, flags: MULTIFD_FLAG.ZLIB, nextPacketSize: 91 }), 91);
 * ```
 *
 * @param header The packet header.
 * @param pageSize The target page size.
 * @returns The data length.
 * @throws {TypeError} If the packet has pages and its compression bits name no method QEMU 7.2 knows.
 */
export function multifdPacketDataLength(
  header: MultifdPacketHeader,
  pageSize: number = 4096,
): number {
  if (header.offsets.length === 0) return 0;
  const compression = multifdCompressionOf(header.flags);
  if (compression === undefined) {
    throw new TypeError(
      `Cannot size multifd packet data as compression bits 0x${
        (header.flags & MULTIFD_FLAG.COMPRESSION_MASK).toString(16)
      } name no method`,
    );
  }
  return compression === "none"
    ? header.offsets.length * pageSize
    : header.nextPacketSize;
}

/**
 * Encodes a packet header (without its data) into
 * {@linkcode multifdPacketHeaderSize} bytes.
 *
 * @example Usage
 * ```ts
 * import { encodeMultifdPacketHeader, MULTIFD_FLAG } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeMultifdPacketHeader({
 *   type: "multifd-packet", flags: MULTIFD_FLAG.SYNC, pagesAlloc: 128, nextPacketSize: 4096,
 *   packetNum: 7n, ramBlock: "pc.ram", offsets: [0x5000],
 * });
 * assert.equal(bytes.byteLength, 1344);
 * assert.deepEqual(bytes.subarray(8, 32), new Uint8Array([0, 0, 0, 1, 0, 0, 0, 128, 0, 0, 0, 1, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 7]));
 * assert.equal(new TextDecoder().decode(bytes.subarray(64, 70)), "pc.ram");
 * assert.equal(new DataView(bytes.buffer).getBigUint64(320), 0x5000n);
 * ```
 *
 * @param header The header.
 * @param options The page size.
 * @returns A new array.
 * @throws {RangeError} If a field does not fit, or there are more offsets than slots.
 */
export function encodeMultifdPacketHeader(
  header: MultifdPacketHeader,
  options: MultifdPacketOptions = {},
): Uint8Array<ArrayBuffer> {
  const slots = multifdPageSlots(options.pageSize ?? 4096);
  const fail = (what: string): never => {
    throw new RangeError(`Cannot encode multifd packet as ${what}`);
  };
  for (const name of ["flags", "pagesAlloc", "nextPacketSize"] as const) {
    const value = header[name];
    if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
      fail(`${name} must be a 32-bit unsigned integer: received ${value}`);
    }
  }
  if (header.packetNum < 0n || header.packetNum >= 1n << 64n) {
    fail(`packetNum must fit 64 bits: received ${header.packetNum}`);
  }
  const { offsets } = header;
  if (offsets.length > header.pagesAlloc || header.pagesAlloc > slots) {
    fail(
      `it must hold at most pagesAlloc offsets and pagesAlloc at most ${slots}: received ${offsets.length} offsets, pagesAlloc ${header.pagesAlloc}`,
    );
  }
  const name = new TextEncoder().encode(header.ramBlock);
  if (name.byteLength >= RAMBLOCK_SIZE) {
    fail(`ramBlock must be under 256 bytes: received ${name.byteLength}`);
  }
  const bytes = new Uint8Array(OFFSETS_AT + 8 * slots);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, MULTIFD_MAGIC);
  view.setUint32(4, MULTIFD_VERSION);
  view.setUint32(8, header.flags);
  view.setUint32(12, header.pagesAlloc);
  view.setUint32(16, offsets.length);
  view.setUint32(20, header.nextPacketSize);
  view.setBigUint64(24, header.packetNum);
  bytes.set(name, RAMBLOCK_AT);
  for (let i = 0; i < offsets.length; i++) {
    const offset = offsets[i]!;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      fail(`offsets must be non-negative safe integers: received ${offset}`);
    }
    view.setBigUint64(OFFSETS_AT + 8 * i, BigInt(offset));
  }
  const unused = header.unusedOffsetSlots;
  if (unused !== undefined) {
    const at = OFFSETS_AT + 8 * offsets.length;
    if (unused.byteLength !== bytes.byteLength - at) {
      fail(
        `unusedOffsetSlots must be ${
          bytes.byteLength - at
        } bytes for ${offsets.length} offsets: received ${unused.byteLength}`,
      );
    }
    bytes.set(unused, at);
  }
  return bytes;
}

/**
 * Encodes a whole packet: header, then data.
 *
 * @example Usage
 * ```ts
 * import { decodeMultifdPacketHeader, encodeMultifdPacket, MULTIFD_FLAG } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const page = new Uint8Array(4096).fill(0xab);
 * const bytes = encodeMultifdPacket({
 *   type: "multifd-packet", flags: MULTIFD_FLAG.NOCOMP, pagesAlloc: 128, nextPacketSize: 4096,
 *   packetNum: 0n, ramBlock: "pc.ram", offsets: [0x2000], data: page,
 * });
 * assert.equal(bytes.byteLength, 1344 + 4096);
 * assert.deepEqual(decodeMultifdPacketHeader(bytes).offsets, [0x2000]);
 * assert.equal(bytes[1344], 0xab);
 * ```
 *
 * @param packet The packet.
 * @param options The page size.
 * @returns A new array.
 * @throws {RangeError} If a header field does not fit, or the data length
 *   is not the one the header announces ({@linkcode multifdPacketDataLength}).
 * @throws {TypeError} If the packet has pages and unknown compression bits.
 */
export function encodeMultifdPacket(
  packet: MultifdPacket,
  options: MultifdPacketOptions = {},
): Uint8Array<ArrayBuffer> {
  const pageSize = options.pageSize ?? 4096;
  const header = encodeMultifdPacketHeader(packet, options);
  const length = multifdPacketDataLength(packet, pageSize);
  if (packet.data.byteLength !== length) {
    throw new RangeError(
      `Cannot encode multifd packet as its data must be ${length} bytes: received ${packet.data.byteLength}`,
    );
  }
  const bytes = new Uint8Array(header.byteLength + length);
  bytes.set(header);
  bytes.set(packet.data, header.byteLength);
  return bytes;
}

/**
 * Decodes a packet header with the checks of a QEMU 7.2 receiver: magic,
 * version, `pages_alloc` at most the slot count, `normal_pages` at most
 * `pages_alloc`, and for a packet with pages a known compression method
 * (the expected one, when `options.compression` is set) and at most
 * {@linkcode MULTIFD_MAX_COMPRESSED_SIZE} bytes of compressed data. Whether
 * the block exists and the offsets lie inside it is the destination's
 * business.
 *
 * @example Usage
 * ```ts
 * import { decodeMultifdPacketHeader, encodeMultifdPacketHeader, MULTIFD_FLAG } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const header = {
 *   type: "multifd-packet", flags: MULTIFD_FLAG.SYNC | MULTIFD_FLAG.ZLIB, pagesAlloc: 128,
 *   nextPacketSize: 89, packetNum: 12n, ramBlock: "pc.bios", offsets: [0, 4096],
 * } as const;
 * assert.deepEqual(decodeMultifdPacketHeader(encodeMultifdPacketHeader(header)), header);
 * ```
 *
 * @example A receiver that expects zstd refuses zlib data
 * ```ts
 * import { decodeMultifdPacketHeader, encodeMultifdPacketHeader, MULTIFD_FLAG, StreamFormatError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeMultifdPacketHeader({
 *   type: "multifd-packet", flags: MULTIFD_FLAG.ZLIB, pagesAlloc: 128,
 *   nextPacketSize: 89, packetNum: 12n, ramBlock: "pc.bios", offsets: [0],
 * });
 * assert.throws(
 *   () => decodeMultifdPacketHeader(bytes, { compression: "zstd", offset: 1000 }),
 *   (error) => error instanceof StreamFormatError && error.offset === 1008,
 * );
 * ```
 *
 * @param bytes At least {@linkcode multifdPacketHeaderSize} bytes; the header is the first ones.
 * @param options Page size, expected compression, stream offset.
 * @returns The header.
 * @throws {UnexpectedEndOfStreamError} If `bytes` is shorter than a header.
 * @throws {StreamFormatError} If a check fails; `offset` points at the field.
 */
export function decodeMultifdPacketHeader(
  bytes: Uint8Array,
  options: MultifdPacketOptions = {},
): MultifdPacketHeader {
  const { offset = 0 } = options;
  const slots = multifdPageSlots(options.pageSize ?? 4096);
  const size = OFFSETS_AT + 8 * slots;
  if (bytes.byteLength < size) {
    throw new UnexpectedEndOfStreamError(size, {
      offset,
      what: "a multifd packet header",
      receivedBytes: bytes.byteLength,
    });
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, size);
  const fail = (at: number, what: string): never => {
    throw new StreamFormatError(
      `Cannot decode multifd packet at offset ${offset}: ${what}`,
      { offset: offset + at },
    );
  };
  const magic = view.getUint32(0);
  if (magic !== MULTIFD_MAGIC) {
    fail(0, `magic 0x${magic.toString(16).padStart(8, "0")} is not 0x11223344`);
  }
  const version = view.getUint32(4);
  if (version !== MULTIFD_VERSION) {
    fail(4, `version ${version} is not ${MULTIFD_VERSION}`);
  }
  const flags = view.getUint32(8);
  const pagesAlloc = view.getUint32(12);
  if (pagesAlloc > slots) {
    fail(12, `pages_alloc ${pagesAlloc} is more than ${slots}`);
  }
  const normalPages = view.getUint32(16);
  if (normalPages > pagesAlloc) {
    fail(
      16,
      `normal_pages ${normalPages} is more than pages_alloc ${pagesAlloc}`,
    );
  }
  const nextPacketSize = view.getUint32(20);
  if (normalPages > 0) {
    checkCompression(flags, nextPacketSize, options.compression, fail);
  }
  const offsets: number[] = new Array(normalPages);
  for (let i = 0; i < normalPages; i++) {
    const value = view.getBigUint64(OFFSETS_AT + 8 * i);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      fail(
        OFFSETS_AT + 8 * i,
        `page offset 0x${value.toString(16)} is too large`,
      );
    }
    offsets[i] = Number(value);
  }
  const header: MultifdPacketHeader = {
    type: "multifd-packet",
    flags,
    pagesAlloc,
    nextPacketSize,
    packetNum: view.getBigUint64(24),
    ramBlock: decodeName(bytes.subarray(RAMBLOCK_AT, OFFSETS_AT)),
    offsets,
  };
  const unused = bytes.subarray(OFFSETS_AT + 8 * normalPages, size);
  if (unused.some((byte) => byte !== 0)) header.unusedOffsetSlots = unused;
  return header;
}

function checkCompression(
  flags: number,
  nextPacketSize: number,
  expected: MultifdCompression | undefined,
  fail: (at: number, what: string) => never,
): void {
  const bits = flags & MULTIFD_FLAG.COMPRESSION_MASK;
  const compression = multifdCompressionOf(flags);
  if (compression === undefined) {
    fail(8, `compression bits 0x${bits.toString(16)} name no method`);
  }
  if (expected !== undefined && compression !== expected) {
    fail(
      8,
      `its pages are ${compression}-compressed, the receiver expects ${expected}`,
    );
  }
  if (compression !== "none" && nextPacketSize > MULTIFD_MAX_COMPRESSED_SIZE) {
    fail(
      20,
      `next_packet_size ${nextPacketSize} is more than ${MULTIFD_MAX_COMPRESSED_SIZE}`,
    );
  }
}

/** The idstr up to its NUL; QEMU 7.2 cuts an unterminated one at 255 bytes. */
function decodeName(field: Uint8Array): string {
  let end = field.indexOf(0);
  if (end === -1) end = RAMBLOCK_SIZE - 1;
  return new TextDecoder().decode(field.subarray(0, end));
}
