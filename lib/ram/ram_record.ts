/**
 * The records of QEMU's `ram` section, as typed values.
 *
 * On the wire (QEMU `migration/ram.c`), every record starts with a be64 word
 * holding the page's byte offset inside its RAM block in the high bits and
 * `RAM_SAVE_FLAG_*` bits in the low bits:
 *
 * ```
 * be64 offset|flags  [u8 len, block name  unless CONTINUE]  payload
 *   ZERO       u8 fill (QEMU writes 0)
 *   PAGE       page-size bytes
 *   XBZRLE     u8 0x01, be16 len, len delta bytes
 *   COMPRESS   be32 len, zlib stream of one page (QEMU 7.2)
 *   MEM_SIZE   (offset = total bytes) block list: u8 len, name, be64 used_length,
 *              [be64 page_size] [be64 gpa] [mapped-ram header] per block
 *   EOS / MULTIFD_FLUSH: nothing
 * ```
 *
 * The framing lives in the wire layer; this file only names the values.
 *
 * @module
 */

/** The per-block header of a mapped-ram file (QEMU 9.0+), 28 bytes. */
export interface MappedRamBlockHeader {
  /** Header version; QEMU writes 1. */
  version: number;
  /** Target page size the pages were written with. */
  pageSize: number;
  /** Absolute file offset of the block's written-pages bitmap. */
  bitmapOffset: number;
  /** Absolute file offset of page 0 of the block. */
  pagesOffset: number;
}

/** One RAM block as the MEM_SIZE record announces it. */
export interface RamBlockInfo {
  /** The block's idstr, e.g. `pc.ram` or `/rom@etc/acpi/tables`. */
  idstr: string;
  /** The block's used length in bytes. */
  usedLength: number;
  /**
   * The block's page size, present on the wire only with postcopy-ram when
   * the block is backed by pages larger than the host's.
   */
  pageSize?: number;
  /** Guest physical address, present on the wire only with x-ignore-shared. */
  gpa?: bigint;
  /** mapped-ram layout of this block, present only with mapped-ram. */
  mappedRam?: MappedRamBlockHeader;
}

/** The block list that opens the `ram` START section. */
export interface RamMemSizeRecord {
  /** Discriminant. */
  type: "ram-mem-size";
  /** The blocks, in stream order; their used lengths add up to the total. */
  blocks: RamBlockInfo[];
}

/** Fields shared by the records that carry one page. */
export interface RamPageAddress {
  /** The RAM block's idstr. */
  block: string;
  /** Byte offset of the page inside the block (a multiple of the page size). */
  offset: number;
  /**
   * Whether the wire omitted the block name (RAM_SAVE_FLAG_CONTINUE). The
   * decoder always sets it; encoders choose it themselves when it is absent.
   */
  continued?: boolean;
}

/** A page whose bytes are all `fill` (QEMU always sends 0). */
export interface RamZeroRecord extends RamPageAddress {
  /** Discriminant. */
  type: "ram-zero";
  /** The fill byte. */
  fill: number;
}

/** A whole page. */
export interface RamPageRecord extends RamPageAddress {
  /** Discriminant. */
  type: "ram-page";
  /** The page bytes; may alias memory the record does not own. */
  data: Uint8Array;
}

/** A page sent as an XBZRLE delta against the destination's copy. */
export interface RamXbzrleRecord extends RamPageAddress {
  /** Discriminant. */
  type: "ram-xbzrle";
  /** The delta (xbzrle.ts describes its format). */
  delta: Uint8Array;
}

/** A page sent zlib-compressed (QEMU 7.2 `compress` capability). */
export interface RamCompressedRecord extends RamPageAddress {
  /** Discriminant. */
  type: "ram-compressed";
  /** The zlib stream as on the wire. */
  data: Uint8Array;
  /** The inflated page, when a decoder has inflated it. */
  page?: Uint8Array;
}

/** QEMU 10.0's "all multifd channels sync here" marker. */
export interface RamMultifdFlushRecord {
  /** Discriminant. */
  type: "ram-multifd-flush";
}

/** End of the RAM data of one section. */
export interface RamEosRecord {
  /** Discriminant. */
  type: "ram-eos";
}

/** Any record of the `ram` section. */
export type RamRecord =
  | RamMemSizeRecord
  | RamZeroRecord
  | RamPageRecord
  | RamXbzrleRecord
  | RamCompressedRecord
  | RamMultifdFlushRecord
  | RamEosRecord;

/** The RAM records that carry one page. */
export type RamPageCarrier =
  | RamZeroRecord
  | RamPageRecord
  | RamXbzrleRecord
  | RamCompressedRecord;

/**
 * Tells whether a record carries a page.
 *
 * @example Usage
 * ```ts
 * import { isPageCarrier } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.ok(isPageCarrier({ type: "ram-zero", block: "pc.ram", offset: 0, fill: 0 }));
 * assert.ok(!isPageCarrier({ type: "ram-eos" }));
 * ```
 *
 * @param record Any record with a `type`.
 * @returns Whether it is a ZERO, PAGE, XBZRLE or COMPRESS_PAGE record.
 */
export function isPageCarrier<T extends { type: string }>(
  record: T,
): record is T & RamPageCarrier {
  return record.type === "ram-zero" || record.type === "ram-page" ||
    record.type === "ram-xbzrle" || record.type === "ram-compressed";
}
