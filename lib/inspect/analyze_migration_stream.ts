import type { RamImage } from "../ram/ram_image.ts";
import { ByteCounterStream } from "../streams/byte_counter_stream.ts";
import type { MigrationDecoderOptions } from "../wire/migration_decoder.ts";
import { MigrationDecoderStream } from "../wire/migration_decoder_stream.ts";
import type { VmstateValue } from "../wire/vmdesc.ts";
import { StreamAnalyzer } from "./_stream_analyzer.ts";

/** Per-block counts of an analysed stream. */
export interface RamBlockAnalysis {
  /** The block idstr. */
  name: string;
  /** The block's used length in bytes. */
  size: number;
  /** ZERO records. */
  zero: number;
  /** PAGE records. */
  normal: number;
  /** XBZRLE records. */
  xbzrle: number;
  /** COMPRESS_PAGE records. */
  compressed: number;
}

/** A device (FULL) section of an analysed stream. */
export interface DeviceAnalysis {
  /** The section idstr. */
  name: string;
  /** The instance id. */
  "instance-id": number;
  /** The section id. */
  "section-id": number;
  /** The state version. */
  version: number;
  /** Body bytes (fields and subsections). */
  size: number;
}

/** What `analyze` reports about a stream; the `--json` output. */
export interface StreamAnalysis {
  /** `"mapped-ram"` for mapped-ram files; absent for streams. */
  format?: "stream" | "mapped-ram";
  /** Bytes read. */
  bytes: number;
  /** The stream format version. */
  version: number | null;
  /** The machine type from CONFIGURATION. */
  machine: string | null;
  /** Target page size. */
  "page-size": number;
  /** Capabilities announced in CONFIGURATION or implied by commands. */
  capabilities: string[];
  /** Commands by name, in order of first appearance, with their counts. */
  commands: Record<string, number>;
  /** PING values in stream order. */
  pings: number[];
  /** Sections by kind. */
  sections: {
    start: number;
    part: number;
    end: number;
    full: number;
    footer: number;
  };
  /** RAM: the block list and record counts. */
  ram: {
    /** Sum of the block lengths (QEMU's `ram.total`). */
    total: number;
    /** Per block, in block-list order. */
    blocks: RamBlockAnalysis[];
    /** ZERO records (QEMU's `ram.duplicate`). */
    zero: number;
    /** PAGE records (QEMU's `ram.normal`). */
    normal: number;
    /** XBZRLE records. */
    xbzrle: number;
    /** COMPRESS_PAGE records. */
    compressed: number;
    /** EOS records. */
    eos: number;
    /** Page records sent with CONTINUE. */
    continue: number;
    /** MULTIFD_FLUSH records. */
    "multifd-flush": number;
    /** XBZRLE record bytes without their 8-byte headers. */
    "xbzrle-bytes": number;
  };
  /** Device sections walked through the vmdesc, in stream order. */
  devices: DeviceAnalysis[];
  /** The device tail when it was carried opaque. */
  "device-tail": { offset: number; bytes: number; validated: boolean } | null;
  /** Whether the stream reached EOF. */
  eof: boolean;
  /** The vmdesc trailer, when present. */
  vmdesc: { bytes: number; devices: number } | null;
  /** Result of `--check-xbzrle`, when asked. */
  "check-xbzrle"?: { records: number; identical: number };
}

/** Options for {@linkcode analyzeMigrationStream}. */
export interface AnalyzeMigrationStreamOptions {
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
   * Re-encode every XBZRLE record from the page it patched and count how
   * many come out byte-identical.
   *
   * @default {false}
   */
  checkXbzrle?: boolean;
  /**
   * Decoder options; `kind` defaults to `"file"`.
   *
   * @default {{}}
   */
  decoder?: MigrationDecoderOptions;
  /**
   * Called with the bytes read so far, at most every megabyte.
   */
  onProgress?: (bytes: number) => void;
}

/** The result of {@linkcode analyzeMigrationStream}. */
export interface StreamAnalysisResult {
  /** The summary. */
  analysis: StreamAnalysis;
  /** The RAM a destination would hold, when `keepRam` was set. */
  ram?: RamImage;
  /** Device fields by `"idstr (section id)"`, when `dumpState` was set. */
  state?: Record<string, VmstateValue>;
}

/**
 * Reads a whole migration stream and summarises it: commands, sections,
 * per-block page counts, devices, vmdesc, as QEMU's
 * `scripts/analyze-migration.py` does. RAM is reconstructed (records applied
 * in stream order) since XBZRLE deltas need the previous page content.
 *
 * @example Usage
 * ```ts
 * import { analyzeMigrationStream, encodeMigrationRecords } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeMigrationRecords([
 *   { type: "header", version: 3 },
 *   { type: "section-start", sectionId: 2, idstr: "ram", instanceId: 0, versionId: 4 },
 *   { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 8192 }] },
 *   { type: "ram-zero", block: "pc.ram", offset: 0, fill: 0 },
 *   { type: "ram-page", block: "pc.ram", offset: 4096, data: new Uint8Array(4096).fill(1) },
 *   { type: "ram-eos" },
 *   { type: "section-footer", sectionId: 2 },
 *   { type: "eof" },
 * ]);
 * const { analysis } = await analyzeMigrationStream(ReadableStream.from([bytes]), {
 *   decoder: { vmdesc: false },
 * });
 * assert.deepEqual(analysis.ram.blocks, [
 *   { name: "pc.ram", size: 8192, zero: 1, normal: 1, xbzrle: 0, compressed: 0 },
 * ]);
 * ```
 *
 * @param readable The stream bytes.
 * @param options What to keep and check.
 * @returns The summary, and the RAM image or device state when asked for.
 * @throws {StreamFormatError} If the stream is not valid.
 */
export async function analyzeMigrationStream(
  readable: ReadableStream<Uint8Array>,
  options: AnalyzeMigrationStreamOptions = {},
): Promise<StreamAnalysisResult> {
  const decoderStream = new MigrationDecoderStream({
    kind: "file",
    ...options.decoder,
  });
  const analyzer = new StreamAnalyzer(decoderStream.decoder, options);
  const counter = new ByteCounterStream({
    everyBytes: PROGRESS_BYTES,
    ...(options.onProgress ? { onCount: options.onProgress } : {}),
  });
  const records = readable.pipeThrough(counter).pipeThrough(decoderStream);
  for await (const batch of records) {
    for (const record of batch) analyzer.add(record);
  }
  return analyzer.finish(counter.bytes);
}

/** How many bytes pass between two `onProgress` calls, at least. */
const PROGRESS_BYTES = 1 << 20;
