import { StreamFormatError } from "../errors.ts";
import { isZeroPage } from "../bytes/is_zero_page.ts";
import type { MappedRamReader } from "../mapped_ram/mapped_ram_reader.ts";
import type { RamBlockInfo } from "../ram/ram_record.ts";
import { ByteCounterStream } from "../streams/byte_counter_stream.ts";
import type { RandomAccessFile } from "../transport/transport.ts";
import type { MigrationDecoderOptions } from "../wire/migration_decoder.ts";
import { MigrationEncoderStream } from "../wire/migration_encoder_stream.ts";
import type {
  ConfigurationRecord,
  MigrationRecord,
} from "../wire/migration_record.ts";
import {
  decodeMappedRamFile,
  MAPPED_RAM,
  type MappedRamFileHead,
  openMappedRamFile,
  type PlacedRecord,
} from "./_mapped_ram_file.ts";
import { rebuildStream, type StreamFrame } from "./_rebuilt_stream.ts";

/** Options for {@linkcode convertMappedRamToStream}. */
export interface ConvertMappedRamToStreamOptions {
  /**
   * File offset where the mapped-ram stream starts (QEMU's
   * `file:PATH,offset=N`).
   *
   * @default {0}
   */
  offset?: number;
  /**
   * Decoder options for the stream around the RAM; `kind` defaults to
   * `"file"`.
   *
   * @default {{}}
   */
  decoder?: MigrationDecoderOptions;
  /**
   * Leave `writable` open when done.
   *
   * @default {false}
   */
  preventClose?: boolean;
  /** Aborts the conversion; `writable` is then aborted with the reason. */
  signal?: AbortSignal;
}

/** What {@linkcode convertMappedRamToStream} wrote. */
export interface ConvertMappedRamToStreamResult {
  /** The blocks of the stream's block list (no mapped-ram headers). */
  blocks: RamBlockInfo[];
  /** Bytes written. */
  bytes: number;
  /** PAGE records written. */
  pages: number;
  /** ZERO records written: bits clear, or stored pages that are all zero. */
  zeroPages: number;
  /**
   * Commands of the file left out, in order: they concern the channel the
   * file was written over, and QEMU 7.2 knows none of QEMU 10.0's
   * SWITCHOVER_START.
   */
  droppedCommands: string[];
}

/**
 * Converts a mapped-ram file into a plain migration stream that QEMU 7.2
 * can load (e.g. with `-incoming "exec:cat FILE"`).
 *
 * The stream has the file's header and CONFIGURATION without `mapped-ram`
 * (and without a capabilities subsection when no capability is left), the
 * RAM START section with the block list alone, one PART section with a
 * record for every page of every block in order (ZERO when the bitmap bit
 * is clear or the stored page is all zeros, PAGE otherwise), an END section
 * with only EOS, then the device sections, EOF and vmdesc exactly as in the
 * file. Only records QEMU 7.2 knows are written.
 *
 * The file is checked as a mapped-ram reader must (header version, page
 * size, alignment, bitmap and pages inside the file); page-carrying records
 * inside its RAM sections are refused, since a mapped-ram loader refuses
 * them.
 *
 * @example Usage
 * ```ts
 * import {
 *   analyzeMigrationStream,
 *   convertMappedRamToStream,
 *   convertStreamToMappedRam,
 *   encodeMigrationRecords,
 *   openRandomAccessFile,
 * } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const stream = encodeMigrationRecords([
 *   { type: "header", version: 3 },
 *   { type: "configuration", machine: "pc-i440fx-7.2" },
 *   { type: "section-start", sectionId: 2, idstr: "ram", instanceId: 0, versionId: 4 },
 *   { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 8192 }] },
 *   { type: "ram-page", block: "pc.ram", offset: 4096, data: new Uint8Array(4096).fill(1) },
 *   { type: "ram-eos" },
 *   { type: "section-footer", sectionId: 2 },
 *   { type: "eof" },
 * ]);
 * const path = await Deno.makeTempFile();
 * const file = await openRandomAccessFile(path);
 * try {
 *   await convertStreamToMappedRam(ReadableStream.from([stream]), file, { decoder: { vmdesc: false } });
 *   const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
 *   const [result, { analysis }] = await Promise.all([
 *     convertMappedRamToStream(file, writable, { decoder: { vmdesc: false } }),
 *     analyzeMigrationStream(readable, { decoder: { vmdesc: false } }),
 *   ]);
 *   assert.deepEqual([result.pages, result.zeroPages], [1, 1]);
 *   assert.deepEqual(analysis.capabilities, []);
 *   assert.equal(analysis.ram.blocks[0]!.normal, 1);
 * } finally {
 *   await file.close();
 *   await Deno.remove(path);
 * }
 * ```
 *
 * @param file The mapped-ram file; read only, not closed.
 * @param writable Where the stream goes; closed at the end unless
 *   `preventClose` is set.
 * @param options Stream offset, decoder options, close and abort control.
 * @returns What was written.
 * @throws {StreamFormatError} If the file is not a valid mapped-ram file;
 *   the error's `offset` is a file offset.
 */
export async function convertMappedRamToStream(
  file: RandomAccessFile,
  writable: WritableStream<Uint8Array>,
  options: ConvertMappedRamToStreamOptions = {},
): Promise<ConvertMappedRamToStreamResult> {
  const fileOptions = {
    ...(options.offset === undefined ? {} : { offset: options.offset }),
    ...(options.decoder === undefined ? {} : { decoder: options.decoder }),
  };
  const { head, reader } = await openMappedRamFile(file, fileOptions);
  const { tail, droppedCommands } = await readTail(
    decodeMappedRamFile(file, reader, fileOptions),
    head,
  );
  const blocks = reader.blocks.map(({ mappedRam: _, ...block }) => block);
  const frame: StreamFrame = {
    header: head.header,
    configuration: withoutMappedRam(head.configuration),
    ramSection: head.ramSection,
    blocks,
    tail,
  };
  const counts = { pages: 0, zero: 0 };
  const counter = new ByteCounterStream();
  await ReadableStream.from(rebuildStream(frame, everyPage(reader, counts)))
    .pipeThrough(new MigrationEncoderStream({ pageSize: reader.pageSize }))
    .pipeThrough(counter)
    .pipeTo(writable, {
      preventClose: options.preventClose ?? false,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
  return {
    blocks,
    bytes: counter.bytes,
    pages: counts.pages,
    zeroPages: counts.zero,
    droppedCommands,
  };
}

/**
 * Goes through the records of a mapped-ram file's stream and keeps those
 * after the RAM, and the names of the commands left out.
 *
 * @throws {StreamFormatError} If a page-carrying record is found.
 */
async function readTail(
  records: AsyncIterable<PlacedRecord>,
  head: MappedRamFileHead,
): Promise<{ tail: MigrationRecord[]; droppedCommands: string[] }> {
  const section = head.ramSection.sectionId;
  const tail: MigrationRecord[] = [];
  const droppedCommands: string[] = head.commands.map((record) =>
    record.type === "command" ? record.command : record.type
  );
  let afterRam = false;
  let start = head.memSizeOffset;
  for await (const { record, end } of records) {
    switch (record.type) {
      case "ram-zero":
      case "ram-page":
      case "ram-xbzrle":
      case "ram-compressed":
      case "ram-multifd-flush":
        throw new StreamFormatError(
          `Cannot convert mapped-ram file: a "${record.type}" record lies between offsets ${start} and ${end}; a mapped-ram file keeps pages at fixed offsets only`,
          { offset: start },
        );
      case "command":
        if (afterRam) droppedCommands.push(record.command);
        break;
      case "section-footer":
        if (afterRam || record.sectionId !== section) tail.push(record);
        break;
      case "section-full":
      case "device-state":
      case "device-tail":
      case "eof":
      case "vmdesc":
        afterRam = true;
        tail.push(record);
        break;
      default:
        // The header, CONFIGURATION, RAM sections, block list and EOS
        // records are written anew.
        break;
    }
    start = end;
  }
  return { tail, droppedCommands };
}

/**
 * Yields a record for every page of every block: PAGE for a stored page
 * that is not all zeros, ZERO otherwise; counts both.
 */
async function* everyPage(
  reader: MappedRamReader,
  counts: { pages: number; zero: number },
): AsyncGenerator<MigrationRecord[]> {
  for await (const batch of reader.records({ zeroRecords: true })) {
    yield batch.map((record) => {
      if (record.type === "ram-page" && !isZeroPage(record.data)) {
        counts.pages++;
        return record;
      }
      counts.zero++;
      return {
        type: "ram-zero",
        block: record.block,
        offset: record.offset,
        fill: 0,
      };
    });
  }
}

function withoutMappedRam(
  configuration: ConfigurationRecord,
): ConfigurationRecord {
  const { capabilities, ...rest } = configuration;
  const left = (capabilities ?? []).filter((name) => name !== MAPPED_RAM);
  return left.length > 0 ? { ...rest, capabilities: left } : rest;
}
