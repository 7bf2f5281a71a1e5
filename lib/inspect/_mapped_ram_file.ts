/**
 * Reading a whole mapped-ram file: the wire decoder handles the stream
 * around the RAM (header, CONFIGURATION, sections, device state, vmdesc),
 * the mapped-ram reader handles the block list and the pages.
 *
 * ```
 * pass 1  readMappedRamHead(): the records up to the RAM START section
 *         header, which ends where the MEM_SIZE word starts
 *         → MappedRamReader.open(file, that offset)
 * pass 2  decoder over the whole stream with every block region delivered
 *         as zeros (never read), so only the metadata costs reads
 * ```
 *
 * @module
 */

import { StreamFormatError } from "../errors.ts";
import { MappedRamReader } from "../mapped_ram/mapped_ram_reader.ts";
import { createMappedRamStreamReadable } from "../mapped_ram/mapped_ram_stream_readable.ts";
import { readMappedRamHead } from "../mapped_ram/read_mapped_ram_head.ts";
import type { RamBlockInfo } from "../ram/ram_record.ts";
import { ByteReader } from "../streams/byte_reader.ts";
import type { RandomAccessFile } from "../transport/transport.ts";
import {
  MigrationDecoder,
  type MigrationDecoderOptions,
} from "../wire/migration_decoder.ts";
import type {
  ConfigurationRecord,
  HeaderRecord,
  MigrationRecord,
  SectionStartRecord,
} from "../wire/migration_record.ts";

/** The capability that announces the mapped-ram layout. */
export const MAPPED_RAM = "mapped-ram";

/** Where the stream starts in the file, and how to decode it. */
export interface MappedRamFileOptions {
  /** File offset where the stream starts (QEMU's `file:PATH,offset=N`). */
  offset?: number;
  /** Decoder options for the stream around the RAM. */
  decoder?: MigrationDecoderOptions;
}

/** What precedes the block list of a mapped-ram file. */
export interface MappedRamFileHead {
  /** The stream header. */
  header: HeaderRecord;
  /** The CONFIGURATION section; it lists `mapped-ram`. */
  configuration: ConfigurationRecord;
  /** Commands before the RAM START section, in order. */
  commands: MigrationRecord[];
  /** The RAM START section header. */
  ramSection: SectionStartRecord;
  /** File offset of the MEM_SIZE word that opens the block list. */
  memSizeOffset: number;
  /** The target page size. */
  pageSize: number;
  /** Capabilities announced in the CONFIGURATION. */
  capabilities: string[];
}

/**
 * Reads the head of a mapped-ram file: everything up to the block list.
 *
 * @throws {StreamFormatError} If the file is no mapped-ram stream.
 */
export async function readMappedRamFileHead(
  file: RandomAccessFile,
  options: MappedRamFileOptions,
): Promise<MappedRamFileHead> {
  const head = await readMappedRamHead(file, options);
  const { records } = head;
  return {
    header: records[0] as HeaderRecord,
    configuration: records.find((record) =>
      record.type === "configuration"
    ) as ConfigurationRecord,
    commands: records.filter((record) => record.type === "command"),
    ramSection: records.at(-1) as SectionStartRecord,
    memSizeOffset: head.memSizeOffset,
    pageSize: head.pageSize,
    capabilities: [...head.capabilities],
  };
}

/**
 * Reads the head and the block list of a mapped-ram file.
 *
 * @throws {StreamFormatError} If the head or the block list is not valid.
 */
export async function openMappedRamFile(
  file: RandomAccessFile,
  options: MappedRamFileOptions,
): Promise<{ head: MappedRamFileHead; reader: MappedRamReader }> {
  const head = await readMappedRamFileHead(file, options);
  const reader = await MappedRamReader.open(file, head.memSizeOffset, {
    pageSize: head.pageSize,
    ignoreShared: head.capabilities.includes("x-ignore-shared"),
  });
  return { head, reader };
}

/** A record with the file offset right after it. */
export interface PlacedRecord {
  /** The record. */
  record: MigrationRecord;
  /** File offset right after the record (the decoder's position). */
  end: number;
}

/**
 * Decodes the whole stream of a mapped-ram file without reading the block
 * regions, checks that the decoder saw the block list the reader read, and
 * yields each record with its end offset.
 */
export async function* decodeMappedRamFile(
  file: RandomAccessFile,
  reader: MappedRamReader,
  options: MappedRamFileOptions,
): AsyncGenerator<PlacedRecord> {
  const offset = options.offset ?? 0;
  const blocks = reader.blocks;
  const byteReader = new ByteReader(
    createMappedRamStreamReadable(file, blocks, { offset }),
    offset,
  );
  const decoder = new MigrationDecoder({
    kind: "file",
    ...options.decoder,
    startOffset: offset,
    batchRecords: 1,
  });
  try {
    for await (const batch of decoder.decode(byteReader)) {
      for (const record of batch) {
        if (
          record.type === "ram-mem-size" && !sameBlocks(record.blocks, blocks)
        ) {
          throw new StreamFormatError(
            `Cannot read mapped-ram file: the block list decoded as a stream differs from the one read at offset ${
              reader.summaries[0]?.headerOffset ?? byteReader.offset
            }`,
            { offset: byteReader.offset },
          );
        }
        yield { record, end: byteReader.offset };
      }
    }
  } finally {
    await byteReader.cancel().catch(() => {});
  }
}

function sameBlocks(
  a: readonly RamBlockInfo[],
  b: readonly RamBlockInfo[],
): boolean {
  return a.length === b.length && a.every((block, i) => {
    const other = b[i]!;
    const x = block.mappedRam;
    const y = other.mappedRam;
    return block.idstr === other.idstr &&
      block.usedLength === other.usedLength && block.gpa === other.gpa &&
      x !== undefined && y !== undefined && x.version === y.version &&
      x.pageSize === y.pageSize && x.bitmapOffset === y.bitmapOffset &&
      x.pagesOffset === y.pagesOffset;
  });
}
