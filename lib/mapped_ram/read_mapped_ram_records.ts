/**
 * Loading a mapped-ram file the way a stream loader takes a stream,
 * without turning it into one: the records come in stream order, the
 * pages straight from their fixed offsets.
 *
 * ```
 * head        the decoder reads up to the RAM START header: header,
 *             CONFIGURATION (listing "mapped-ram"), commands, RAM START
 * block list  MappedRamReader.open(): entries, headers, bitmaps (positioned reads)
 * pages       every run of set bits, read in chunks of `readBytes`
 * the rest    the decoder over the whole stream with the block regions
 *             delivered as zeros (never read), from the block list on:
 *             EOS, footers, PART/END sections, device state, EOF, vmdesc
 * ```
 *
 * @module
 */

import { StreamFormatError } from "../errors.ts";
import { isPageCarrier, type RamBlockInfo } from "../ram/ram_record.ts";
import { ByteReader } from "../streams/byte_reader.ts";
import type { RandomAccessFile } from "../transport/transport.ts";
import {
  MigrationDecoder,
  type MigrationDecoderOptions,
} from "../wire/migration_decoder.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import { MAPPED_RAM_LOAD_BUF_SIZE } from "./mapped_ram_layout.ts";
import { MappedRamReader } from "./mapped_ram_reader.ts";
import { createMappedRamStreamReadable } from "./mapped_ram_stream_readable.ts";
import { readMappedRamHead } from "./read_mapped_ram_head.ts";

/** Options for {@linkcode readMappedRamRecords}. */
export interface ReadMappedRamRecordsOptions {
  /**
   * File offset where the stream starts (QEMU's `file:PATH,offset=N`).
   *
   * @default {0}
   */
  offset?: number;
  /**
   * Decoder options for the stream around the RAM.
   *
   * @default {{ kind: "file" }}
   */
  decoder?: MigrationDecoderOptions;
  /**
   * Largest read of pages at once; each read becomes one batch.
   *
   * @default {MAPPED_RAM_LOAD_BUF_SIZE}
   */
  readBytes?: number;
}

/** Records per batch of what follows the pages. */
const BATCH_RECORDS = 512;

/**
 * The records of a mapped-ram file, in batches, in the order a stream
 * loader expects them: the header, CONFIGURATION and RAM START, the block
 * list (`ram-mem-size`, each block with its `mappedRam` header), then a
 * `ram-page` record for every page the bitmaps say the file holds (none
 * for the others: they are zero), then the rest of the stream (EOS and
 * footers, PART and END sections, device state, EOF, vmdesc) decoded as
 * `options.decoder` says (by default as a file: device sections walked
 * through the vmdesc, nothing may follow it).
 *
 * Pages are read in runs of set bits, in chunks of at most `readBytes`
 * (QEMU's loader uses 1 MiB); each chunk is one batch whose records' `data`
 * are views into the chunk. A batch's views are valid only until the next
 * batch is requested: apply or copy them first.
 *
 * Commands in the file are left out, as when it is converted to a stream:
 * they concern the channel the file was written over (a return path, a
 * PING), not the guest. The file is checked as a mapped-ram loader must:
 * header version, page size, alignment, bitmaps and pages inside the file,
 * the same block list in the stream as at the fixed offsets, and no page
 * records in the stream.
 *
 * @example Usage
 * ```ts
 * import {
 *   encodeMigrationRecords,
 *   MappedRamEncoderStream,
 *   MappedRamWriter,
 *   type MigrationRecord,
 *   openRandomAccessFile,
 *   readMappedRamRecords,
 * } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const stream: MigrationRecord[] = [
 *   { type: "header", version: 3 },
 *   { type: "configuration", machine: "pc-i440fx-7.2" },
 *   { type: "section-start", sectionId: 2, idstr: "ram", instanceId: 0, versionId: 4 },
 *   { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 8192 }] },
 *   { type: "ram-page", block: "pc.ram", offset: 4096, data: new Uint8Array(4096).fill(1) },
 *   { type: "ram-eos" },
 *   { type: "section-footer", sectionId: 2 },
 *   { type: "eof" },
 * ];
 * const path = await Deno.makeTempFile();
 * const file = await openRandomAccessFile(path);
 * try {
 *   await ReadableStream.from([stream])
 *     .pipeThrough(new MappedRamEncoderStream())
 *     .pipeTo(new MappedRamWriter(file));
 *   const batches = await Array.fromAsync(
 *     readMappedRamRecords(file, { decoder: { vmdesc: false } }),
 *   );
 *   assert.deepEqual(batches.flat().map((record) => record.type), [
 *     "header", "configuration", "section-start", "ram-mem-size",
 *     "ram-page", "ram-eos", "section-footer", "eof",
 *   ]);
 * } finally {
 *   await file.close();
 *   await Deno.remove(path);
 * }
 * ```
 *
 * @param file The mapped-ram file; read only, not closed.
 * @param options Stream offset, decoder options and read size.
 * @returns The record batches; reading fails with a
 *   {@linkcode StreamFormatError} (its `offset` a file offset) if the file
 *   is not a valid mapped-ram file, and with a `RangeError` if `readBytes`
 *   is below the stream's page size.
 * @throws {RangeError} If an option is out of range.
 */
export function readMappedRamRecords(
  file: RandomAccessFile,
  options: ReadMappedRamRecordsOptions = {},
): ReadableStream<MigrationRecord[]> {
  const { offset = 0, readBytes = MAPPED_RAM_LOAD_BUF_SIZE } = options;
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new RangeError(
      `Cannot read mapped-ram records as offset must be a non-negative safe integer: received ${offset}`,
    );
  }
  if (!Number.isSafeInteger(readBytes) || readBytes < 1) {
    throw new RangeError(
      `Cannot read mapped-ram records as readBytes must be a positive integer: received ${readBytes}`,
    );
  }
  const decoder: MigrationDecoderOptions = {
    kind: "file",
    ...options.decoder,
  };
  return ReadableStream.from(records(file, { offset, readBytes, decoder }));
}

interface ReadOptions {
  offset: number;
  readBytes: number;
  decoder: MigrationDecoderOptions;
}

async function* records(
  file: RandomAccessFile,
  options: ReadOptions,
): AsyncGenerator<MigrationRecord[]> {
  const head = await readMappedRamHead(file, options);
  const reader = await MappedRamReader.open(file, head.memSizeOffset, {
    pageSize: head.pageSize,
    ignoreShared: head.capabilities.has("x-ignore-shared"),
    readBytes: options.readBytes,
  });
  // Commands concern the channel the file was written over, not the guest.
  const records = head.records.filter((record) => record.type !== "command");
  yield [...records, { type: "ram-mem-size", blocks: reader.blocks }];
  yield* reader.records();
  yield* rest(file, reader, options);
}

/**
 * Decodes the whole stream without reading the block regions, checks that
 * it lists the blocks the reader read, and yields what follows the list.
 */
async function* rest(
  file: RandomAccessFile,
  reader: MappedRamReader,
  options: ReadOptions,
): AsyncGenerator<MigrationRecord[]> {
  const blocks = reader.blocks;
  const bytes = new ByteReader(
    createMappedRamStreamReadable(file, blocks, { offset: options.offset }),
    options.offset,
  );
  const decoder = new MigrationDecoder({
    ...options.decoder,
    startOffset: options.offset,
    batchRecords: 1,
  });
  let listed = false;
  let start = options.offset;
  let batch: MigrationRecord[] = [];
  try {
    for await (const records of decoder.decode(bytes)) {
      for (const record of records) {
        if (listed) {
          checkRecord(record, start, bytes.offset);
          if (record.type !== "command") batch.push(record);
        } else if (record.type === "ram-mem-size") {
          checkBlocks(record.blocks, blocks, reader, bytes.offset);
          listed = true;
        }
        start = bytes.offset;
      }
      if (batch.length >= BATCH_RECORDS) {
        yield batch;
        batch = [];
      }
    }
    if (batch.length > 0) yield batch;
  } finally {
    await bytes.cancel().catch(() => {});
  }
}

/** Refuses a page record in the stream: a mapped-ram loader does. */
function checkRecord(record: MigrationRecord, start: number, end: number) {
  if (isPageCarrier(record) || record.type === "ram-multifd-flush") {
    throw new StreamFormatError(
      `Cannot read mapped-ram file: a "${record.type}" record lies between offsets ${start} and ${end}; a mapped-ram file keeps pages at fixed offsets only`,
      { offset: start },
    );
  }
}

function checkBlocks(
  decoded: readonly RamBlockInfo[],
  read: readonly RamBlockInfo[],
  reader: MappedRamReader,
  offset: number,
): void {
  const same = decoded.length === read.length &&
    decoded.every((block, i) => {
      const other = read[i]!;
      const x = block.mappedRam;
      const y = other.mappedRam;
      return block.idstr === other.idstr &&
        block.usedLength === other.usedLength && block.gpa === other.gpa &&
        x !== undefined && y !== undefined && x.version === y.version &&
        x.pageSize === y.pageSize && x.bitmapOffset === y.bitmapOffset &&
        x.pagesOffset === y.pagesOffset;
    });
  if (!same) {
    throw new StreamFormatError(
      `Cannot read mapped-ram file: the block list decoded as a stream differs from the one read at offset ${
        reader.summaries[0]?.headerOffset ?? offset
      }`,
      { offset },
    );
  }
}
