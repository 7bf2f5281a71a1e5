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
 * header        28 bytes, big-endian, packed (mapped_ram_header.ts codes it):
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

import type { MappedRamBlockHeader } from "../ram/ram_record.ts";
import {
  MAPPED_RAM_HDR_VERSION,
  MAPPED_RAM_HEADER_SIZE,
} from "../wire/mapped_ram_header.ts";

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
