import { RamImage } from "../ram/ram_image.ts";
import { encodeXbzrle } from "../ram/xbzrle.ts";
import type { RamRecord } from "../ram/ram_record.ts";
import type { MigrationDecoderOptions } from "../wire/migration_decoder.ts";
import { MigrationDecoderStream } from "../wire/migration_decoder_stream.ts";
import { type VmstateValue, walkVmstate } from "../wire/vmdesc.ts";

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
  const decoder = decoderStream.decoder;
  const analysis: StreamAnalysis = {
    bytes: 0,
    version: null,
    machine: null,
    "page-size": decoder.pageSize,
    capabilities: [],
    commands: {},
    pings: [],
    sections: { start: 0, part: 0, end: 0, full: 0, footer: 0 },
    ram: {
      total: 0,
      blocks: [],
      zero: 0,
      normal: 0,
      xbzrle: 0,
      compressed: 0,
      eos: 0,
      continue: 0,
      "multifd-flush": 0,
      "xbzrle-bytes": 0,
    },
    devices: [],
    "device-tail": null,
    eof: false,
    vmdesc: null,
  };
  const blocks = new Map<string, RamBlockAnalysis>();
  let image: RamImage | undefined;
  const deviceBodies: {
    key: string;
    idstr: string;
    instanceId: number;
    data: Uint8Array;
  }[] = [];
  const check = { records: 0, identical: 0 };
  const scratch = new Uint8Array(decoder.pageSize);
  let lastProgress = 0;
  const counted = readable.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        analysis.bytes += chunk.byteLength;
        if (options.onProgress && analysis.bytes - lastProgress >= 1 << 20) {
          lastProgress = analysis.bytes;
          options.onProgress(analysis.bytes);
        }
        controller.enqueue(chunk);
      },
    }),
  );
  const apply = (record: RamRecord) => {
    image ??= new RamImage({ pageSize: decoder.pageSize });
    if (record.type === "ram-xbzrle" && options.checkXbzrle) {
      const view = image.pageView(record.block, record.offset);
      scratch.set(view);
      image.apply(record);
      check.records++;
      const again = encodeXbzrle(scratch, view);
      if (again.kind === "encoded" && equal(again.delta, record.delta)) {
        check.identical++;
      }
      return;
    }
    image.apply(record);
  };
  for await (const batch of counted.pipeThrough(decoderStream)) {
    for (const record of batch) {
      switch (record.type) {
        case "header":
          analysis.version = record.version;
          break;
        case "configuration":
          analysis.machine = record.machine;
          break;
        case "command":
          analysis.commands[record.command] =
            (analysis.commands[record.command] ?? 0) + 1;
          if (record.command === "PING") analysis.pings.push(record.value);
          break;
        case "section-start":
          analysis.sections.start++;
          break;
        case "section-part":
          analysis.sections.part++;
          break;
        case "section-end":
          analysis.sections.end++;
          break;
        case "section-full":
          analysis.sections.full++;
          analysis.devices.push({
            name: record.idstr,
            "instance-id": record.instanceId,
            "section-id": record.sectionId,
            version: record.versionId,
            size: 0,
          });
          break;
        case "section-footer":
          analysis.sections.footer++;
          break;
        case "device-state":
          analysis.devices.at(-1)!.size = record.data.byteLength;
          if (options.dumpState) {
            deviceBodies.push({
              key: `${record.idstr} (${record.sectionId})`,
              idstr: record.idstr,
              instanceId: record.instanceId,
              data: record.data,
            });
          }
          break;
        case "eof":
          analysis.eof = true;
          break;
        case "vmdesc":
          analysis.vmdesc = {
            bytes: record.data.byteLength,
            devices: record.document.devices.length,
          };
          break;
        case "ram-mem-size":
          for (const block of record.blocks) {
            const entry = {
              name: block.idstr,
              size: block.usedLength,
              zero: 0,
              normal: 0,
              xbzrle: 0,
              compressed: 0,
            };
            blocks.set(block.idstr, entry);
            analysis.ram.blocks.push(entry);
            analysis.ram.total += block.usedLength;
          }
          if (options.keepRam || options.checkXbzrle) apply(record);
          break;
        case "ram-zero":
        case "ram-page":
        case "ram-xbzrle":
        case "ram-compressed": {
          const kind = record.type === "ram-zero"
            ? "zero"
            : record.type === "ram-page"
            ? "normal"
            : record.type === "ram-xbzrle"
            ? "xbzrle"
            : "compressed";
          analysis.ram[kind]++;
          blocks.get(record.block)![kind]++;
          if (record.continued) analysis.ram.continue++;
          if (record.type === "ram-xbzrle") {
            analysis.ram["xbzrle-bytes"] += (record.continued ? 0 : 1 +
              new TextEncoder().encode(record.block).byteLength) +
              3 +
              record.delta.byteLength;
          }
          if (options.keepRam || options.checkXbzrle) apply(record);
          break;
        }
        case "ram-eos":
          analysis.ram.eos++;
          break;
        case "ram-multifd-flush":
          analysis.ram["multifd-flush"]++;
          break;
        default:
          break;
      }
    }
  }
  analysis["page-size"] = decoder.pageSize;
  analysis.capabilities = [...decoder.capabilities];
  const tail = decoder.deviceTail;
  if (tail && analysis.devices.length === 0) analysis["device-tail"] = tail;
  if (options.checkXbzrle) analysis["check-xbzrle"] = check;
  const result: StreamAnalysisResult = { analysis };
  if (options.keepRam) result.ram = image ?? new RamImage();
  if (options.dumpState) {
    const state: Record<string, VmstateValue> = {};
    const devices = decoder.vmdesc?.devices ?? [];
    for (const body of deviceBodies) {
      const description = devices.find((d) =>
        d.name === body.idstr && d.instance_id === body.instanceId
      );
      if (description === undefined) continue;
      state[body.key] = walkVmstate(body.data, 0, description, { decode: true })
        .value!;
    }
    result.state = state;
  }
  return result;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
