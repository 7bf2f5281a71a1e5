/**
 * Reads the RAM of a mapped-ram file (QEMU 9.0+, capability `mapped-ram`)
 * through a {@linkcode RandomAccessFile}: the block list of the RAM START
 * section with each block's header, its bitmap, and the pages at their
 * fixed offsets.
 *
 * ```
 * offset:  be64 total | MEM_SIZE (0x04)
 * per block, until the lengths add up to total:
 *          u8 len, idstr, be64 used_length, [be64 gpa  with x-ignore-shared]
 *          28-byte header: be32 version, be64 page_size, be64 bitmap_offset, be64 pages_offset
 *          bitmap  at bitmap_offset, ceil(pages / 64) * 8 bytes (mapped_ram_bitmap.ts)
 *          pages   page i at pages_offset + i * page_size
 *          next block at pages_offset + used_length
 * end:     where the block list ends (the section's EOS follows)
 * ```
 *
 * Checks, each failing with a {@linkcode StreamFormatError} that names the
 * file offset of the offending bytes: the MEM_SIZE word; every block name
 * and length; header version above 1 (QEMU's rule: older versions are
 * read); header page size equal to the stream's target page size (QEMU
 * 10.0 does not compare them; a reader should); `pages_offset` a multiple
 * of the page size; bitmap after the header and before the pages; bitmap
 * and pages inside the file (a bitmap cut short is a short read); and no
 * bitmap bit set past the block's last page (QEMU's loader ignores those
 * padding bits; a writer never sets them, so here they mean corruption).
 *
 * @module
 */

import { StreamFormatError, UnexpectedEndOfStreamError } from "../errors.ts";
import type { RandomAccessFile } from "../transport/transport.ts";
import type { PageMemory } from "../ram/apply_ram_record.ts";
import type {
  RamBlockInfo,
  RamPageRecord,
  RamZeroRecord,
} from "../ram/ram_record.ts";
import { MappedRamBitmap } from "./mapped_ram_bitmap.ts";
import {
  decodeRamBlockEntry,
  type DecodeRamBlockEntryOptions,
  decodeRamBlockListTotal,
  type RamBlockEntryStep,
} from "../wire/ram_block_list.ts";
import { MAPPED_RAM_HEADER_SIZE } from "../wire/mapped_ram_header.ts";
import {
  MAPPED_RAM_LOAD_BUF_SIZE,
  mappedRamBitmapSize,
} from "./mapped_ram_layout.ts";

/** Options for {@linkcode MappedRamReader.open}. */
export interface MappedRamReaderOptions {
  /**
   * The stream's target page size; every header must record the same.
   *
   * @default {4096}
   */
  pageSize?: number;
  /**
   * Whether each block entry carries a be64 guest address after its length
   * (capability `x-ignore-shared` in the CONFIGURATION).
   *
   * @default {false}
   */
  ignoreShared?: boolean;
  /**
   * Largest read of pages at once.
   *
   * @default {MAPPED_RAM_LOAD_BUF_SIZE}
   */
  readBytes?: number;
}

/** Options for {@linkcode MappedRamReader.records}. */
export interface MappedRamRecordsOptions {
  /**
   * Also yield a ZERO record for every page whose bit is clear, so that
   * every page of every block appears once, in order.
   *
   * @default {false}
   */
  zeroRecords?: boolean;
}

/** Where one block of a mapped-ram file lies, and which pages it stores. */
export interface MappedRamBlockSummary {
  /** The block, with its `mappedRam` header. */
  block: RamBlockInfo;
  /** File offset of the block's 28-byte header. */
  headerOffset: number;
  /** The block's bitmap (a view: do not modify). */
  bitmap: MappedRamBitmap;
}

/** The block list of a mapped-ram file, as {@linkcode MappedRamReader.open} reads it. */
export interface MappedRamBlockList {
  /** The blocks, in list order. */
  blocks: readonly MappedRamBlockSummary[];
  /** File offset right after the last block's pages. */
  end: number;
}

/**
 * The RAM of a mapped-ram file: open it at the block list, then stream the
 * stored pages as records or copy them into guest memory.
 *
 * Pages are read in runs of set bits, in chunks of at most `readBytes`
 * (QEMU's loader uses 1 MiB); each chunk becomes one batch of records
 * whose `data` are views into that chunk, owned by the caller.
 *
 * @example Usage
 * ```ts
 * import {
 *   MappedRamReader,
 *   MappedRamWriter,
 *   type MappedRamWriterItem,
 *   openRandomAccessFile,
 * } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile();
 * const file = await openRandomAccessFile(path);
 * try {
 *   await ReadableStream.from<MappedRamWriterItem[]>([[
 *     { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 16384 }] },
 *     { type: "ram-page", block: "pc.ram", offset: 8192, data: new Uint8Array(4096).fill(9) },
 *     { type: "ram-eos" },
 *   ]]).pipeTo(new MappedRamWriter(file));
 *
 *   const reader = await MappedRamReader.open(file, 0); // the MEM_SIZE word is at 0
 *   assert.equal(reader.blocks[0]!.idstr, "pc.ram");
 *   const [record, ...more] = (await Array.fromAsync(reader.records())).flat();
 *   assert.equal(more.length, 0);
 *   assert.ok(record?.type === "ram-page");
 *   assert.equal(record.offset, 8192);
 *   assert.equal(record.data[0], 9);
 * } finally {
 *   await file.close();
 *   await Deno.remove(path);
 * }
 * ```
 */
export class MappedRamReader {
  readonly #file: RandomAccessFile;
  readonly #pageSize: number;
  readonly #readBytes: number;
  readonly #blocks: readonly MappedRamBlockSummary[];
  readonly #end: number;

  /**
   * Constructs a reader over a block list already read and checked; use
   * {@linkcode MappedRamReader.open} to read one from the file.
   *
   * @param file The mapped-ram file.
   * @param list The blocks (with headers and bitmaps) and where they end.
   * @param options The page size and read size.
   */
  constructor(
    file: RandomAccessFile,
    list: MappedRamBlockList,
    options: Pick<MappedRamReaderOptions, "pageSize" | "readBytes"> = {},
  ) {
    this.#file = file;
    this.#pageSize = options.pageSize ?? 4096;
    this.#readBytes = options.readBytes ?? MAPPED_RAM_LOAD_BUF_SIZE;
    this.#blocks = [...list.blocks];
    this.#end = list.end;
  }

  /**
   * Reads and checks the block list that starts at `offset` (the MEM_SIZE
   * word of the RAM START section), every header and every bitmap.
   *
   * @param file The mapped-ram file.
   * @param offset File offset of the MEM_SIZE word.
   * @param options The stream's page size and capabilities.
   * @returns The reader.
   * @throws {StreamFormatError} If the block list, a header or a bitmap is
   *   not valid; the error's `offset` is the file offset of the bad bytes.
   * @throws {RangeError} If an option is out of range.
   */
  static async open(
    file: RandomAccessFile,
    offset: number,
    options: MappedRamReaderOptions = {},
  ): Promise<MappedRamReader> {
    const {
      pageSize = 4096,
      ignoreShared = false,
      readBytes = MAPPED_RAM_LOAD_BUF_SIZE,
    } = options;
    if (
      !Number.isSafeInteger(pageSize) || pageSize < 1024 ||
      (pageSize & (pageSize - 1)) !== 0
    ) {
      throw new RangeError(
        `Cannot open mapped-ram file as pageSize must be a power of two >= 1024: received ${pageSize}`,
      );
    }
    if (!Number.isSafeInteger(readBytes) || readBytes < pageSize) {
      throw new RangeError(
        `Cannot open mapped-ram file as readBytes must be at least the page size ${pageSize}: received ${readBytes}`,
      );
    }
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new RangeError(
        `Cannot open mapped-ram file as offset must be a non-negative safe integer: received ${offset}`,
      );
    }
    const list = await readBlockList(file, offset, { pageSize, ignoreShared });
    return new MappedRamReader(file, list, { pageSize, readBytes });
  }

  /** The target page size. */
  get pageSize(): number {
    return this.#pageSize;
  }

  /** The blocks, in list order, each with its `mappedRam` header. */
  get blocks(): RamBlockInfo[] {
    return this.#blocks.map(({ block }) => ({
      ...block,
      ...(block.mappedRam ? { mappedRam: { ...block.mappedRam } } : {}),
    }));
  }

  /** Per block: header position and bitmap. */
  get summaries(): readonly MappedRamBlockSummary[] {
    return this.#blocks;
  }

  /** File offset right after the last block's pages. */
  get end(): number {
    return this.#end;
  }

  /**
   * Pages stored (bits set), over all blocks.
   *
   * @returns The count.
   */
  storedPages(): number {
    let total = 0;
    for (const { bitmap } of this.#blocks) total += bitmap.count();
    return total;
  }

  /**
   * The stored pages as PAGE records, block by block in ascending order,
   * one batch per read (and, with `zeroRecords`, ZERO records for the
   * pages whose bit is clear).
   *
   * @param options Whether to yield ZERO records too.
   * @returns The record batches.
   */
  records(
    options: MappedRamRecordsOptions = {},
  ): ReadableStream<(RamPageRecord | RamZeroRecord)[]> {
    return ReadableStream.from(this.#batches(options.zeroRecords ?? false));
  }

  /**
   * Copies every stored page into `memory`. Pages whose bit is clear are
   * not touched: they are zero in a fresh destination.
   *
   * @param memory Where pages go.
   * @returns How many pages were copied.
   */
  async applyTo(memory: PageMemory): Promise<number> {
    let pages = 0;
    for await (const batch of this.records()) {
      for (const record of batch) {
        if (record.type === "ram-page") {
          memory.pageView(record.block, record.offset).set(record.data);
          pages++;
        }
      }
    }
    return pages;
  }

  async *#batches(
    zeroRecords: boolean,
  ): AsyncGenerator<(RamPageRecord | RamZeroRecord)[]> {
    const pageSize = this.#pageSize;
    const perRead = Math.floor(this.#readBytes / pageSize);
    for (const { block, bitmap } of this.#blocks) {
      const idstr = block.idstr;
      const pagesOffset = block.mappedRam!.pagesOffset;
      let next = 0;
      const zeros = function* (end: number) {
        while (next < end) {
          const stop = Math.min(end, next + ZERO_BATCH);
          const batch: RamZeroRecord[] = [];
          for (; next < stop; next++) {
            batch.push({
              type: "ram-zero",
              block: idstr,
              offset: next * pageSize,
              fill: 0,
            });
          }
          yield batch;
        }
      };
      for (const [start, end] of bitmap.runs()) {
        if (zeroRecords) yield* zeros(start);
        for (let first = start; first < end; first += perRead) {
          const count = Math.min(perRead, end - first);
          const bytes = await this.#file.readAt(
            pagesOffset + first * pageSize,
            count * pageSize,
          );
          const batch: RamPageRecord[] = [];
          for (let i = 0; i < count; i++) {
            batch.push({
              type: "ram-page",
              block: idstr,
              offset: (first + i) * pageSize,
              data: bytes.subarray(i * pageSize, (i + 1) * pageSize),
            });
          }
          yield batch;
        }
        next = end;
      }
      if (zeroRecords) yield* zeros(bitmap.pageCount);
    }
  }
}

const ZERO_BATCH = 4096;
/** Bytes read for a block entry at first; a long name needs a second read. */
const ENTRY_READ_BYTES = 128;

/**
 * Reads the block list at `offset` with positioned reads: each entry
 * through the block-list codec, then each block's bitmap.
 */
async function readBlockList(
  file: RandomAccessFile,
  offset: number,
  format: { pageSize: number; ignoreShared: boolean },
): Promise<MappedRamBlockList> {
  const fileSize = await file.size();
  const total = decodeRamBlockListTotal(
    await readUpTo(file, offset, 8, fileSize),
    { pageSize: format.pageSize, offset },
  );
  const blocks: MappedRamBlockSummary[] = [];
  const previous: RamBlockInfo[] = [];
  let at = offset + 8;
  let sum = 0;
  while (sum < total) {
    const step = await readEntry(file, at, fileSize, {
      ...format,
      mappedRam: true,
      total,
      previous,
    });
    const block = step.block;
    const header = block.mappedRam!;
    const bitmap = await readBitmap(file, block, format.pageSize, fileSize);
    previous.push(block);
    blocks.push({
      block,
      headerOffset: at + step.size - MAPPED_RAM_HEADER_SIZE,
      bitmap,
    });
    sum += block.usedLength;
    at = header.pagesOffset + block.usedLength;
  }
  return { blocks, end: at };
}

/**
 * Reads a block's bitmap and checks that the bitmap and the pages lie in
 * the file and that no padding bit is set.
 */
async function readBitmap(
  file: RandomAccessFile,
  block: RamBlockInfo,
  pageSize: number,
  fileSize: number,
): Promise<MappedRamBitmap> {
  const { idstr, usedLength } = block;
  const header = block.mappedRam!;
  const pageCount = usedLength / pageSize;
  const bitmapSize = mappedRamBitmapSize(pageCount);
  const bytes = await readUpTo(
    file,
    header.bitmapOffset,
    bitmapSize,
    fileSize,
  );
  if (bytes.byteLength < bitmapSize) {
    throw new UnexpectedEndOfStreamError(bitmapSize, {
      offset: header.bitmapOffset,
      receivedBytes: bytes.byteLength,
      what: `the bitmap of block "${idstr}"`,
    });
  }
  const bitmap = new MappedRamBitmap(pageCount, bytes);
  if (header.pagesOffset + usedLength > fileSize) {
    throw new UnexpectedEndOfStreamError(usedLength, {
      offset: header.pagesOffset,
      receivedBytes: Math.max(0, fileSize - header.pagesOffset),
      what: `the pages of block "${idstr}"`,
    });
  }
  const padding = bitmap.firstPaddingBit();
  if (padding !== undefined) {
    const byteAt = header.bitmapOffset + Math.floor(padding / 8);
    throw new StreamFormatError(
      `Cannot read bitmap of block "${idstr}" at offset ${byteAt}: bit ${padding} is set, but the block has only ${pageCount} pages`,
      { offset: byteAt },
    );
  }
  return bitmap;
}

/** Reads the block entry at `at` through the block-list codec. */
async function readEntry(
  file: RandomAccessFile,
  at: number,
  fileSize: number,
  options: DecodeRamBlockEntryOptions,
): Promise<RamBlockEntryStep & { type: "entry" }> {
  let size = ENTRY_READ_BYTES;
  while (true) {
    const bytes = await readUpTo(file, at, size, fileSize);
    const step = decodeRamBlockEntry(bytes, {
      ...options,
      offset: at,
      ended: bytes.byteLength < size,
    });
    if (step.type === "entry") return step;
    size = step.bytes;
  }
}

/** Reads `size` bytes at `at`, or fewer where the file ends first. */
async function readUpTo(
  file: RandomAccessFile,
  at: number,
  size: number,
  fileSize: number,
): Promise<Uint8Array> {
  const available = Math.min(size, fileSize - at);
  if (available <= 0) return new Uint8Array(0);
  return await file.readAt(at, available);
}
