/**
 * Writes a migration stream into a file in QEMU's mapped-ram layout (QEMU
 * 9.0+, capability `mapped-ram`): the stream is written sequentially, except
 * that each RAM block gets a fixed region in the file for its bitmap and
 * pages, and every page goes to its fixed offset instead of into the stream.
 *
 * ```
 * [0 .. offset)         untouched prefix (the file is cut to `offset` first)
 * offset:               stream bytes (header, CONFIGURATION listing "mapped-ram",
 *                       RAM START section header)         ← "stream-bytes" items
 *                       be64 total | MEM_SIZE             ← "ram-mem-size"
 *   per block:          u8 len, idstr, be64 used_length, [be64 gpa]
 *                       28-byte header                    (mapped_ram_layout.ts)
 *                       bitmap at bitmap_offset           ← written on "bitmap-flush" and at close
 *                       zero padding up to pages_offset
 *                       page i at pages_offset + i*page   ← "ram-page" (a "ram-zero" clears bit i)
 *                       stream resumes at pages_offset + used_length
 *                       be64 EOS                          ← "ram-eos"
 *                       footer, PART/END sections holding only EOS, device
 *                       sections, EOF, vmdesc             ← "stream-bytes" items
 * ```
 *
 * The writer knows the RAM section's format and nothing of the framing
 * around it: the caller encodes everything else (a wire encoder) and hands
 * the bytes over in stream order. Left out on purpose: postcopy's per-block
 * page size (postcopy is incompatible with mapped-ram), XBZRLE and
 * MULTIFD_FLUSH records (a mapped-ram loader refuses them), and multifd's
 * parallel channels (pages are written by this one writer).
 *
 * @module
 */

import type { RandomAccessFile } from "../transport/transport.ts";
import type {
  RamBlockInfo,
  RamMemSizeRecord,
  RamPageRecord,
  RamRecord,
} from "../ram/ram_record.ts";
import { ByteWriter } from "../bytes/byte_writer.ts";
import {
  encodeRamBlockEntry,
  encodeRamBlockListTotal,
  MAX_RAM_BLOCK_ENTRY_SIZE,
  ramBlockEntrySize,
} from "../wire/ram_block_list.ts";
import { RAM_SAVE_FLAG } from "../wire/ram_save_flags.ts";
import { type MappedRamBlockState, PageRuns } from "./_page_runs.ts";
import { WriteTracker } from "./_write_tracker.ts";
import { MappedRamBitmap } from "./mapped_ram_bitmap.ts";
import {
  layoutMappedRamBlock,
  MAPPED_RAM_FILE_OFFSET_ALIGNMENT,
} from "./mapped_ram_layout.ts";

/** Bytes of the sequential stream, written at the current stream position. */
export interface MappedRamStreamBytes {
  /** Discriminant. */
  type: "stream-bytes";
  /** The bytes; copied before `write()` resolves, so they may be reused. */
  data: Uint8Array;
}

/**
 * Asks the writer to write every block's bitmap now. QEMU writes the
 * bitmaps once, during the RAM END section, right before its EOS.
 */
export interface MappedRamBitmapFlush {
  /** Discriminant. */
  type: "bitmap-flush";
}

/** What a {@linkcode MappedRamWriter} takes, in batches, in stream order. */
export type MappedRamWriterItem =
  | RamRecord
  | MappedRamStreamBytes
  | MappedRamBitmapFlush;

/** Options for {@linkcode MappedRamWriter}. */
export interface MappedRamWriterOptions {
  /**
   * File offset where the stream starts (QEMU's `file:PATH,offset=N`). The
   * file is cut to this size first; the bytes before it are kept.
   *
   * @default {0}
   */
  offset?: number;
  /**
   * The target page size; every header records it.
   *
   * @default {4096}
   */
  pageSize?: number;
  /**
   * Alignment of each block's pages region.
   *
   * @default {MAPPED_RAM_FILE_OFFSET_ALIGNMENT}
   */
  alignment?: number;
  /**
   * Largest positioned write of file-contiguous pages. Two buffers of this
   * size are used in turn, so copying one run overlaps writing the other.
   *
   * @default {4 * 1024 * 1024}
   */
  writeBytes?: number;
}

/**
 * A `WritableStream` of {@linkcode MappedRamWriterItem} batches that lays a
 * migration stream out in mapped-ram format on a {@linkcode RandomAccessFile}.
 *
 * Feed it the whole stream in order: the bytes of every non-RAM record as
 * `{ type: "stream-bytes" }` items, RAM records as they are. A `ram-page`
 * is written at its fixed offset and sets its bitmap bit; a `ram-zero`
 * writes nothing and clears the bit, so a page that later became zero is
 * not restored stale; a page sent twice is written twice at the same
 * offset, so the file size stays bounded however often pages are re-sent.
 * XBZRLE and MULTIFD_FLUSH records are refused with a `TypeError`.
 *
 * Pages that follow each other in the file become large positioned
 * writes: a run of at least 256 KiB whose pages are back-to-back views of
 * one buffer (pages read from guest memory) is written straight from it,
 * other pages are copied into one of two alternating `writeBytes` buffers.
 * Page bytes are never used after `write()` resolves.
 *
 * Bitmaps are written on each `{ type: "bitmap-flush" }` item and, where
 * bits changed since (or a bitmap was never written), when the stream
 * closes. Closing waits for every write and makes the file at least as long
 * as the stream. The writer never closes `file`.
 *
 * @example Usage
 * ```ts
 * import { MappedRamWriter, type MappedRamWriterItem, openRandomAccessFile } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile();
 * const file = await openRandomAccessFile(path);
 * try {
 *   const writer = new MappedRamWriter(file);
 *   await ReadableStream.from<MappedRamWriterItem[]>([[
 *     { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 8192 }] },
 *     { type: "ram-page", block: "pc.ram", offset: 4096, data: new Uint8Array(4096).fill(7) },
 *     { type: "ram-eos" },
 *   ]]).pipeTo(writer);
 *
 *   const [block] = writer.blocks;
 *   assert.deepEqual(block!.mappedRam, { version: 1, pageSize: 4096, bitmapOffset: 0x33, pagesOffset: 0x100000 });
 *   assert.deepEqual(await file.readAt(0x33, 1), new Uint8Array([0b10])); // page 1 is stored
 *   assert.deepEqual(await file.readAt(0x100000 + 4096, 1), new Uint8Array([7]));
 *   assert.equal(await file.size(), 0x100000 + 8192 + 8); // the pages, then EOS
 * } finally {
 *   await file.close();
 *   await Deno.remove(path);
 * }
 * ```
 */
export class MappedRamWriter
  extends WritableStream<readonly MappedRamWriterItem[]> {
  readonly #core: WriterCore;

  /**
   * Constructs a new instance.
   *
   * @param file Where the file goes; positioned writes only.
   * @param options Stream offset, page size, alignment and write size.
   * @throws {RangeError} If an option is out of range.
   */
  constructor(file: RandomAccessFile, options: MappedRamWriterOptions = {}) {
    const core = new WriterCore(file, options);
    super({
      start: () => core.start(),
      write: (batch) => core.write(batch),
      close: () => core.close(),
      abort: () => core.abort(),
    });
    this.#core = core;
  }

  /** The blocks laid out so far, each with its `mappedRam` header. */
  get blocks(): RamBlockInfo[] {
    return this.#core.blocks.map((block) => ({
      ...block.info,
      mappedRam: { ...block.layout.header },
    }));
  }

  /** File offset of the next stream byte (the file's size once closed). */
  get position(): number {
    return this.#core.position;
  }

  /** Page writes issued so far, re-sent pages included. */
  get pagesWritten(): number {
    return this.#core.pagesWritten;
  }
}

const STAGING_FLUSH_BYTES = 1024 * 1024;

class WriterCore {
  readonly #file: RandomAccessFile;
  readonly #offset: number;
  readonly #pageSize: number;
  readonly #alignment: number;
  readonly #tracker = new WriteTracker();
  readonly #runs: PageRuns;
  readonly #blocks = new Map<string, MappedRamBlockState>();
  readonly blocks: MappedRamBlockState[] = [];
  #staging: Uint8Array<ArrayBuffer> = new Uint8Array(64 * 1024);
  #stagingLength = 0;
  #stagingStart: number;

  constructor(file: RandomAccessFile, options: MappedRamWriterOptions) {
    const {
      offset = 0,
      pageSize = 4096,
      alignment = MAPPED_RAM_FILE_OFFSET_ALIGNMENT,
      writeBytes = 4 * 1024 * 1024,
    } = options;
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new RangeError(
        `Cannot construct MappedRamWriter as offset must be a non-negative safe integer: received ${offset}`,
      );
    }
    // Checks page size and alignment the way every block will use them.
    layoutMappedRamBlock(0, pageSize, { pageSize, alignment });
    if (!Number.isSafeInteger(writeBytes) || writeBytes < pageSize) {
      throw new RangeError(
        `Cannot construct MappedRamWriter as writeBytes must be at least the page size ${pageSize}: received ${writeBytes}`,
      );
    }
    this.#file = file;
    this.#offset = offset;
    this.#pageSize = pageSize;
    this.#alignment = alignment;
    this.#runs = new PageRuns(file, {
      pageSize,
      writeBytes,
      tracker: this.#tracker,
    });
    this.#stagingStart = offset;
  }

  get position(): number {
    return this.#stagingStart + this.#stagingLength;
  }

  get pagesWritten(): number {
    return this.#runs.pagesWritten;
  }

  async start(): Promise<void> {
    await this.#file.truncate(this.#offset);
  }

  async write(batch: readonly MappedRamWriterItem[]): Promise<void> {
    this.#tracker.throwIfFailed();
    const direct: Promise<void>[] = [];
    try {
      await this.#writeItems(batch, direct);
    } finally {
      // The caller may reuse its pages once write() settles.
      if (direct.length > 0) await Promise.all(direct);
    }
    this.#tracker.throwIfFailed();
  }

  async close(): Promise<void> {
    this.#runs.flush();
    this.#flushStaging();
    this.#writeBitmaps(true);
    await this.#tracker.settle();
    this.#tracker.throwIfFailed();
    const end = this.position;
    if (await this.#file.size() < end) await this.#file.truncate(end);
  }

  async abort(): Promise<void> {
    await this.#tracker.settle();
  }

  async #writeItems(
    batch: readonly MappedRamWriterItem[],
    direct: Promise<void>[],
  ): Promise<void> {
    for (let index = 0; index < batch.length; index++) {
      const item = batch[index]!;
      switch (item.type) {
        case "stream-bytes":
          this.#append(item.data);
          break;
        case "ram-page": {
          const span = this.#runs.directSpan(batch, index);
          if (span > 1) {
            direct.push(this.#direct(item, span));
            index += span - 1;
            break;
          }
          const state = this.#block(item.block, item.offset);
          const wait = this.#runs.page(state, item.offset, item.data);
          if (wait !== undefined) await wait;
          break;
        }
        case "bitmap-flush":
          this.#runs.flush();
          this.#writeBitmaps(false);
          break;
        default:
          await this.#ramRecord(item);
      }
    }
    if (this.#stagingLength >= STAGING_FLUSH_BYTES) this.#flushStaging();
  }

  /** The RAM records other than PAGE. */
  async #ramRecord(item: Exclude<RamRecord, RamPageRecord>): Promise<void> {
    switch (item.type) {
      case "ram-zero":
        if (item.fill === 0) {
          this.#clear(item.block, item.offset);
        } else {
          // QEMU only sends fill 0; any other fill is real page content.
          await this.#runs.page(
            this.#block(item.block, item.offset),
            item.offset,
            new Uint8Array(this.#pageSize).fill(item.fill),
          );
        }
        return;
      case "ram-compressed":
        if (item.page === undefined) {
          throw new TypeError(
            `Cannot write compressed page of block "${item.block}" at ${item.offset}: it was not inflated`,
          );
        }
        await this.#runs.page(
          this.#block(item.block, item.offset),
          item.offset,
          item.page,
        );
        return;
      case "ram-xbzrle":
        throw new TypeError(
          `Cannot write XBZRLE record of block "${item.block}" at ${item.offset}: mapped-ram is incompatible with xbzrle, pages must arrive whole`,
        );
      case "ram-multifd-flush":
        throw new TypeError(
          "Cannot write MULTIFD_FLUSH record: a mapped-ram file carries no multifd sync points",
        );
      case "ram-eos":
        this.#append(EOS);
        return;
      case "ram-mem-size":
        this.#memSize(item);
        return;
      default: {
        const unknown: never = item;
        throw new TypeError(
          `Cannot write item: type "${
            (unknown as { type: string }).type
          }" is unknown`,
        );
      }
    }
  }

  /** Writes `count` pages from `first` on straight from the caller's memory. */
  #direct(first: RamPageRecord, count: number): Promise<void> {
    const state = this.#block(first.block, first.offset);
    this.#block(first.block, first.offset + (count - 1) * this.#pageSize);
    return this.#runs.direct(state, first, count);
  }

  #memSize(record: RamMemSizeRecord): void {
    if (this.#blocks.size > 0) {
      throw new TypeError(
        "Cannot write a second block list: a mapped-ram file has one RAM START section",
      );
    }
    const withGpa = record.blocks.filter((block) => block.gpa !== undefined);
    if (withGpa.length !== 0 && withGpa.length !== record.blocks.length) {
      throw new TypeError(
        "Cannot write block list: either every block carries a guest address (x-ignore-shared) or none does",
      );
    }
    let total = 0;
    for (const block of record.blocks) total += block.usedLength;
    const writer = new ByteWriter(MAX_RAM_BLOCK_ENTRY_SIZE);
    encodeRamBlockListTotal(total, writer);
    this.#append(writer.bytes());
    for (const info of record.blocks) {
      const name = TEXT.encode(info.idstr);
      if (name.byteLength === 0 || name.byteLength > 255) {
        throw new TypeError(
          `Cannot write block "${info.idstr}": a block name is 1 to 255 bytes`,
        );
      }
      if (this.#blocks.has(info.idstr)) {
        throw new TypeError(
          `Cannot write block list: block "${info.idstr}" is listed twice`,
        );
      }
      if (info.pageSize !== undefined) {
        throw new TypeError(
          `Cannot write block "${info.idstr}" with its own page size: that field exists only with postcopy-ram, which mapped-ram excludes`,
        );
      }
      const { mappedRam: _, ...plain } = info;
      const layout = layoutMappedRamBlock(
        this.position + ramBlockEntrySize(plain),
        info.usedLength,
        { pageSize: this.#pageSize, alignment: this.#alignment },
      );
      writer.reset();
      encodeRamBlockEntry({ ...plain, mappedRam: layout.header }, writer);
      this.#append(writer.bytes());
      this.#flushStaging();
      this.#stagingStart = layout.end;
      const state: MappedRamBlockState = {
        info: plain,
        layout,
        bitmap: new MappedRamBitmap(layout.pageCount),
        bitmapDirty: true,
        written: new MappedRamBitmap(layout.pageCount),
      };
      this.#blocks.set(info.idstr, state);
      this.blocks.push(state);
    }
  }

  #clear(block: string, offset: number): void {
    const state = this.#block(block, offset);
    state.bitmap.clear(offset / this.#pageSize);
    state.bitmapDirty = true;
  }

  #block(block: string, offset: number): MappedRamBlockState {
    const state = this.#blocks.get(block);
    if (state === undefined) {
      throw new TypeError(
        this.#blocks.size === 0
          ? `Cannot write page of block "${block}": the block list (MEM_SIZE) has not been written yet`
          : `Cannot write page of block "${block}": the block is not in the block list`,
      );
    }
    if (
      !Number.isSafeInteger(offset) || offset < 0 ||
      offset % this.#pageSize !== 0 || offset >= state.info.usedLength
    ) {
      throw new RangeError(
        `Cannot write page of block "${block}" at ${offset}: the offset must be a multiple of the page size ${this.#pageSize} below the block's ${state.info.usedLength} bytes`,
      );
    }
    return state;
  }

  #writeBitmaps(onlyDirty: boolean): void {
    for (const block of this.blocks) {
      if (onlyDirty && !block.bitmapDirty) continue;
      block.bitmapDirty = false;
      this.#tracker.track(
        this.#file.writeAt(
          block.layout.header.bitmapOffset,
          block.bitmap.bytes.slice(),
        ),
      );
    }
  }

  #append(bytes: Uint8Array): void {
    const needed = this.#stagingLength + bytes.byteLength;
    if (needed > this.#staging.byteLength) {
      const grown = new Uint8Array(
        Math.max(needed, this.#staging.byteLength * 2),
      );
      grown.set(this.#staging.subarray(0, this.#stagingLength));
      this.#staging = grown;
    }
    this.#staging.set(bytes, this.#stagingLength);
    this.#stagingLength = needed;
  }

  #flushStaging(): void {
    if (this.#stagingLength === 0) return;
    const bytes = this.#staging.slice(0, this.#stagingLength);
    const at = this.#stagingStart;
    this.#stagingStart += this.#stagingLength;
    this.#stagingLength = 0;
    this.#tracker.track(this.#file.writeAt(at, bytes));
  }
}

const EOS = new Uint8Array([0, 0, 0, 0, 0, 0, 0, RAM_SAVE_FLAG.EOS]);
const TEXT = new TextEncoder();
