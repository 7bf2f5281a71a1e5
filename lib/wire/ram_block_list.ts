/**
 * The RAM block list: the MEM_SIZE record that opens the `ram` START
 * section, in a stream and in a mapped-ram file alike (QEMU's
 * `ram_save_setup()` writes it, `ram_load_precopy()` and
 * `parse_ramblock()` read it).
 *
 * ```
 * list     be64 total | MEM_SIZE (0x04)        total = sum of used lengths
 *          entry*                               until the lengths add up to total
 * entry    u8 n, idstr[n], be64 used_length
 *          [be64 page_size]    postcopy-ram, a block whose page size differs from
 *                              the target page size (the ADVISE summary says so)
 *          [be64 gpa]          x-ignore-shared
 *          [header, 28 bytes]  mapped-ram (mapped_ram_header.ts): version,
 *                              page size, bitmap offset, pages offset
 * ```
 *
 * With mapped-ram the block's bitmap and pages lie between its header and
 * the next entry (`mapped_ram_layout.ts`); this codec knows only the entry
 * bytes and checks what needs no file: header version (QEMU reads older
 * ones), page size, offsets that do not point back, page alignment.
 *
 * Decoding is a step function for bytes that arrive piecemeal: it says how
 * many bytes it needs, or returns the decoded entry. Left out on purpose:
 * checking blocks against a destination's own RAM (a loader's job).
 *
 * @module
 */

import type { ByteWriter } from "../bytes/byte_writer.ts";
import { StreamFormatError, UnexpectedEndOfStreamError } from "../errors.ts";
import type { MappedRamBlockHeader, RamBlockInfo } from "../ram/ram_record.ts";
import { StepCursor } from "./_step_cursor.ts";
import {
  decodeMappedRamHeader,
  encodeMappedRamHeader,
  MAPPED_RAM_HDR_VERSION,
  MAPPED_RAM_HEADER_SIZE,
} from "./mapped_ram_header.ts";
import { RAM_SAVE_FLAG } from "./ram_save_flags.ts";

/**
 * The most bytes one block entry takes: a 255-byte name, the used length,
 * a page size, a guest address and a mapped-ram header.
 *
 * @example Usage
 * ```ts
 * import { MAX_RAM_BLOCK_ENTRY_SIZE, ramBlockEntrySize } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const block = {
 *   idstr: "x".repeat(255),
 *   usedLength: 2 << 20,
 *   pageSize: 2 << 20,
 *   gpa: 0n,
 *   mappedRam: { version: 1, pageSize: 4096, bitmapOffset: 0, pagesOffset: 0 },
 * };
 * assert.equal(ramBlockEntrySize(block), MAX_RAM_BLOCK_ENTRY_SIZE);
 * ```
 */
export const MAX_RAM_BLOCK_ENTRY_SIZE = 308; // 1 + 255 + 8 + 8 + 8 + 28

/** What the stream negotiated that shapes each block entry. */
export interface RamBlockListFormat {
  /**
   * The target page size.
   *
   * @default {4096}
   */
  pageSize?: number;
  /**
   * POSTCOPY_ADVISE's summary of the blocks' page sizes. An entry carries
   * its own page size only when the summary differs from the target page
   * size and the be64 after the length is a larger power of two in the
   * summary (the field is not self-describing; QEMU's loader knows its own
   * blocks instead).
   *
   * @default {undefined}
   */
  pageSizeSummary?: number | undefined;
  /**
   * Whether every entry carries a guest address (`x-ignore-shared`).
   *
   * @default {false}
   */
  ignoreShared?: boolean;
  /**
   * Whether every entry carries a mapped-ram header (`mapped-ram`).
   *
   * @default {false}
   */
  mappedRam?: boolean;
}

/** Options for {@linkcode decodeRamBlockEntry}. */
export interface DecodeRamBlockEntryOptions extends RamBlockListFormat {
  /** The total the MEM_SIZE word announced. */
  total: number;
  /**
   * The entries decoded before this one.
   *
   * @default {[]}
   */
  previous?: readonly RamBlockInfo[];
  /**
   * Stream or file offset of `bytes[0]`, for error messages.
   *
   * @default {0}
   */
  offset?: number;
  /**
   * Whether `bytes` is all there is (the stream or file ends there, or it
   * holds {@linkcode MAX_RAM_BLOCK_ENTRY_SIZE} bytes): a field cut short is
   * then an error instead of a request for more bytes.
   *
   * @default {false}
   */
  ended?: boolean;
}

/** What {@linkcode decodeRamBlockEntry} made of the bytes it was given. */
export type RamBlockEntryStep =
  | {
    /** More bytes are needed: call again with at least `bytes` of them. */
    type: "need";
    /** How many bytes, from the entry's first, to have before calling again. */
    bytes: number;
  }
  | {
    /** The entry is decoded. */
    type: "entry";
    /** The block, with `pageSize`, `gpa` and `mappedRam` when present. */
    block: RamBlockInfo;
    /** How many bytes the entry took. */
    size: number;
  };

/**
 * Appends the MEM_SIZE word that opens a block list: `be64 total |
 * MEM_SIZE`.
 *
 * @example Usage
 * ```ts
 * import { ByteWriter, encodeRamBlockListTotal } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const writer = new ByteWriter();
 * encodeRamBlockListTotal(0x2000, writer);
 * assert.deepEqual(writer.bytes(), new Uint8Array([0, 0, 0, 0, 0, 0, 0x20, 0x04]));
 * ```
 *
 * @param total The sum of the blocks' used lengths.
 * @param writer Where the bytes go.
 */
export function encodeRamBlockListTotal(
  total: number,
  writer: ByteWriter,
): void {
  writer.uint64(total + RAM_SAVE_FLAG.MEM_SIZE);
}

/**
 * Appends one block entry: name, used length, then whichever of page size,
 * guest address and mapped-ram header the block has.
 *
 * @example Usage
 * ```ts
 * import { ByteWriter, encodeRamBlockEntry } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const writer = new ByteWriter();
 * encodeRamBlockEntry({ idstr: "ab", usedLength: 4096, gpa: 0x10n }, writer);
 * assert.deepEqual(
 *   writer.bytes(),
 *   new Uint8Array([2, 0x61, 0x62, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]),
 * );
 * ```
 *
 * @param block The block.
 * @param writer Where the bytes go.
 * @throws {RangeError} If the name is longer than 255 bytes or a field
 *   does not fit.
 */
export function encodeRamBlockEntry(
  block: RamBlockInfo,
  writer: ByteWriter,
): void {
  writer.countedString(block.idstr).uint64(block.usedLength);
  if (block.pageSize !== undefined) writer.uint64(block.pageSize);
  if (block.gpa !== undefined) writer.bigUint64(block.gpa);
  if (block.mappedRam !== undefined) {
    writer.write(encodeMappedRamHeader(block.mappedRam));
  }
}

/**
 * Appends a whole block list as a stream carries it: the MEM_SIZE word,
 * then every entry back to back.
 *
 * @example Usage
 * ```ts
 * import { ByteWriter, encodeRamBlockList } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const writer = new ByteWriter();
 * encodeRamBlockList([{ idstr: "a", usedLength: 4096 }], writer);
 * assert.deepEqual(
 *   writer.bytes(),
 *   new Uint8Array([0, 0, 0, 0, 0, 0, 0x10, 0x04, 1, 0x61, 0, 0, 0, 0, 0, 0, 0x10, 0]),
 * );
 * ```
 *
 * @param blocks The blocks, in list order.
 * @param writer Where the bytes go.
 * @throws {RangeError} If a name is longer than 255 bytes or a field does
 *   not fit.
 */
export function encodeRamBlockList(
  blocks: readonly RamBlockInfo[],
  writer: ByteWriter,
): void {
  let total = 0;
  for (const block of blocks) total += block.usedLength;
  encodeRamBlockListTotal(total, writer);
  for (const block of blocks) encodeRamBlockEntry(block, writer);
}

/**
 * How many bytes a block's entry takes, as {@linkcode encodeRamBlockEntry}
 * writes it.
 *
 * @example Usage
 * ```ts
 * import { ramBlockEntrySize } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(ramBlockEntrySize({ idstr: "pc.ram", usedLength: 4096 }), 15);
 * assert.equal(ramBlockEntrySize({ idstr: "pc.ram", usedLength: 4096, gpa: 0n }), 23);
 * ```
 *
 * @param block The block.
 * @returns The size in bytes.
 */
export function ramBlockEntrySize(block: RamBlockInfo): number {
  return 1 + ENCODER.encode(block.idstr).byteLength + 8 +
    (block.pageSize === undefined ? 0 : 8) +
    (block.gpa === undefined ? 0 : 8) +
    (block.mappedRam === undefined ? 0 : MAPPED_RAM_HEADER_SIZE);
}

/**
 * Decodes the MEM_SIZE word that opens a block list into the announced
 * total.
 *
 * @example Usage
 * ```ts
 * import { decodeRamBlockListTotal } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(decodeRamBlockListTotal(new Uint8Array([0, 0, 0, 0, 0, 0, 0x20, 0x04])), 0x2000);
 * ```
 *
 * @param bytes At least 8 bytes; the word is the first 8.
 * @param options The page size (which bits are flags) and the offset of
 *   `bytes[0]` for error messages.
 * @returns The total in bytes.
 * @throws {UnexpectedEndOfStreamError} If fewer than 8 bytes are given.
 * @throws {StreamFormatError} If the flags are not MEM_SIZE alone or the
 *   total exceeds 2^53.
 */
export function decodeRamBlockListTotal(
  bytes: Uint8Array,
  options: { pageSize?: number; offset?: number } = {},
): number {
  const { pageSize = 4096, offset = 0 } = options;
  if (bytes.byteLength < 8) {
    throw new UnexpectedEndOfStreamError(8, {
      offset,
      receivedBytes: bytes.byteLength,
      what: "the MEM_SIZE record of the block list",
    });
  }
  const high = be32(bytes, 0);
  const low = be32(bytes, 4);
  const flags = low & (pageSize - 1);
  if (flags !== RAM_SAVE_FLAG.MEM_SIZE) {
    throw listError(
      offset,
      `flags 0x${flags.toString(16)} are not MEM_SIZE (0x4)`,
    );
  }
  if (high >= 0x20_0000) {
    throw listError(offset, `the total 0x${hex64(high, low)} exceeds 2^53`);
  }
  return high * 0x1_0000_0000 + (low - flags);
}

/**
 * Decodes the block entry at the start of `bytes`, or tells how many bytes
 * it needs first. Each field is checked as soon as its bytes are there, so
 * a bad value fails where it is even when the rest never comes.
 *
 * Checks: a name of 1 to 255 bytes not listed before; a used length that
 * is a positive multiple of the page size and keeps the sum within the
 * total; and for mapped-ram a header whose version is at most 1, whose
 * page size is the target page size, whose bitmap lies after the header,
 * and whose pages are page aligned and after the bitmap.
 *
 * @example Bytes arriving in pieces
 * ```ts
 * import { decodeRamBlockEntry } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const entry = new Uint8Array([1, 0x61, 0, 0, 0, 0, 0, 0, 0x10, 0]);
 * assert.deepEqual(decodeRamBlockEntry(entry.subarray(0, 1), { total: 4096 }), { type: "need", bytes: 2 });
 * assert.deepEqual(decodeRamBlockEntry(entry.subarray(0, 2), { total: 4096 }), { type: "need", bytes: 10 });
 * assert.deepEqual(decodeRamBlockEntry(entry, { total: 4096 }), {
 *   type: "entry",
 *   block: { idstr: "a", usedLength: 4096 },
 *   size: 10,
 * });
 * ```
 *
 * @param bytes The bytes from the entry's first on (more may follow it).
 * @param options The total, the entries before, the stream's format, and
 *   whether more bytes can come.
 * @returns The entry and its size, or how many bytes to have first.
 * @throws {StreamFormatError} If a field is not valid; its `offset` is
 *   the field's.
 * @throws {UnexpectedEndOfStreamError} If `ended` and a field is cut
 *   short.
 */
export function decodeRamBlockEntry(
  bytes: Uint8Array,
  options: DecodeRamBlockEntryOptions,
): RamBlockEntryStep {
  const cursor = new StepCursor(bytes, options);
  if (!cursor.need(0, 1, "a RAM block name")) return cursor.more;
  const nameLength = bytes[0]!;
  if (!cursor.need(0, 1 + nameLength, "a RAM block name")) return cursor.more;
  const idstr = TEXT.decode(bytes.subarray(1, 1 + nameLength));
  checkName(idstr, options);
  const lengthAt = 1 + nameLength;
  const lengthField = `the length of block "${idstr}"`;
  if (!cursor.need(lengthAt, 8, lengthField)) return cursor.more;
  const usedLength = cursor.safeUint64(lengthAt);
  if (usedLength === undefined) {
    throw listError(
      cursor.at(lengthAt),
      `${lengthField} 0x${cursor.hex64(lengthAt)} exceeds 2^53`,
    );
  }
  checkLength(idstr, usedLength, lengthAt, options);
  const block: RamBlockInfo = { idstr, usedLength };
  let size = lengthAt + 8;
  const own = ownPageSize(cursor, size, options);
  if (own === "need") return cursor.more;
  if (own !== undefined) {
    block.pageSize = own;
    size += 8;
  }
  if (options.ignoreShared) {
    const what = `the guest address of block "${idstr}"`;
    if (!cursor.need(size, 8, what)) return cursor.more;
    block.gpa = (BigInt(be32(bytes, size)) << 32n) |
      BigInt(be32(bytes, size + 4));
    size += 8;
  }
  if (options.mappedRam) {
    const what = `the mapped-ram header of block "${idstr}"`;
    if (!cursor.need(size, MAPPED_RAM_HEADER_SIZE, what)) return cursor.more;
    block.mappedRam = checkedHeader(block, size, cursor, options);
    size += MAPPED_RAM_HEADER_SIZE;
  }
  return { type: "entry", block, size };
}

function checkName(idstr: string, options: DecodeRamBlockEntryOptions): void {
  const at = options.offset ?? 0;
  if (idstr.length === 0) throw listError(at, "a block name is empty");
  if ((options.previous ?? []).some((block) => block.idstr === idstr)) {
    throw listError(at, `block "${idstr}" is listed twice`);
  }
}

function checkLength(
  idstr: string,
  usedLength: number,
  lengthAt: number,
  options: DecodeRamBlockEntryOptions,
): void {
  const pageSize = options.pageSize ?? 4096;
  const at = (options.offset ?? 0) + lengthAt;
  if (usedLength % pageSize !== 0 || usedLength === 0) {
    throw listError(
      at,
      `block "${idstr}" length ${usedLength} is not a positive multiple of the page size ${pageSize}`,
    );
  }
  let sum = usedLength;
  for (const block of options.previous ?? []) sum += block.usedLength;
  if (sum > options.total) {
    throw listError(
      at,
      `block "${idstr}" brings the lengths to ${sum}, past the announced total ${options.total}`,
    );
  }
}

/**
 * The block's own page size at `at`, `undefined` when the entry has none,
 * or `"need"` when more bytes are needed to tell. The field is there only
 * for blocks on huge pages, which the ADVISE summary hints at.
 */
function ownPageSize(
  cursor: StepCursor,
  at: number,
  options: DecodeRamBlockEntryOptions,
): number | undefined | "need" {
  const targetPageSize = options.pageSize ?? 4096;
  const summary = options.pageSizeSummary;
  if (summary === undefined || summary === targetPageSize) return undefined;
  if (!cursor.settled(at, 8)) return "need";
  if (!cursor.has(at, 8)) return undefined;
  const candidate = cursor.safeUint64(at);
  if (
    candidate !== undefined && isPowerOfTwo(candidate) &&
    candidate > targetPageSize && (candidate & summary) !== 0
  ) {
    return candidate;
  }
  return undefined;
}

/** Decodes and checks the mapped-ram header of `block` at entry byte `at`. */
function checkedHeader(
  block: RamBlockInfo,
  at: number,
  cursor: StepCursor,
  options: DecodeRamBlockEntryOptions,
): MappedRamBlockHeader {
  const headerAt = cursor.at(at);
  const header = decodeMappedRamHeader(
    cursor.bytes.subarray(at, at + MAPPED_RAM_HEADER_SIZE),
    headerAt,
  );
  const fail = (what: string, offset: number): never => {
    throw new StreamFormatError(
      `Cannot decode mapped-ram header of block "${block.idstr}" at offset ${headerAt}: ${what}`,
      { offset },
    );
  };
  const pageSize = options.pageSize ?? 4096;
  const headerEnd = headerAt + MAPPED_RAM_HEADER_SIZE;
  const bitmapSize = Math.ceil(block.usedLength / pageSize / 64) * 8;
  if (header.version > MAPPED_RAM_HDR_VERSION) {
    fail(
      `version ${header.version} is newer than ${MAPPED_RAM_HDR_VERSION}, the highest supported`,
      headerAt,
    );
  }
  if (header.pageSize !== pageSize) {
    fail(
      `page size ${header.pageSize} differs from the stream's target page size ${pageSize}`,
      headerAt + 4,
    );
  }
  if (header.bitmapOffset < headerEnd) {
    fail(
      `bitmap offset ${header.bitmapOffset} points back into the stream, before ${headerEnd}`,
      headerAt + 12,
    );
  }
  if (header.pagesOffset % pageSize !== 0) {
    fail(
      `pages offset ${header.pagesOffset} is not a multiple of the page size ${pageSize}`,
      headerAt + 20,
    );
  }
  if (header.pagesOffset < header.bitmapOffset + bitmapSize) {
    fail(
      `pages offset ${header.pagesOffset} lies inside the ${bitmapSize}-byte bitmap at ${header.bitmapOffset}`,
      headerAt + 20,
    );
  }
  return header;
}

function listError(offset: number, what: string): StreamFormatError {
  return new StreamFormatError(
    `Cannot decode block list at offset ${offset}: ${what}`,
    { offset },
  );
}

function be32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) |
    bytes[at + 3]!) >>> 0;
}

function hex64(high: number, low: number): string {
  return `${high.toString(16)}${low.toString(16).padStart(8, "0")}`;
}

function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 &&
    2 ** Math.round(Math.log2(value)) === value;
}

const TEXT = new TextDecoder();
const ENCODER = new TextEncoder();
