/**
 * Offset math of QEMU's mapped-ram file layout (QEMU 9.0+, capability
 * `mapped-ram`; QEMU's `docs/devel/migration/mapped-ram.rst` describes it):
 * where each RAM block's header, bitmap and pages live in the file.
 *
 * In a mapped-ram file the RAM START section lists every block as usual and
 * then embeds, right after each block's entry, a fixed region holding the
 * block's written-pages bitmap and all of its pages. The stream jumps over
 * the region, so the next block's entry starts where the pages end:
 *
 * ```
 * block entry   u8 len, idstr, be64 used_length, [be64 gpa  with x-ignore-shared]
 * header        28 bytes, big-endian, packed:
 *                 +0   be32 version         1
 *                 +4   be64 page_size       target page size (4096 on x86)
 *                 +12  be64 bitmap_offset   absolute file offset = right after this header
 *                 +20  be64 pages_offset    round_up(bitmap_offset + bitmap_size, 1 MiB)
 * bitmap        bitmap_offset .. +bitmap_size   ceil(pages / 64) * 8 bytes
 * padding       zeros up to pages_offset
 * pages         page i at pages_offset + i * page_size, used_length bytes in all
 * next entry    at pages_offset + used_length (no alignment)
 * ```
 *
 * The bitmap is the writer's native array of 64-bit words written raw; on a
 * little-endian 64-bit host (the only layout produced here) bit `i` is bit
 * `i % 8` of byte `⌊i / 8⌋`. See {@linkcode MappedRamBitmap}.
 *
 * Offsets are absolute file positions, so they include any prefix before
 * the stream (QEMU's `file:PATH,offset=N`).
 *
 * @module
 */

import { StreamFormatError, UnexpectedEndOfStreamError } from "../errors.ts";
import type { MappedRamBlockHeader } from "../ram/ram_record.ts";

/** The header version QEMU writes and the highest one it reads. */
export const MAPPED_RAM_HDR_VERSION = 1;

/** Size of the per-block header in bytes. */
export const MAPPED_RAM_HEADER_SIZE = 28;

/**
 * Alignment of each block's pages region (1 MiB), chosen by QEMU so that
 * O_DIRECT works on common block sizes. Readers must not rely on it: only
 * target-page alignment is required.
 */
export const MAPPED_RAM_FILE_OFFSET_ALIGNMENT = 0x100000;

/** Largest read QEMU's loader issues for a run of pages (1 MiB). */
export const MAPPED_RAM_LOAD_BUF_SIZE = 0x100000;

/** Where one block's header, bitmap and pages lie in a mapped-ram file. */
export interface MappedRamBlockLayout {
  /** The header as it is written. */
  header: MappedRamBlockHeader;
  /** File offset of the header itself. */
  headerOffset: number;
  /** Pages in the block: `used_length / page_size`. */
  pageCount: number;
  /** Bytes of the bitmap at `header.bitmapOffset`. */
  bitmapSize: number;
  /** File offset right after the pages, where the stream resumes. */
  end: number;
}

/** Options for {@linkcode layoutMappedRamBlock}. */
export interface LayoutMappedRamBlockOptions {
  /**
   * The target page size.
   *
   * @default {4096}
   */
  pageSize?: number;
  /**
   * Alignment of the pages region.
   *
   * @default {MAPPED_RAM_FILE_OFFSET_ALIGNMENT}
   */
  alignment?: number;
}

/**
 * Bytes of a block's bitmap on a 64-bit host: one bit per page, rounded up
 * to whole 8-byte words.
 *
 * @example Usage
 * ```ts
 * import { mappedRamBitmapSize } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(mappedRamBitmapSize(8192), 1024); // a 32 MiB block of 4 KiB pages
 * assert.equal(mappedRamBitmapSize(65), 16);
 * assert.equal(mappedRamBitmapSize(0), 0);
 * ```
 *
 * @param pageCount Pages in the block.
 * @returns The bitmap size in bytes.
 * @throws {RangeError} If `pageCount` is not a non-negative safe integer.
 */
export function mappedRamBitmapSize(pageCount: number): number {
  if (!Number.isSafeInteger(pageCount) || pageCount < 0) {
    throw new RangeError(
      `Cannot size a mapped-ram bitmap as pageCount must be a non-negative safe integer: received ${pageCount}`,
    );
  }
  return Math.ceil(pageCount / 64) * 8;
}

/**
 * Lays out one block whose header starts at `headerOffset`, as QEMU's
 * writer does: the bitmap right after the header, the pages at the next
 * aligned offset, the next block right after the pages.
 *
 * @example The 32 MiB block of the layout description
 * ```ts
 * import { layoutMappedRamBlock } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const layout = layoutMappedRamBlock(0x50, 32 << 20);
 * assert.deepEqual(layout.header, {
 *   version: 1,
 *   pageSize: 4096,
 *   bitmapOffset: 0x6c,
 *   pagesOffset: 0x100000,
 * });
 * assert.equal(layout.bitmapSize, 1024);
 * assert.equal(layout.end, 0x2100000);
 * ```
 *
 * @param headerOffset File offset of the block's header.
 * @param usedLength The block's used length in bytes.
 * @param options Page size and alignment.
 * @returns Where everything goes.
 * @throws {RangeError} If an argument is out of range.
 */
export function layoutMappedRamBlock(
  headerOffset: number,
  usedLength: number,
  options: LayoutMappedRamBlockOptions = {},
): MappedRamBlockLayout {
  const {
    pageSize = 4096,
    alignment = MAPPED_RAM_FILE_OFFSET_ALIGNMENT,
  } = options;
  checkPageSize(pageSize, "lay out mapped-ram block");
  if (
    !Number.isSafeInteger(alignment) || alignment < pageSize ||
    alignment % pageSize !== 0
  ) {
    throw new RangeError(
      `Cannot lay out mapped-ram block as alignment must be a multiple of the page size ${pageSize}: received ${alignment}`,
    );
  }
  if (!Number.isSafeInteger(headerOffset) || headerOffset < 0) {
    throw new RangeError(
      `Cannot lay out mapped-ram block as headerOffset must be a non-negative safe integer: received ${headerOffset}`,
    );
  }
  if (
    !Number.isSafeInteger(usedLength) || usedLength <= 0 ||
    usedLength % pageSize !== 0
  ) {
    throw new RangeError(
      `Cannot lay out mapped-ram block as usedLength must be a positive multiple of the page size ${pageSize}: received ${usedLength}`,
    );
  }
  const pageCount = usedLength / pageSize;
  const bitmapSize = mappedRamBitmapSize(pageCount);
  const bitmapOffset = headerOffset + MAPPED_RAM_HEADER_SIZE;
  const pagesOffset = alignUp(bitmapOffset + bitmapSize, alignment);
  const end = pagesOffset + usedLength;
  if (!Number.isSafeInteger(end)) {
    throw new RangeError(
      `Cannot lay out mapped-ram block as it would end past 2^53: header at ${headerOffset}, ${usedLength} bytes`,
    );
  }
  return {
    header: {
      version: MAPPED_RAM_HDR_VERSION,
      pageSize,
      bitmapOffset,
      pagesOffset,
    },
    headerOffset,
    pageCount,
    bitmapSize,
    end,
  };
}

/**
 * Encodes a block header into its 28 bytes.
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
 * Decodes a 28-byte block header. Values are taken as they are: whether
 * they make sense is for the reader to judge (it knows the file).
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
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const field = (at: number, name: string): number => {
    const value = view.getBigUint64(at);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new StreamFormatError(
        `Cannot decode mapped-ram header at offset ${offset}: ${name} 0x${
          value.toString(16)
        } exceeds 2^53`,
        { offset: offset + at },
      );
    }
    return Number(value);
  };
  return {
    version: view.getUint32(0),
    pageSize: field(4, "page size"),
    bitmapOffset: field(12, "bitmap offset"),
    pagesOffset: field(20, "pages offset"),
  };
}

function checkPageSize(pageSize: number, action: string): void {
  if (
    !Number.isSafeInteger(pageSize) || pageSize < 1024 ||
    (pageSize & (pageSize - 1)) !== 0
  ) {
    throw new RangeError(
      `Cannot ${action} as pageSize must be a power of two >= 1024: received ${pageSize}`,
    );
  }
}

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}
