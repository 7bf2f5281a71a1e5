/**
 * The tally behind {@linkcode analyzeMigrationStream}: decoded records go
 * in one by one, a {@linkcode StreamAnalysis} comes out. Private to
 * lib/inspect/.
 *
 * @module
 */

import { RamImage } from "../ram/ram_image.ts";
import type { RamMemSizeRecord, RamRecord } from "../ram/ram_record.ts";
import { encodeXbzrle } from "../ram/xbzrle.ts";
import type { MigrationDecoder } from "../wire/migration_decoder.ts";
import type {
  DeviceStateRecord,
  MigrationRecord,
} from "../wire/migration_record.ts";
import { type VmstateValue, walkVmstate } from "../wire/vmdesc.ts";
import type {
  AnalyzeMigrationStreamOptions,
  RamBlockAnalysis,
  StreamAnalysis,
  StreamAnalysisResult,
} from "./analyze_migration_stream.ts";

/** A FULL section's body, kept for `dumpState`. */
interface DeviceBody {
  key: string;
  idstr: string;
  instanceId: number;
  data: Uint8Array;
}

/** A page-carrying record: ZERO, PAGE, XBZRLE or COMPRESS_PAGE. */
type PageRecord = Extract<
  RamRecord,
  { type: "ram-zero" | "ram-page" | "ram-xbzrle" | "ram-compressed" }
>;

/** The {@linkcode RamBlockAnalysis} count each page record adds to. */
const PAGE_KIND = {
  "ram-zero": "zero",
  "ram-page": "normal",
  "ram-xbzrle": "xbzrle",
  "ram-compressed": "compressed",
} as const;

/**
 * Counts records into a {@linkcode StreamAnalysis}; applies RAM records to
 * an image when the RAM is kept or XBZRLE records are checked.
 */
export class StreamAnalyzer {
  readonly #decoder: MigrationDecoder;
  readonly #options: AnalyzeMigrationStreamOptions;
  readonly #analysis: StreamAnalysis;
  readonly #blocks = new Map<string, RamBlockAnalysis>();
  readonly #applies: boolean;
  readonly #check = { records: 0, identical: 0 };
  readonly #scratch: Uint8Array;
  readonly #deviceBodies: DeviceBody[] = [];
  #image: RamImage | undefined;

  /**
   * @param decoder The decoder the records come from: its page size is
   *   read as it learns it, its capabilities, device tail and vmdesc at the
   *   end.
   * @param options What to keep and check.
   */
  constructor(
    decoder: MigrationDecoder,
    options: AnalyzeMigrationStreamOptions,
  ) {
    this.#decoder = decoder;
    this.#options = options;
    this.#analysis = emptyAnalysis(decoder.pageSize);
    this.#applies = (options.keepRam || options.checkXbzrle) === true;
    this.#scratch = new Uint8Array(decoder.pageSize);
  }

  /** Counts one record. */
  add(record: MigrationRecord): void {
    const analysis = this.#analysis;
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
        this.#deviceState(record);
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
        this.#memSize(record);
        break;
      case "ram-zero":
      case "ram-page":
      case "ram-xbzrle":
      case "ram-compressed":
        this.#page(record);
        break;
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

  /**
   * Completes the analysis with what the decoder learned.
   *
   * @param bytes The bytes read.
   * @returns The analysis, and the RAM image or device state when asked for.
   */
  finish(bytes: number): StreamAnalysisResult {
    const analysis = this.#analysis;
    const decoder = this.#decoder;
    analysis.bytes = bytes;
    analysis["page-size"] = decoder.pageSize;
    analysis.capabilities = [...decoder.capabilities];
    const tail = decoder.deviceTail;
    if (tail && analysis.devices.length === 0) analysis["device-tail"] = tail;
    if (this.#options.checkXbzrle) analysis["check-xbzrle"] = this.#check;
    const result: StreamAnalysisResult = { analysis };
    if (this.#options.keepRam) result.ram = this.#image ?? new RamImage();
    if (this.#options.dumpState) result.state = this.#decodeDeviceBodies();
    return result;
  }

  #deviceState(record: DeviceStateRecord): void {
    this.#analysis.devices.at(-1)!.size = record.data.byteLength;
    if (!this.#options.dumpState) return;
    this.#deviceBodies.push({
      key: `${record.idstr} (${record.sectionId})`,
      idstr: record.idstr,
      instanceId: record.instanceId,
      data: record.data,
    });
  }

  #memSize(record: RamMemSizeRecord): void {
    const ram = this.#analysis.ram;
    for (const block of record.blocks) {
      const entry = {
        name: block.idstr,
        size: block.usedLength,
        zero: 0,
        normal: 0,
        xbzrle: 0,
        compressed: 0,
      };
      this.#blocks.set(block.idstr, entry);
      ram.blocks.push(entry);
      ram.total += block.usedLength;
    }
    if (this.#applies) this.#apply(record);
  }

  #page(record: PageRecord): void {
    const ram = this.#analysis.ram;
    const kind = PAGE_KIND[record.type];
    ram[kind]++;
    this.#blocks.get(record.block)![kind]++;
    if (record.continued) ram.continue++;
    if (record.type === "ram-xbzrle") {
      ram["xbzrle-bytes"] += (record.continued ? 0 : 1 +
        ENCODER.encode(record.block).byteLength) +
        3 +
        record.delta.byteLength;
    }
    if (this.#applies) this.#apply(record);
  }

  /** Applies a record to the image; re-encodes XBZRLE when checking. */
  #apply(record: RamRecord): void {
    const image = this.#image ??= new RamImage({
      pageSize: this.#decoder.pageSize,
    });
    if (record.type !== "ram-xbzrle" || !this.#options.checkXbzrle) {
      image.apply(record);
      return;
    }
    const view = image.pageView(record.block, record.offset);
    this.#scratch.set(view);
    image.apply(record);
    this.#check.records++;
    const again = encodeXbzrle(this.#scratch, view);
    if (again.kind === "encoded" && equal(again.delta, record.delta)) {
      this.#check.identical++;
    }
  }

  /** Decodes the kept device bodies through the vmdesc. */
  #decodeDeviceBodies(): Record<string, VmstateValue> {
    const state: Record<string, VmstateValue> = {};
    const devices = this.#decoder.vmdesc?.devices ?? [];
    for (const body of this.#deviceBodies) {
      const description = devices.find((d) =>
        d.name === body.idstr && d.instance_id === body.instanceId
      );
      if (description === undefined) continue;
      state[body.key] = walkVmstate(body.data, 0, description, { decode: true })
        .value!;
    }
    return state;
  }
}

/** An analysis with nothing counted yet, its keys in output order. */
function emptyAnalysis(pageSize: number): StreamAnalysis {
  return {
    bytes: 0,
    version: null,
    machine: null,
    "page-size": pageSize,
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
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

const ENCODER = new TextEncoder();
