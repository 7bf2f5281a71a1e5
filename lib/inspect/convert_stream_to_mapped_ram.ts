import { NotSupportedError } from "../errors.ts";
import { isZeroPage } from "../bytes/is_zero_page.ts";
import { MappedRamEncoderStream } from "../mapped_ram/mapped_ram_encoder_stream.ts";
import {
  MappedRamWriter,
  type MappedRamWriterOptions,
} from "../mapped_ram/mapped_ram_writer.ts";
import { RamImage } from "../ram/ram_image.ts";
import type { RamBlockInfo } from "../ram/ram_record.ts";
import type { RandomAccessFile } from "../transport/transport.ts";
import type {
  MigrationDecoder,
  MigrationDecoderOptions,
} from "../wire/migration_decoder.ts";
import { MigrationDecoderStream } from "../wire/migration_decoder_stream.ts";
import type {
  ConfigurationRecord,
  HeaderRecord,
  MigrationRecord,
  SectionStartRecord,
} from "../wire/migration_record.ts";
import { MAPPED_RAM } from "./_mapped_ram_file.ts";
import { rebuildStream, type StreamFrame } from "./_rebuilt_stream.ts";

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
  const input: StreamInput = { blocks: [], tail: [], droppedCommands: [] };
  for await (const batch of readable.pipeThrough(decoderStream)) {
    for (const record of batch) collectRecord(input, record, decoder);
  }
  const { frame, image } = completeFrame(input);
  const pageSize = decoder.pageSize;
  const counts = { stored: 0, zero: 0 };
  const writer = new MappedRamWriter(file, { ...options.writer, pageSize });
  await ReadableStream.from(
    rebuildStream(frame, storedPages(image, frame.blocks, pageSize, counts)),
  )
    .pipeThrough(new MappedRamEncoderStream())
    .pipeTo(writer);
  return {
    blocks: writer.blocks,
    size: writer.position,
    storedPages: counts.stored,
    zeroPages: counts.zero,
    droppedCommands: input.droppedCommands,
  };
}

/** What the input stream holds that the file keeps. */
interface StreamInput {
  header?: HeaderRecord;
  configuration?: ConfigurationRecord;
  ramSection?: SectionStartRecord;
  blocks: RamBlockInfo[];
  /** The RAM the destination would end with. */
  image?: RamImage;
  /** Device sections, EOF, vmdesc. */
  tail: MigrationRecord[];
  droppedCommands: string[];
}

/**
 * Keeps what `record` adds to `input`, applying RAM records to the image.
 *
 * @throws {NotSupportedError} If the record cannot go into a mapped-ram file.
 */
function collectRecord(
  input: StreamInput,
  record: MigrationRecord,
  decoder: MigrationDecoder,
): void {
  switch (record.type) {
    case "header":
      input.header = record;
      break;
    case "configuration":
      if (record.capabilities?.includes(MAPPED_RAM)) {
        refuse("it is already a mapped-ram stream");
      }
      input.configuration = record;
      break;
    case "command":
      input.droppedCommands.push(droppableCommand(record.command));
      break;
    case "section-start":
      input.ramSection = record;
      break;
    case "ram-mem-size":
      input.blocks = checkBlocks(record.blocks);
      input.image = new RamImage({ pageSize: decoder.pageSize });
      input.image.addBlocks(input.blocks);
      break;
    case "ram-zero":
    case "ram-page":
    case "ram-xbzrle":
    case "ram-compressed":
      input.image!.apply(record);
      break;
    case "section-footer":
      if (record.sectionId !== input.ramSection?.sectionId) {
        input.tail.push(record);
      }
      break;
    case "section-full":
    case "device-state":
    case "device-tail":
    case "eof":
    case "vmdesc":
      input.tail.push(record);
      break;
    default:
      // EOS, PART and END headers and MULTIFD_FLUSH only frame the RAM
      // pages, which the file lays out anew.
      break;
  }
}

/**
 * Returns `command` when a file may leave it out: OPEN_RETURN_PATH and PING
 * concern the channel.
 *
 * @throws {NotSupportedError} For postcopy and COLO commands.
 */
function droppableCommand(command: string): string {
  if (command === "OPEN_RETURN_PATH" || command === "PING") return command;
  return refuse(
    `command ${command} belongs to ${
      command === "ENABLE_COLO" ? "COLO" : "postcopy"
    }, which mapped-ram excludes`,
  );
}

/**
 * Returns `blocks` when none has its own page size.
 *
 * @throws {NotSupportedError} Otherwise.
 */
function checkBlocks(blocks: RamBlockInfo[]): RamBlockInfo[] {
  for (const block of blocks) {
    if (block.pageSize !== undefined) {
      refuse(
        `block "${block.idstr}" has its own page size, which only postcopy-ram sends`,
      );
    }
  }
  return blocks;
}

/**
 * The frame of the file and its RAM, once the whole input was read.
 *
 * @throws {NotSupportedError} If the input lacks CONFIGURATION or a RAM
 *   START section with a block list.
 */
function completeFrame(
  input: StreamInput,
): { frame: StreamFrame; image: RamImage } {
  const { header, configuration, ramSection, image } = input;
  if (header === undefined || configuration === undefined) {
    return refuse(
      "it has no CONFIGURATION section to announce the mapped-ram capability in",
    );
  }
  if (ramSection === undefined || image === undefined) {
    return refuse("it has no RAM START section with a block list");
  }
  const { blocks, tail } = input;
  return { frame: { header, configuration, ramSection, blocks, tail }, image };
}

/**
 * Yields a PAGE record for every page of `image` that is not all zeros,
 * one batch per chunk of a block, counting stored and zero pages.
 */
function* storedPages(
  image: RamImage,
  blocks: RamBlockInfo[],
  pageSize: number,
  counts: { stored: number; zero: number },
): Generator<MigrationRecord[]> {
  for (const block of blocks) {
    let offset = 0;
    for (const chunk of image.chunks(block.idstr)) {
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
}

function refuse(why: string): never {
  throw new NotSupportedError(`Cannot convert stream to mapped-ram: ${why}`);
}
