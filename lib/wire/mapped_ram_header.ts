/**
 * The per-block header of a mapped-ram file (QEMU 9.0+, capability
 * `mapped-ram`; QEMU's `MappedRamHeader` in `migration/ram.c`), which
 * follows each block's entry in the block list (ram_block_list.ts):
 *
 * ```
 * +0   be32 version         1 (MAPPED_RAM_HDR_VERSION)
 * +4   be64 page_size       target page size
 * +12  be64 bitmap_offset   absolute file offset of the block's bitmap
 * +20  be64 pages_offset    absolute file offset of the block's page 0
 * ```
 *
 * Big-endian and packed: 28 bytes. Where the bitmap and pages go is
 * mapped_ram_layout.ts's business; whether the values make sense for a
 * block is ram_block_list.ts's.
 *
 * @module
 */

import { StreamFormatError, UnexpectedEndOfStreamError } from "../errors.ts";
import type { MappedRamBlockHeader } from "../ram/ram_record.ts";

/**
 * The mapped-ram header version QEMU writes and the highest one it reads.
 *
 * @example Usage
 * ```ts
 * import { encodeMappedRamHeader, MAPPED_RAM_HDR_VERSION } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeMappedRamHeader({ version: MAPPED_RAM_HDR_VERSION, pageSize: 4096, bitmapOffset: 0, pagesOffset: 0 });
 * assert.equal(bytes[3], 1);
 * ```
 */
export const MAPPED_RAM_HDR_VERSION = 1;

/**
 * Size of the per-block mapped-ram header in bytes.
 *
 * @example Usage
 * ```ts
 * import { encodeMappedRamHeader, MAPPED_RAM_HEADER_SIZE } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeMappedRamHeader({ version: 1, pageSize: 4096, bitmapOffset: 0, pagesOffset: 0 });
 * assert.equal(bytes.byteLength, MAPPED_RAM_HEADER_SIZE);
 * ```
 */
export const MAPPED_RAM_HEADER_SIZE = 28;

/**
 * Encodes a mapped-ram block header into its 28 bytes.
 *
 * @example Usage
 * ```ts
 * import { decodeMappedRamHeader, encodeMappedRamHeader } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const header = { version: 1, pageSize: 4096, bitmapOffset: 0x6c, pagesOffset: 0x100000 };
 * const bytes = encodeMappedRamHeader(header);
 * assert.deepEqual(bytes.subarray(0, 12), new Uint8Array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x10, 0]));
 * assert.deepEqual(decodeMappedRamHeader(bytes), header);
 * ```
 *
 * @param header The header.
 * @returns A new 28-byte array.
 * @throws {RangeError} If a field does not fit its width.
 */
export function encodeMappedRamHeader(
  header: MappedRamBlockHeader,
): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(MAPPED_RAM_HEADER_SIZE);
  const view = new DataView(bytes.buffer);
  if (
    !Number.isInteger(header.version) || header.version < 0 ||
    header.version > 0xffff_ffff
  ) {
    throw new RangeError(
      `Cannot encode mapped-ram header as version must be a 32-bit unsigned integer: received ${header.version}`,
    );
  }
  view.setUint32(0, header.version);
  for (
    const [at, name] of [
      [4, "pageSize"],
      [12, "bitmapOffset"],
      [20, "pagesOffset"],
    ] as const
  ) {
    const value = header[name];
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(
        `Cannot encode mapped-ram header as ${name} must be a non-negative safe integer: received ${value}`,
      );
    }
    view.setBigUint64(at, BigInt(value));
  }
  return bytes;
}

/**
 * Decodes a 28-byte mapped-ram block header. Values are taken as they are;
 * the block-list decoder judges them against the block.
 *
 * @example Usage
 * ```ts
 * import { decodeMappedRamHeader, StreamFormatError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = new Uint8Array(28);
 * bytes[3] = 1;
 * bytes[12] = 0xff; // a bitmap offset far beyond 2^53
 * assert.throws(
 *   () => decodeMappedRamHeader(bytes, 0x50),
 *   (error) => error instanceof StreamFormatError && error.offset === 0x50 + 12,
 * );
 * ```
 *
 * @param bytes At least 28 bytes; the header is the first 28.
 * @param offset File offset of `bytes[0]`, for error messages.
 * @returns The header.
 * @throws {UnexpectedEndOfStreamError} If fewer than 28 bytes are given.
 * @throws {StreamFormatError} If a 64-bit field exceeds 2^53.
 */
export function decodeMappedRamHeader(
  bytes: Uint8Array,
  offset: number = 0,
): MappedRamBlockHeader {
  if (bytes.byteLength < MAPPED_RAM_HEADER_SIZE) {
    throw new UnexpectedEndOfStreamError(MAPPED_RAM_HEADER_SIZE, {
      offset,
      receivedBytes: bytes.byteLength,
      what: "a mapped-ram header",
    });
  }
  const field = (at: number, name: string): number => {
    const high = be32(bytes, at);
    const low = be32(bytes, at + 4);
    if (high >= 0x20_0000) {
      throw new StreamFormatError(
        `Cannot decode mapped-ram header at offset ${offset}: ${name} 0x${
          hex64(high, low)
        } exceeds 2^53`,
        { offset: offset + at },
      );
    }
    return high * 0x1_0000_0000 + low;
  };
  return {
    version: be32(bytes, 0),
    pageSize: field(4, "page size"),
    bitmapOffset: field(12, "bitmap offset"),
    pagesOffset: field(20, "pages offset"),
  };
}

function be32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) |
    bytes[at + 3]!) >>> 0;
}

function hex64(high: number, low: number): string {
  return `${high.toString(16)}${low.toString(16).padStart(8, "0")}`;
}
