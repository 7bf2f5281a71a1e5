import { NotSupportedError } from "../errors.ts";
import { isZeroPage } from "../bytes/is_zero_page.ts";
import {
  MappedRamWriter,
  type MappedRamWriterOptions,
} from "../mapped_ram/mapped_ram_writer.ts";
import { RamImage } from "../ram/ram_image.ts";
import type { RamBlockInfo } from "../ram/ram_record.ts";
import type { RandomAccessFile } from "../transport/transport.ts";
import type { MigrationDecoderOptions } from "../wire/migration_decoder.ts";
import { MigrationDecoderStream } from "../wire/migration_decoder_stream.ts";
import type {
  ConfigurationRecord,
  HeaderRecord,
  MigrationRecord,
  SectionStartRecord,
} from "../wire/migration_record.ts";
import { MAPPED_RAM } from "./_mapped_ram_file.ts";
import { MappedRamEncoderStream } from "../mapped_ram/mapped_ram_encoder_stream.ts";

/** Options for {@linkcode convertStreamToMappedRam}. */
export interface ConvertStreamToMappedRamOptions {
  /**
   * Decoder options for the input stream; `kind` defaults to `"file"`.
   *
   * @default {{}}
   */
  decoder?: MigrationDecoderOptions;
  /**
   * Writer options for the output file (the page size comes from the
   * stream).
   *
   * @default {{}}
   */
  writer?: Omit<MappedRamWriterOptions, "pageSize">;
}

/** What {@linkcode convertStreamToMappedRam} wrote. */
export interface ConvertStreamToMappedRamResult {
  /** The blocks as laid out in the file, each with its `mappedRam` header. */
  blocks: RamBlockInfo[];
  /** The file's size: where the stream ends. */
  size: number;
  /** Pages stored (bitmap bits set). */
  storedPages: number;
  /** Pages left zero (bitmap bits clear). */
  zeroPages: number;
  /**
   * Commands of the input left out, in order: OPEN_RETURN_PATH and PING
   * concern the channel, not the guest, and a file has no return path.
   */
  droppedCommands: string[];
}

/**
 * Converts a QEMU migration stream (e.g. a `migrate "exec:cat > FILE"`
 * recording) into a mapped-ram file, as QEMU 9.0+ writes with the
 * `mapped-ram` capability.
 *
 * The stream is decoded completely (device state walked through its
 * vmdesc) and its RAM records applied in order, so the file holds the RAM
 * the destination would have ended with, whatever mix of ZERO, PAGE,
 * XBZRLE and compressed records carried it. The file has the same
 * CONFIGURATION with `mapped-ram` added, the same RAM section id and
 * blocks, a START section with the block list and each block's region, a
 * PART and an END section holding only EOS, then the device sections, EOF
 * and vmdesc carried over byte for byte.
 *
 * @example Usage
 * ```ts
 * import {
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
 *   const result = await convertStreamToMappedRam(ReadableStream.from([stream]), file, {
 *     decoder: { vmdesc: false },
 *   });
 *   assert.equal(result.storedPages, 1);
 *   assert.equal(result.blocks[0]!.mappedRam!.pagesOffset, 0x100000);
 * } finally {
 *   await file.close();
 *   await Deno.remove(path);
 * }
 * ```
 *
 * @param readable The stream bytes.
 * @param file Where the mapped-ram file goes; cut to the writer's `offset`
 *   first, not closed.
 * @param options Decoder and writer options.
 * @returns What was written.
 * @throws {StreamFormatError} If the stream is not valid.
 * @throws {NotSupportedError} If the stream cannot become a mapped-ram
 *   file: no CONFIGURATION, already mapped-ram, postcopy or COLO commands,
 *   or blocks with their own page size.
 */
export async function convertStreamToMappedRam(
  readable: ReadableStream<Uint8Array>,
  file: RandomAccessFile,
  options: ConvertStreamToMappedRamOptions = {},
): Promise<ConvertStreamToMappedRamResult> {
  const decoderStream = new MigrationDecoderStream({
    kind: "file",
    ...options.decoder,
  });
  const decoder = decoderStream.decoder;
  let header: HeaderRecord | undefined;
  let configuration: ConfigurationRecord | undefined;
  let ramSection: SectionStartRecord | undefined;
  let blocks: RamBlockInfo[] = [];
  let image: RamImage | undefined;
  const tail: MigrationRecord[] = [];
  const droppedCommands: string[] = [];
  const refuse = (why: string): never => {
    throw new NotSupportedError(
      `Cannot convert stream to mapped-ram: ${why}`,
    );
  };
  for await (const batch of readable.pipeThrough(decoderStream)) {
    for (const record of batch) {
      switch (record.type) {
        case "header":
          header = record;
          break;
        case "configuration":
          if (record.capabilities?.includes(MAPPED_RAM)) {
            refuse("it is already a mapped-ram stream");
          }
          configuration = record;
          break;
        case "command":
          if (
            record.command === "OPEN_RETURN_PATH" || record.command === "PING"
          ) {
            droppedCommands.push(record.command);
          } else {
            refuse(
              `command ${record.command} belongs to ${
                record.command === "ENABLE_COLO" ? "COLO" : "postcopy"
              }, which mapped-ram excludes`,
            );
          }
          break;
        case "section-start":
          ramSection = record;
          break;
        case "ram-mem-size":
          for (const block of record.blocks) {
            if (block.pageSize !== undefined) {
              refuse(
                `block "${block.idstr}" has its own page size, which only postcopy-ram sends`,
              );
            }
          }
          blocks = record.blocks;
          image = new RamImage({ pageSize: decoder.pageSize });
          image.addBlocks(blocks);
          break;
        case "ram-zero":
        case "ram-page":
        case "ram-xbzrle":
        case "ram-compressed":
          image!.apply(record);
          break;
        case "section-footer":
          if (record.sectionId !== ramSection?.sectionId) tail.push(record);
          break;
        case "section-full":
        case "device-state":
        case "device-tail":
        case "eof":
        case "vmdesc":
          tail.push(record);
          break;
        default:
          // EOS, PART and END headers and MULTIFD_FLUSH only frame the RAM
          // pages, which the file lays out anew.
          break;
      }
    }
  }
  if (header === undefined || configuration === undefined) {
    return refuse(
      "it has no CONFIGURATION section to announce the mapped-ram capability in",
    );
  }
  if (ramSection === undefined || image === undefined) {
    return refuse("it has no RAM START section with a block list");
  }
  const pageSize = decoder.pageSize;
  const ram = image;
  const section = ramSection.sectionId;
  const counts = { stored: 0, zero: 0 };
  async function* records(): AsyncGenerator<MigrationRecord[]> {
    yield [
      header!,
      configuration!,
      ramSection!,
      { type: "ram-mem-size", blocks },
      { type: "ram-eos" },
      { type: "section-footer", sectionId: section },
      { type: "section-part", sectionId: section },
    ];
    for (const block of blocks) {
      let offset = 0;
      for (const chunk of ram.chunks(block.idstr)) {
        const batch: MigrationRecord[] = [];
        for (let at = 0; at < chunk.byteLength; at += pageSize) {
          const data = chunk.subarray(at, at + pageSize);
          if (isZeroPage(data)) {
            counts.zero++;
          } else {
            counts.stored++;
            batch.push({
              type: "ram-page",
              block: block.idstr,
              offset: offset + at,
              data,
            });
          }
        }
        offset += chunk.byteLength;
        if (batch.length > 0) yield batch;
      }
    }
    yield [
      { type: "ram-eos" },
      { type: "section-footer", sectionId: section },
      { type: "section-end", sectionId: section },
      { type: "ram-eos" },
      { type: "section-footer", sectionId: section },
      ...tail,
    ];
  }
  const writer = new MappedRamWriter(file, { ...options.writer, pageSize });
  await ReadableStream.from(records())
    .pipeThrough(new MappedRamEncoderStream())
    .pipeTo(writer);
  return {
    blocks: writer.blocks,
    size: writer.position,
    storedPages: counts.stored,
    zeroPages: counts.zero,
    droppedCommands,
  };
}
