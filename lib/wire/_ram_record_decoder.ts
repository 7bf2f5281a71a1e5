/**
 * RAM records, the body of every `ram` section (QEMU's `ram_load_precopy()`
 * in `migration/ram.c` is the reference for every check):
 *
 * ```
 * be64 offset|flags  [u8 n block-name  unless CONTINUE]  payload
 *   ZERO           u8 fill
 *   PAGE           page-size bytes
 *   XBZRLE         u8 0x01, be16 len (<= page size), len delta bytes
 *   COMPRESS_PAGE  be32 len (<= zlib's bound for a page), zlib stream
 *   MEM_SIZE       (offset = total) the block list follows (ram_block_list.ts)
 *   EOS, MULTIFD_FLUSH  nothing; the offset part must be 0
 * ```
 *
 * This is the decoder's hot path: a tight loop over the buffered bytes in
 * which one call measures a record from the bytes buffered so far and one
 * decodes it once they are all there, both straight from the
 * {@linkcode ByteReader}'s buffer without copying page bytes that lie in
 * one chunk. Errors are built by functions, not closures, so a record
 * costs no allocation beyond its own.
 *
 * @module
 */

import { StreamFormatError } from "../errors.ts";
import type { RamBlockInfo, RamRecord } from "../ram/ram_record.ts";
import { checkXbzrleDelta } from "../ram/xbzrle.ts";
import type { ByteReader } from "../streams/byte_reader.ts";
import type { RecordBatch } from "./_record_batch.ts";
import { inflatePage } from "./_inflate_page.ts";
import { readStep } from "./_step_cursor.ts";
import type { MigrationRecord } from "./migration_record.ts";
import {
  decodeRamBlockEntry,
  type DecodeRamBlockEntryOptions,
  MAX_RAM_BLOCK_ENTRY_SIZE,
} from "./ram_block_list.ts";
import { RAM_SAVE_FLAG, ramSaveFlagNames } from "./ram_save_flags.ts";

/** The MEM_SIZE record's header: its block list is decoded separately. */
export interface MemSizeWord {
  /** Discriminant. */
  type: "mem-size";
  /** The total the block list announces. */
  total: number;
}

const PAGE_CARRIERS = RAM_SAVE_FLAG.ZERO | RAM_SAVE_FLAG.PAGE |
  RAM_SAVE_FLAG.XBZRLE | RAM_SAVE_FLAG.COMPRESS_PAGE;

/** What a {@linkcode RamRecordDecoder} starts with. */
export interface RamRecordDecoderOptions {
  /** The target page size. */
  pageSize: number;
  /** The announced blocks; a block list adds to it. */
  blocks: Map<string, RamBlockInfo>;
  /** The capabilities, which shape block-list entries (read, not kept). */
  capabilities: ReadonlySet<string>;
}

/**
 * Decodes the body of `ram` sections, keeping what the format carries from
 * one record to the next: the page size, the announced blocks, the current
 * block for CONTINUE, and POSTCOPY_ADVISE's page-size summary.
 */
export class RamRecordDecoder {
  #pageSize: number;
  readonly #blocks: Map<string, RamBlockInfo>;
  readonly #capabilities: ReadonlySet<string>;
  #currentBlock: RamBlockInfo | undefined;
  #pageSizeSummary: number | undefined;

  /**
   * Constructs a new instance.
   *
   * @param options The page size, blocks and capabilities to start with.
   */
  constructor(options: RamRecordDecoderOptions) {
    this.#pageSize = options.pageSize;
    this.#blocks = options.blocks;
    this.#capabilities = options.capabilities;
  }

  /** The target page size. */
  get pageSize(): number {
    return this.#pageSize;
  }

  set pageSize(pageSize: number) {
    this.#pageSize = pageSize;
  }

  /** POSTCOPY_ADVISE's summary of the blocks' page sizes, once sent. */
  set pageSizeSummary(summary: number) {
    this.#pageSizeSummary = summary;
  }

  /** Forgets the current block, as QEMU's source does on a new channel. */
  forgetCurrentBlock(): void {
    this.#currentBlock = undefined;
  }

  /**
   * Decodes records up to and including EOS into `batch`, yielding the
   * batch when it is full or when reading on would wait.
   *
   * @param reader The bytes, positioned at a record.
   * @param batch Where records go.
   * @returns The full batches.
   * @throws {StreamFormatError} If a record is not valid.
   */
  async *records(
    reader: ByteReader,
    batch: RecordBatch,
  ): AsyncGenerator<MigrationRecord[]> {
    while (true) {
      if (batch.full) yield batch.take();
      const need = this.size(reader);
      if (need > reader.buffered) {
        yield* batch.flush();
        if (!await reader.ensure(need)) {
          throw reader.endError(need, "a RAM record");
        }
        continue; // measure again: the bytes that came may reveal more
      }
      const record = this.decode(reader);
      if (record.type === "mem-size") {
        yield* this.#blockList(reader, record.total, batch);
        continue;
      }
      if (record.type === "ram-compressed") {
        record.page = await inflatePage(
          record.data,
          this.#pageSize,
          reader.offset - record.data.byteLength,
        );
      }
      batch.push(record);
      if (record.type === "ram-eos") return;
    }
  }

  /**
   * How many buffered bytes the next record needs before it can be
   * decoded synchronously (a lower bound while its header is incomplete).
   * A header that {@linkcode RamRecordDecoder.decode} refuses from the
   * bytes seen so far needs no more, so it fails where it is instead of
   * waiting for a payload that may never come.
   *
   * @param reader The bytes.
   * @returns The size in bytes.
   */
  size(reader: ByteReader): number {
    if (reader.buffered < 8) return 8;
    const pageSize = this.#pageSize;
    const low = reader.peekUint32(4);
    const flags = low & (pageSize - 1);
    const kind = flags & ~RAM_SAVE_FLAG.CONTINUE;
    if ((PAGE_CARRIERS & kind) === 0 || (kind & (kind - 1)) !== 0) return 8;
    let size = 8;
    let block = this.#currentBlock;
    if ((flags & RAM_SAVE_FLAG.CONTINUE) === 0) {
      if (reader.buffered < 9) return 9;
      size += 1 + reader.peekUint8(8);
      if (reader.buffered < size) return size;
      block = this.#blocks.get(
        TEXT.decode(reader.peek(size).subarray(9, size)),
      );
    }
    const offset = reader.peekUint32(0) * 0x1_0000_0000 +
      ((low & ~(pageSize - 1)) >>> 0);
    if (block === undefined || offset + pageSize > block.usedLength) {
      return size;
    }
    return payloadSize(reader, kind, size, pageSize);
  }

  /**
   * Decodes one record whose bytes {@linkcode RamRecordDecoder.size} said
   * are buffered.
   *
   * @param reader The bytes.
   * @returns The record; page bytes are views into the reader's buffer
   *   where they lie in one chunk.
   * @throws {StreamFormatError} If the record is not valid.
   */
  decode(reader: ByteReader): RamRecord | MemSizeWord {
    const at = reader.offset;
    const high = reader.takeUint32();
    const low = reader.takeUint32();
    const pageSize = this.#pageSize;
    const flags = low & (pageSize - 1);
    const offset = high * 0x1_0000_0000 + ((low & ~(pageSize - 1)) >>> 0);
    const kind = flags & ~RAM_SAVE_FLAG.CONTINUE;
    const continued = (flags & RAM_SAVE_FLAG.CONTINUE) !== 0;
    if (high >= 0x20_0000) throw ramRecordError(at, "the address exceeds 2^53");
    if (
      kind === RAM_SAVE_FLAG.EOS || kind === RAM_SAVE_FLAG.MEM_SIZE ||
      kind === RAM_SAVE_FLAG.MULTIFD_FLUSH
    ) {
      return controlRecord(at, flags, offset);
    }
    if (
      kind !== RAM_SAVE_FLAG.ZERO && kind !== RAM_SAVE_FLAG.PAGE &&
      kind !== RAM_SAVE_FLAG.XBZRLE && kind !== RAM_SAVE_FLAG.COMPRESS_PAGE
    ) {
      throw unsupportedFlags(at, flags);
    }
    const block = continued
      ? this.#continuedBlock(at)
      : this.#namedBlock(reader, at);
    if (offset + pageSize > block.usedLength) {
      throw pastBlockEnd(at, offset, block);
    }
    const idstr = block.idstr;
    switch (kind) {
      case RAM_SAVE_FLAG.ZERO: {
        const fill = reader.takeUint8();
        return { type: "ram-zero", block: idstr, offset, fill, continued };
      }
      case RAM_SAVE_FLAG.PAGE: {
        const data = reader.take(pageSize);
        return { type: "ram-page", block: idstr, offset, data, continued };
      }
      case RAM_SAVE_FLAG.XBZRLE: {
        const delta = xbzrleDelta(reader, at, pageSize);
        return { type: "ram-xbzrle", block: idstr, offset, delta, continued };
      }
      default: {
        const data = compressedData(reader, at, pageSize);
        return {
          type: "ram-compressed",
          block: idstr,
          offset,
          data,
          continued,
        };
      }
    }
  }

  /**
   * Decodes the block list of a MEM_SIZE record, entry by entry, and skips
   * each mapped-ram block's bitmap and pages region, which the stream
   * jumps over (mapped-ram readers take the pages from their fixed offsets
   * instead).
   */
  async *#blockList(
    reader: ByteReader,
    total: number,
    batch: RecordBatch,
  ): AsyncGenerator<MigrationRecord[]> {
    const blocks: RamBlockInfo[] = [];
    const format: DecodeRamBlockEntryOptions = {
      total,
      previous: blocks,
      pageSize: this.#pageSize,
      pageSizeSummary: this.#pageSizeSummary,
      ignoreShared: this.#capabilities.has("x-ignore-shared"),
      mappedRam: this.#capabilities.has("mapped-ram"),
    };
    let sum = 0;
    while (sum < total) {
      yield* batch.flushIfWaiting(reader, 1);
      const { block } = await readStep(
        reader,
        MAX_RAM_BLOCK_ENTRY_SIZE,
        (bytes, offset, ended) =>
          decodeRamBlockEntry(bytes, { ...format, offset, ended }),
      );
      if (block.mappedRam !== undefined) {
        const resume = block.mappedRam.pagesOffset + block.usedLength;
        await reader.skip(
          resume - reader.offset,
          `the pages of block "${block.idstr}"`,
        );
      }
      sum += block.usedLength;
      blocks.push(block);
      this.#blocks.set(block.idstr, block);
    }
    batch.push({ type: "ram-mem-size", blocks });
  }

  #continuedBlock(at: number): RamBlockInfo {
    const block = this.#currentBlock;
    if (block === undefined) {
      throw ramRecordError(
        at,
        "flag CONTINUE is set but no block was named before",
      );
    }
    return block;
  }

  #namedBlock(reader: ByteReader, at: number): RamBlockInfo {
    const nameAt = reader.offset;
    const name = TEXT.decode(reader.take(reader.takeUint8()));
    const block = this.#blocks.get(name);
    if (block === undefined) {
      throw ramRecordError(
        at,
        `block "${name}" was never announced in the block list`,
        nameAt,
      );
    }
    this.#currentBlock = block;
    return block;
  }
}

/** The size of a record whose header (`size` bytes) names a valid page. */
function payloadSize(
  reader: ByteReader,
  kind: number,
  size: number,
  pageSize: number,
): number {
  switch (kind) {
    case RAM_SAVE_FLAG.ZERO:
      return size + 1;
    case RAM_SAVE_FLAG.PAGE:
      return size + pageSize;
    case RAM_SAVE_FLAG.XBZRLE: {
      if (reader.buffered < size + 3) return size + 3;
      const bytes = reader.peek(size + 3);
      const length = (bytes[size + 1]! << 8) | bytes[size + 2]!;
      if (bytes[size] !== 0x01 || length > pageSize) return size + 3;
      return size + 3 + length;
    }
    default: {
      if (reader.buffered < size + 4) return size + 4;
      const length = reader.peekUint32(size);
      if (length > compressBound(pageSize)) return size + 4;
      return size + 4 + length;
    }
  }
}

/** EOS, MULTIFD_FLUSH or the MEM_SIZE word: no block, no payload. */
function controlRecord(
  at: number,
  flags: number,
  offset: number,
): RamRecord | MemSizeWord {
  const kind = flags & ~RAM_SAVE_FLAG.CONTINUE;
  if (kind !== flags) throw badFlags(at, flags);
  if (kind === RAM_SAVE_FLAG.MEM_SIZE) {
    return { type: "mem-size", total: offset };
  }
  if (offset !== 0) {
    throw ramRecordError(
      at,
      `${ramSaveFlagNames(kind)} record carries address ${hex(offset)}`,
    );
  }
  return kind === RAM_SAVE_FLAG.EOS
    ? { type: "ram-eos" }
    : { type: "ram-multifd-flush" };
}

function xbzrleDelta(
  reader: ByteReader,
  at: number,
  pageSize: number,
): Uint8Array {
  const encodingAt = reader.offset;
  const encoding = reader.takeUint8();
  if (encoding !== 0x01) {
    throw ramRecordError(
      at,
      `XBZRLE encoding byte ${hex(encoding, 2)} is not 0x01`,
      encodingAt,
    );
  }
  const lengthAt = reader.offset;
  const length = reader.takeUint16();
  if (length > pageSize) {
    throw ramRecordError(
      at,
      `XBZRLE length ${length} exceeds the page size ${pageSize}`,
      lengthAt,
    );
  }
  const deltaAt = reader.offset;
  const delta = reader.take(length);
  checkXbzrleDelta(delta, pageSize, deltaAt);
  return delta;
}

function compressedData(
  reader: ByteReader,
  at: number,
  pageSize: number,
): Uint8Array {
  const lengthAt = reader.offset;
  const length = reader.takeUint32();
  const bound = compressBound(pageSize);
  if (length > bound) {
    throw ramRecordError(
      at,
      `compressed length ${length} exceeds zlib's bound ${bound} for one page`,
      lengthAt,
    );
  }
  return reader.take(length);
}

/** zlib's `compressBound()`: the most a `size`-byte input deflates to. */
function compressBound(size: number): number {
  return size + (size >>> 12) + (size >>> 14) + (size >>> 25) + 13;
}

function hex(value: number, digits = 1): string {
  return `0x${value.toString(16).padStart(digits, "0")}`;
}

/** The error for a RAM record that starts at `at`. */
function ramRecordError(
  at: number,
  what: string,
  offset: number = at,
): StreamFormatError {
  return new StreamFormatError(
    `Cannot decode RAM record at offset ${at}: ${what}`,
    { offset },
  );
}

/** The error for RAM record flags that make no valid combination. */
function badFlags(at: number, flags: number): StreamFormatError {
  return ramRecordError(
    at,
    `flags ${hex(flags, 3)} (${
      ramSaveFlagNames(flags)
    }) are not a valid combination`,
  );
}

function unsupportedFlags(at: number, flags: number): StreamFormatError {
  if (flags & RAM_SAVE_FLAG.HOOK) {
    return ramRecordError(
      at,
      "flag HOOK belongs to RDMA migration, which is not supported",
    );
  }
  return badFlags(at, flags);
}

function pastBlockEnd(
  at: number,
  offset: number,
  block: RamBlockInfo,
): StreamFormatError {
  return ramRecordError(
    at,
    `page offset ${hex(offset)} lies past the end of block "${block.idstr}" (${
      hex(block.usedLength)
    } bytes)`,
  );
}

const TEXT = new TextDecoder();
