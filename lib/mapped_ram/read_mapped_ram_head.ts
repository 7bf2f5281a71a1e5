/**
 * The head of a migration stream stored in a file, read through the stream
 * decoder up to its RAM START section: what precedes a mapped-ram file's
 * block list, and what tells a mapped-ram file from a plain stream.
 *
 * ```
 * "QEVM" be32 3        header
 * CONFIGURATION        machine, capabilities (mapped-ram lists "mapped-ram")
 * commands             optional (OPEN_RETURN_PATH, PING, ...)
 * RAM START header     section id, "ram", instance, version
 * MEM_SIZE ...         the block list: memSizeOffset points here
 * ```
 *
 * @module
 */

import { StreamFormatError } from "../errors.ts";
import type { RandomAccessFile } from "../transport/transport.ts";
import type { MigrationDecoderOptions } from "../wire/migration_decoder.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import { decodeFirstRecords } from "./_decode_first_records.ts";

/** Options for {@linkcode readMappedRamHead}. */
export interface ReadMappedRamHeadOptions {
  /**
   * File offset where the stream starts (QEMU's `file:PATH,offset=N`).
   *
   * @default {0}
   */
  offset?: number;
  /**
   * Decoder options for the head.
   *
   * @default {{}}
   */
  decoder?: MigrationDecoderOptions;
}

/** What precedes the block list of a mapped-ram file. */
export interface MappedRamHead {
  /**
   * The records in file order: the header, the CONFIGURATION, any
   * commands, and last the RAM START section header.
   */
  records: MigrationRecord[];
  /** File offset of the MEM_SIZE word that opens the block list. */
  memSizeOffset: number;
  /** The target page size. */
  pageSize: number;
  /** The capabilities the CONFIGURATION announced. */
  capabilities: ReadonlySet<string>;
}

/**
 * Reads the head of a mapped-ram file: every record up to and including
 * the RAM START section header, and where the block list starts.
 *
 * @example Usage
 * ```ts
 * import { encodeMigrationRecords, openRandomAccessFile, readMappedRamHead } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile();
 * const file = await openRandomAccessFile(path);
 * try {
 *   const head = encodeMigrationRecords([
 *     { type: "header", version: 3 },
 *     { type: "configuration", machine: "pc-q35-10.0", capabilities: ["mapped-ram"] },
 *     { type: "section-start", sectionId: 2, idstr: "ram", instanceId: 0, versionId: 4 },
 *   ]);
 *   await file.writeAt(0, head);
 *   await file.writeAt(head.byteLength, new Uint8Array(8)); // where MEM_SIZE goes
 *   const read = await readMappedRamHead(file);
 *   assert.deepEqual(read.records.map((r) => r.type), ["header", "configuration", "section-start"]);
 *   assert.equal(read.memSizeOffset, head.byteLength);
 *   assert.ok(read.capabilities.has("mapped-ram"));
 * } finally {
 *   await file.close();
 *   await Deno.remove(path);
 * }
 * ```
 *
 * @param file The file; read only, not closed.
 * @param options Stream offset and decoder options.
 * @returns The head.
 * @throws {StreamFormatError} If the stream does not decode, ends or holds
 *   something else before its RAM START section, or its CONFIGURATION does
 *   not announce `mapped-ram`.
 */
export async function readMappedRamHead(
  file: RandomAccessFile,
  options: ReadMappedRamHeadOptions = {},
): Promise<MappedRamHead> {
  const offset = options.offset ?? 0;
  const { records, end, decoder } = await decodeFirstRecords(
    file,
    { offset, decoder: options.decoder ?? {} },
    (record) =>
      record.type !== "header" && record.type !== "configuration" &&
      record.type !== "command",
  );
  checkHead(records, decoder.capabilities, offset, end);
  return {
    records,
    memSizeOffset: end,
    pageSize: decoder.pageSize,
    capabilities: decoder.capabilities,
  };
}

function checkHead(
  records: readonly MigrationRecord[],
  capabilities: ReadonlySet<string>,
  offset: number,
  end: number,
): void {
  const last = records.at(-1);
  if (last?.type !== "section-start") {
    throw new StreamFormatError(
      `Cannot read mapped-ram file: ${
        last === undefined || last.type === "header" ||
          last.type === "configuration" || last.type === "command"
          ? "the stream ends before its RAM START section"
          : `a "${last.type}" record comes before the RAM START section`
      }`,
      { offset: end },
    );
  }
  if (!capabilities.has("mapped-ram")) {
    throw new StreamFormatError(
      `Cannot read mapped-ram file at offset ${offset + 8}: ${
        records.some((record) => record.type === "configuration")
          ? 'its CONFIGURATION does not list the "mapped-ram" capability (it is a plain migration stream)'
          : "it has no CONFIGURATION section to announce mapped-ram"
      }`,
      { offset: offset + 8 },
    );
  }
}
