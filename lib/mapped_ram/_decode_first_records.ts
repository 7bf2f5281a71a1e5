/**
 * Decoding the first records of a stream stored in a file, one record per
 * batch: the decoder then yields each record before it reads the next one,
 * so the reader's offset after a record is exactly where the next starts
 * (after the RAM START header: where a mapped-ram block list starts).
 * Private to lib/mapped_ram/.
 *
 * @module
 */

import { ByteReader } from "../streams/byte_reader.ts";
import type { RandomAccessFile } from "../transport/transport.ts";
import {
  MigrationDecoder,
  type MigrationDecoderOptions,
} from "../wire/migration_decoder.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import { createMappedRamStreamReadable } from "./mapped_ram_stream_readable.ts";

/**
 * Decodes the stream in `file`, one record per batch, until a record
 * passes `stop` or the stream ends; returns the records with the offset
 * right after the last.
 *
 * @param file The file.
 * @param options Where the stream starts, decoder options.
 * @param stop Whether to stop after this record.
 * @returns The records, the offset after them, and the decoder.
 */
export async function decodeFirstRecords(
  file: RandomAccessFile,
  options: { offset: number; decoder: MigrationDecoderOptions },
  stop: (record: MigrationRecord) => boolean,
): Promise<
  { records: MigrationRecord[]; end: number; decoder: MigrationDecoder }
> {
  const { offset } = options;
  const reader = new ByteReader(
    createMappedRamStreamReadable(file, [], { offset, chunkBytes: 4096 }),
    offset,
  );
  const decoder = new MigrationDecoder({
    ...options.decoder,
    startOffset: offset,
    batchRecords: 1,
  });
  const records: MigrationRecord[] = [];
  try {
    for await (const batch of decoder.decode(reader)) {
      records.push(...batch);
      if (batch.some(stop)) break;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return { records, end: reader.offset, decoder };
}
