import { createMappedRamStreamReadable } from "../mapped_ram/mapped_ram_stream_readable.ts";
import { RamImage } from "../ram/ram_image.ts";
import type { RandomAccessFile } from "../transport/transport.ts";
import type { MigrationDecoderOptions } from "../wire/migration_decoder.ts";
import { openMappedRamFile } from "./_mapped_ram_file.ts";
import {
  analyzeMigrationStream,
  type StreamAnalysis,
  type StreamAnalysisResult,
} from "./analyze_migration_stream.ts";

/** Where one block of a mapped-ram file lies. */
export interface MappedRamBlockAnalysis {
  /** The block idstr. */
  name: string;
  /** File offset of the block's 28-byte header. */
  "header-offset": number;
  /** File offset of the block's bitmap. */
  "bitmap-offset": number;
  /** File offset of the block's first page. */
  "pages-offset": number;
  /** Pages stored (bitmap bits set). */
  "pages-stored": number;
}

/**
 * What `analyze` reports about a mapped-ram file: the same summary as for a
 * stream, plus the format and the block layout. In `ram`, `normal` counts
 * the pages stored in the file (bitmap bits set) and `zero` the pages
 * whose bit is clear, each added to any records the RAM sections carry.
 */
export interface MappedRamAnalysis extends StreamAnalysis {
  /** The file format. */
  format: "mapped-ram";
  /** The layout of each block, in block-list order. */
  "mapped-ram": { blocks: MappedRamBlockAnalysis[] };
}

/** Options for {@linkcode analyzeMappedRamFile}. */
export interface AnalyzeMappedRamFileOptions {
  /**
   * File offset where the stream starts (QEMU's `file:PATH,offset=N`).
   *
   * @default {0}
   */
  offset?: number;
  /**
   * Keep the destination RAM image, for extracting blocks.
   *
   * @default {false}
   */
  keepRam?: boolean;
  /**
   * Decode device fields through the vmdesc (`--dump state`).
   *
   * @default {false}
   */
  dumpState?: boolean;
  /**
   * Decoder options for the stream around the RAM; `kind` defaults to
   * `"file"`.
   *
   * @default {{}}
   */
  decoder?: MigrationDecoderOptions;
  /** Called with the stream bytes read so far, at most every megabyte. */
  onProgress?: (bytes: number) => void;
}

/** The result of {@linkcode analyzeMappedRamFile}. */
export interface MappedRamAnalysisResult extends StreamAnalysisResult {
  /** The summary. */
  analysis: MappedRamAnalysis;
}

/**
 * Reads a mapped-ram file (QEMU 9.0+, capability `mapped-ram`) and
 * summarises it like {@linkcode analyzeMigrationStream} does a stream. The
 * stream around the RAM is decoded without reading the block regions, so
 * only the metadata is read unless `keepRam` asks for the pages.
 *
 * @example Usage
 * ```ts
 * import {
 *   analyzeMappedRamFile,
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
 *   const { analysis, ram } = await analyzeMappedRamFile(file, { keepRam: true, decoder: { vmdesc: false } });
 *   assert.equal(analysis.format, "mapped-ram");
 *   assert.deepEqual(analysis.capabilities, ["mapped-ram"]);
 *   assert.deepEqual(analysis["mapped-ram"].blocks[0], {
 *     name: "pc.ram",
 *     "header-offset": 0x71,
 *     "bitmap-offset": 0x8d,
 *     "pages-offset": 0x100000,
 *     "pages-stored": 1,
 *   });
 *   assert.equal(ram!.read("pc.ram")[4096], 1);
 * } finally {
 *   await file.close();
 *   await Deno.remove(path);
 * }
 * ```
 *
 * @param file The mapped-ram file; read only, not closed.
 * @param options Stream offset, what to keep, decoder options.
 * @returns The summary, and the RAM image or device state when asked for.
 * @throws {StreamFormatError} If the file is not a valid mapped-ram file.
 */
export async function analyzeMappedRamFile(
  file: RandomAccessFile,
  options: AnalyzeMappedRamFileOptions = {},
): Promise<MappedRamAnalysisResult> {
  const offset = options.offset ?? 0;
  const fileOptions = {
    offset,
    ...(options.decoder === undefined ? {} : { decoder: options.decoder }),
  };
  const { reader } = await openMappedRamFile(file, fileOptions);
  const result = await analyzeMigrationStream(
    createMappedRamStreamReadable(file, reader.blocks, { offset }),
    {
      ...(options.dumpState ? { dumpState: true } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      decoder: { ...options.decoder, startOffset: offset },
    },
  );
  const ram = result.analysis.ram;
  const layout: MappedRamBlockAnalysis[] = [];
  for (const { block, headerOffset, bitmap } of reader.summaries) {
    const stored = bitmap.count();
    const clear = bitmap.pageCount - stored;
    const entry = ram.blocks.find((b) => b.name === block.idstr);
    if (entry) {
      entry.normal += stored;
      entry.zero += clear;
    }
    ram.normal += stored;
    ram.zero += clear;
    layout.push({
      name: block.idstr,
      "header-offset": headerOffset,
      "bitmap-offset": block.mappedRam!.bitmapOffset,
      "pages-offset": block.mappedRam!.pagesOffset,
      "pages-stored": stored,
    });
  }
  const analysis: MappedRamAnalysis = {
    ...result.analysis,
    format: "mapped-ram",
    "mapped-ram": { blocks: layout },
  };
  const out: MappedRamAnalysisResult = { analysis };
  if (result.state) out.state = result.state;
  if (options.keepRam) {
    const image = new RamImage({ pageSize: reader.pageSize });
    image.addBlocks(reader.blocks.map(({ mappedRam: _, ...block }) => block));
    await reader.applyTo(image);
    out.ram = image;
  }
  return out;
}
