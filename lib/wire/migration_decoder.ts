/**
 * Decodes QEMU's migration stream into typed records (QEMU 7.2 and 10.0
 * formats; QEMU's `migration/savevm.c` and `migration/ram.c` loaders are the
 * reference for every check).
 *
 * ```
 * header        be32 0x5145564d "QEVM", be32 3
 * configuration 0x07 be32 len, machine[len], (0x05 u8 n name be32 version body)*
 * start/full    0x01|0x04 be32 section_id, u8 n idstr, be32 instance_id, be32 version_id
 * part/end      0x02|0x03 be32 section_id
 * ram body      record* EOS, then footer 0x7e be32 section_id
 * record        be64 offset|flags [u8 n block-name unless CONTINUE] payload
 * command       0x08 be16 cmd be16 len payload[len] (PACKAGED: be32 N then N bytes)
 * eof           0x00, then 0x06 be32 len JSON (vmdesc)
 * ```
 *
 * Device (FULL) sections carry no length. In `"opaque"` mode (live streams)
 * everything from the first FULL section to the end of the stream is passed
 * on as {@linkcode DeviceTailRecord}s as it arrives. In `"walk"` mode (files)
 * the decoder buffers that tail (bounded), finds the vmdesc trailer at its
 * end and walks each device section through its description, as QEMU's
 * `scripts/analyze-migration.py` does.
 *
 * Left out on purpose: RDMA's HOOK flag, iterative sections other than
 * `ram`, FULL sections before the RAM END (QEMU 10.0 early-setup devices),
 * and the obsolete v2 format. Each is refused with a clear error.
 *
 * @module
 */

import { StreamFormatError, UnexpectedEndOfStreamError } from "../errors.ts";
import type { ByteReader } from "../streams/byte_reader.ts";
import type { RamBlockInfo, RamRecord } from "../ram/ram_record.ts";
import { checkXbzrleDelta } from "../ram/xbzrle.ts";
import {
  MAX_VM_CMD_PACKAGED_SIZE,
  MIG_CMD_LENGTH,
  migCmdName,
} from "./mig_cmd.ts";
import type {
  CommandRecord,
  ConfigurationRecord,
  DiscardRange,
  MigrationRecord,
} from "./migration_record.ts";
import {
  QEMU_VM,
  QEMU_VM_FILE_MAGIC,
  QEMU_VM_FILE_VERSION,
} from "./qemu_vm.ts";
import {
  decodeRamBlockEntry,
  type DecodeRamBlockEntryOptions,
  MAX_RAM_BLOCK_ENTRY_SIZE,
} from "./ram_block_list.ts";
import { RAM_SAVE_FLAG, ramSaveFlagNames } from "./ram_save_flags.ts";
import {
  parseVmdesc,
  type VmdescDevice,
  type VmdescDocument,
} from "./vmdesc.ts";
import { DeviceTailCollector, type TailItem } from "./_device_tail.ts";

/** How device (FULL) sections are handled. */
export type DeviceStateMode = "opaque" | "walk";

/** Options for {@linkcode MigrationDecoder}. */
export interface MigrationDecoderOptions {
  /**
   * Whether the stream starts with the "QEVM" header. PACKAGED blobs,
   * postcopy recovery channels and device tails do not.
   *
   * @default {true}
   */
  header?: boolean;
  /**
   * Whether the stream is a RAM-only channel (QEMU's postcopy-preempt
   * channel): RAM records with no header and no sections, up to an EOS.
   *
   * @default {false}
   */
  ramChannel?: boolean;
  /**
   * Whether the stream must end with EOF. PACKAGED blobs end without one.
   *
   * @default {true}
   */
  eofRequired?: boolean;
  /**
   * Whether a precopy EOF is followed by a VMDESCRIPTION trailer (QEMU's
   * default; off with the machine property `suppress-vmdesc`). The decoder
   * stops right after EOF when it is off, and after the trailer when on.
   *
   * @default {true}
   */
  vmdesc?: boolean;
  /**
   * Whether to check that nothing follows the end of the stream. Leave it
   * off on live connections, which stay open after EOF for the return path.
   *
   * @default {false}
   */
  checkEnd?: boolean;
  /**
   * `"opaque"` passes device sections on as raw tail bytes (live streams);
   * `"walk"` buffers the tail and walks it through the vmdesc trailer.
   *
   * @default {"opaque"}
   */
  deviceState?: DeviceStateMode;
  /**
   * Whether sections end with a footer (QEMU's `send-section-footer`).
   *
   * @default {true}
   */
  sectionFooters?: boolean;
  /**
   * The target page size until a `configuration/target-page-bits`
   * subsection says otherwise.
   *
   * @default {4096}
   */
  pageSize?: number;
  /**
   * RAM blocks known before the stream starts (streams without a RAM START,
   * such as postcopy recovery channels).
   *
   * @default {[]}
   */
  blocks?: readonly RamBlockInfo[];
  /**
   * Sections known before the stream starts (a stream resumed part-way,
   * such as the rest of a mapped-ram file after its block regions).
   *
   * @default {[]}
   */
  sections?: readonly DecodedSection[];
  /**
   * Capabilities known before the stream starts. Those announced in the
   * CONFIGURATION section (`x-ignore-shared`, `mapped-ram`) are added.
   *
   * @default {[]}
   */
  capabilities?: readonly string[];
  /**
   * Descriptions of device sections to use when the stream has no vmdesc
   * (or it lacks the device), e.g. livemig's own guest state.
   *
   * @default {[]}
   */
  deviceLayouts?: readonly VmdescDevice[];
  /**
   * Largest PACKAGED blob accepted. QEMU's own cap is the whole be32 range;
   * a lower default keeps a corrupt length from buffering gigabytes.
   *
   * @default {64 * 1024 * 1024}
   */
  maxPackagedBytes?: number;
  /**
   * Largest vmdesc JSON accepted.
   *
   * @default {16 * 1024 * 1024}
   */
  maxVmdescBytes?: number;
  /**
   * Largest device tail buffered in `"walk"` mode.
   *
   * @default {64 * 1024 * 1024}
   */
  maxTailBytes?: number;
  /**
   * The stream offset of the first byte, for error messages.
   *
   * @default {0}
   */
  startOffset?: number;
  /**
   * Most records per yielded batch.
   *
   * @default {512}
   */
  batchRecords?: number;
}

/** A section the decoder has seen a START or FULL for. */
export interface DecodedSection {
  /** The section id. */
  sectionId: number;
  /** The idstr. */
  idstr: string;
  /** The instance id. */
  instanceId: number;
  /** The version. */
  versionId: number;
}

/** What the decoder learned about the device tail. */
export interface DeviceTailSummary {
  /** Stream offset of the tail's first byte. */
  offset: number;
  /** Tail length in bytes, EOF and vmdesc included. */
  bytes: number;
  /**
   * Whether every device section was walked to EOF through a description
   * (the vmdesc trailer, or a known layout).
   */
  validated: boolean;
}

const DEFAULT_PAGE_SIZE = 4096;
const MAX_MACHINE_NAME = 1024;

/**
 * Decodes a migration stream into batches of {@linkcode MigrationRecord}s.
 * It keeps the decoding context (page size, announced RAM blocks, current
 * block for CONTINUE, sections), readable while and after decoding.
 *
 * Decoding ends right after EOF (and the vmdesc trailer, when one is
 * expected): a live source with a return path keeps the connection open
 * until the destination answers, so the decoder never waits for it to
 * close.
 *
 * Page bytes in the records alias the input chunks where a record lies in
 * one chunk: copy them before the input buffers are reused.
 *
 * @example Usage
 * ```ts
 * import { ByteReader, MigrationDecoder } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = new Uint8Array([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 0x00]);
 * const decoder = new MigrationDecoder();
 * const records = [];
 * for await (const batch of decoder.decode(new ByteReader(ReadableStream.from([bytes])))) {
 *   records.push(...batch);
 * }
 * assert.deepEqual(records, [{ type: "header", version: 3 }, { type: "eof" }]);
 * ```
 */
export class MigrationDecoder {
  readonly #header: boolean;
  readonly #ramChannel: boolean;
  readonly #eofRequired: boolean;
  readonly #expectVmdesc: boolean;
  readonly #checkEnd: boolean;
  readonly #mode: DeviceStateMode;
  readonly #footers: boolean;
  readonly #layouts: readonly VmdescDevice[];
  readonly #maxPackaged: number;
  readonly #maxVmdesc: number;
  readonly #maxTail: number;
  readonly #startOffset: number;
  readonly #batchRecords: number;
  #pageSize: number;
  #blocks = new Map<string, RamBlockInfo>();
  #capabilities: Set<string>;
  #sections = new Map<number, DecodedSection>();
  #currentBlock: RamBlockInfo | undefined;
  #configuration: ConfigurationRecord | undefined;
  #pageSizeSummary: number | undefined;
  #postcopyListening = false;
  #vmdesc: VmdescDocument | undefined;
  #tail: DeviceTailSummary | undefined;
  #batch: MigrationRecord[] = [];

  /**
   * Constructs a new instance.
   *
   * @param options What the stream looks like and the limits to enforce.
   */
  constructor(options: MigrationDecoderOptions = {}) {
    const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    if (!isPowerOfTwo(pageSize) || pageSize < 1024) {
      throw new RangeError(
        `Cannot construct MigrationDecoder as pageSize must be a power of two >= 1024: received ${pageSize}`,
      );
    }
    this.#ramChannel = options.ramChannel ?? false;
    this.#header = (options.header ?? true) && !this.#ramChannel;
    this.#eofRequired = options.eofRequired ?? true;
    this.#expectVmdesc = options.vmdesc ?? true;
    this.#checkEnd = options.checkEnd ?? false;
    this.#mode = options.deviceState ?? "opaque";
    this.#footers = options.sectionFooters ?? true;
    this.#layouts = options.deviceLayouts ?? [];
    this.#maxPackaged = Math.min(
      options.maxPackagedBytes ?? 64 * 1024 * 1024,
      MAX_VM_CMD_PACKAGED_SIZE,
    );
    this.#maxVmdesc = options.maxVmdescBytes ?? 16 * 1024 * 1024;
    this.#maxTail = options.maxTailBytes ?? 64 * 1024 * 1024;
    this.#startOffset = options.startOffset ?? 0;
    this.#batchRecords = options.batchRecords ?? 512;
    this.#pageSize = pageSize;
    this.#capabilities = new Set(options.capabilities ?? []);
    for (const block of options.blocks ?? []) {
      this.#blocks.set(block.idstr, block);
    }
    for (const section of options.sections ?? []) {
      this.#sections.set(section.sectionId, section);
    }
  }

  /** The target page size in use. */
  get pageSize(): number {
    return this.#pageSize;
  }

  /** The RAM blocks announced so far, by idstr, in announcement order. */
  get blocks(): ReadonlyMap<string, RamBlockInfo> {
    return this.#blocks;
  }

  /** The sections seen so far, by section id. */
  get sections(): ReadonlyMap<number, DecodedSection> {
    return this.#sections;
  }

  /** The CONFIGURATION section, once decoded. */
  get configuration(): ConfigurationRecord | undefined {
    return this.#configuration;
  }

  /** The capabilities known to shape the stream. */
  get capabilities(): ReadonlySet<string> {
    return this.#capabilities;
  }

  /** The vmdesc trailer, once decoded. */
  get vmdesc(): VmdescDocument | undefined {
    return this.#vmdesc;
  }

  /** What is known about the device tail, once it was read. */
  get deviceTail(): DeviceTailSummary | undefined {
    return this.#tail;
  }

  /** Forgets the current block, as QEMU's source does on a new channel. */
  forgetCurrentBlock(): void {
    this.#currentBlock = undefined;
  }

  /**
   * Decodes the stream that `reader` reads, yielding records in batches. A
   * batch is yielded whenever the decoder would otherwise wait for input,
   * so records are never held back behind a slow connection.
   *
   * @param reader The bytes, positioned at the start of the stream.
   * @returns The record batches.
   * @throws {StreamFormatError} On bytes that are not a valid stream.
   */
  async *decode(reader: ByteReader): AsyncGenerator<MigrationRecord[]> {
    if (this.#ramChannel) {
      yield* this.#ramRecords(reader);
      if (this.#batch.length > 0) yield this.#take();
      return;
    }
    if (this.#header) {
      await reader.require(8, "the stream header");
      this.#push(this.#streamHeader(reader));
      if (
        await reader.ensure(1) &&
        reader.peekUint8() === QEMU_VM.CONFIGURATION
      ) {
        reader.takeUint8();
        this.#push(await this.#configurationSection(reader));
      }
    }
    while (true) {
      if (this.#batch.length >= this.#batchRecords) yield this.#take();
      if (reader.buffered < 1) {
        if (this.#batch.length > 0) yield this.#take();
        if (!await reader.ensure(1)) {
          if (this.#eofRequired) {
            throw new UnexpectedEndOfStreamError(1, {
              offset: reader.offset,
              what: "the next section (the stream ended before EOF)",
            });
          }
          return;
        }
      }
      const at = reader.offset;
      const type = reader.peekUint8();
      switch (type) {
        case QEMU_VM.EOF:
          reader.takeUint8();
          this.#push({ type: "eof" });
          yield* this.#afterEof(reader);
          return;
        case QEMU_VM.SECTION_START:
        case QEMU_VM.SECTION_PART:
        case QEMU_VM.SECTION_END:
          reader.takeUint8();
          yield* this.#ramSection(reader, type, at);
          break;
        case QEMU_VM.SECTION_FULL:
          yield* this.#deviceTail(reader);
          return;
        case QEMU_VM.COMMAND: {
          reader.takeUint8();
          yield* this.#flushIfWaiting(reader, 4);
          const command = await this.#command(reader, at);
          this.#push(command);
          if (command.command === "PACKAGED" || command.command === "PING") {
            yield this.#take(); // the destination acts on these at once
          }
          break;
        }
        case QEMU_VM.CONFIGURATION:
          throw new StreamFormatError(
            `Cannot decode section at offset ${at}: a CONFIGURATION section may only follow the stream header`,
            { offset: at },
          );
        default:
          throw new StreamFormatError(
            `Cannot decode section at offset ${at}: type byte ${
              hex(type, 2)
            } is not a top-level section type (${describeType(type)})`,
            { offset: at },
          );
      }
    }
  }

  #push(record: MigrationRecord): void {
    this.#batch.push(record);
  }

  #take(): MigrationRecord[] {
    const batch = this.#batch;
    this.#batch = [];
    return batch;
  }

  /** Yields the pending batch when `size` bytes are not yet buffered. */
  async *#flushIfWaiting(
    reader: ByteReader,
    size: number,
  ): AsyncGenerator<MigrationRecord[]> {
    if (reader.buffered < size && this.#batch.length > 0) yield this.#take();
  }

  #streamHeader(reader: ByteReader): MigrationRecord {
    const at = reader.offset;
    const magic = reader.takeUint32();
    if (magic !== QEMU_VM_FILE_MAGIC) {
      throw new StreamFormatError(
        `Cannot decode stream header at offset ${at}: magic ${
          hex(magic, 8)
        } is not "QEVM" (0x5145564d), so this is not a migration stream`,
        { offset: at },
      );
    }
    const version = reader.takeUint32();
    if (version !== QEMU_VM_FILE_VERSION) {
      throw new StreamFormatError(
        `Cannot decode stream header at offset ${at + 4}: version ${version} ${
          version === 2 ? "is the obsolete v2 format" : "is not supported"
        }, expected ${QEMU_VM_FILE_VERSION}`,
        { offset: at + 4 },
      );
    }
    return { type: "header", version };
  }

  async #configurationSection(
    reader: ByteReader,
  ): Promise<ConfigurationRecord> {
    const lengthAt = reader.offset;
    const length = await readUint32(reader, "the machine name length");
    if (length > MAX_MACHINE_NAME) {
      throw new StreamFormatError(
        `Cannot decode CONFIGURATION at offset ${lengthAt}: machine name length ${length} exceeds ${MAX_MACHINE_NAME}`,
        { offset: lengthAt },
      );
    }
    const machine = TEXT.decode(
      await readBytes(reader, length, "the machine name"),
    );
    const record: ConfigurationRecord = { type: "configuration", machine };
    const prefix = "configuration/";
    // A subsection follows while the next bytes are 0x05 and a name under
    // "configuration/"; anything else ends the section (QEMU's rule).
    while (await reader.ensure(2)) {
      if (reader.peekUint8() !== QEMU_VM.SUBSECTION) break;
      const nameLength = reader.peekUint8(1);
      if (nameLength < prefix.length + 1) break;
      if (!await reader.ensure(2 + nameLength)) break;
      const name = TEXT.decode(reader.peek(2 + nameLength).subarray(2));
      if (!name.startsWith(prefix)) break;
      const subAt = reader.offset;
      reader.take(2 + nameLength);
      const versionAt = reader.offset;
      const version = await readUint32(reader, `the version of "${name}"`);
      if (version !== 1) {
        throw new StreamFormatError(
          `Cannot decode CONFIGURATION subsection "${name}" at offset ${versionAt}: version ${version} is not supported, expected 1`,
          { offset: versionAt },
        );
      }
      if (name === "configuration/target-page-bits") {
        if (record.targetPageBits !== undefined) throw duplicate(name, subAt);
        const bitsAt = reader.offset;
        const bits = await readUint32(reader, "the target page bits");
        if (bits < 10 || bits > 30) {
          throw new StreamFormatError(
            `Cannot decode CONFIGURATION at offset ${bitsAt}: target page bits ${bits} are out of range 10..30`,
            { offset: bitsAt },
          );
        }
        record.targetPageBits = bits;
        this.#pageSize = 2 ** bits;
      } else if (name === "configuration/capabilities") {
        if (record.capabilities !== undefined) throw duplicate(name, subAt);
        const countAt = reader.offset;
        const count = await readUint32(reader, "the capability count");
        if (count > 256) {
          throw new StreamFormatError(
            `Cannot decode CONFIGURATION at offset ${countAt}: capability count ${count} exceeds 256`,
            { offset: countAt },
          );
        }
        const capabilities: string[] = [];
        for (let i = 0; i < count; i++) {
          capabilities.push(await readCountedString(reader, "a capability"));
        }
        record.capabilities = capabilities;
        for (const capability of capabilities) {
          this.#capabilities.add(capability);
        }
      } else if (name === "configuration/uuid") {
        if (record.uuid !== undefined) throw duplicate(name, subAt);
        record.uuid = (await readBytes(reader, 16, "the UUID")).slice();
      } else {
        throw new StreamFormatError(
          `Cannot decode CONFIGURATION at offset ${subAt}: subsection "${name}" is unknown`,
          { offset: subAt },
        );
      }
    }
    this.#configuration = record;
    return record;
  }

  async #command(reader: ByteReader, at: number): Promise<CommandRecord> {
    await reader.require(4, "a command header");
    const cmd = reader.takeUint16();
    const length = reader.takeUint16();
    const payloadAt = reader.offset;
    const payload = await readBytes(reader, length, `a command payload`);
    const command = this.#decodeCommand(cmd, payload, at, payloadAt);
    if (command.command === "PACKAGED") {
      const size = be32(payload, 0);
      if (size > this.#maxPackaged) {
        throw new StreamFormatError(
          `Cannot decode command PACKAGED at offset ${at}: length ${size} exceeds the limit of ${this.#maxPackaged} bytes`,
          { offset: payloadAt },
        );
      }
      command.data = (await readBytes(reader, size, "the PACKAGED data"))
        .slice();
    }
    return command;
  }

  /** Decodes a command from its number and payload (PACKAGED data aside). */
  #decodeCommand(
    cmd: number,
    payload: Uint8Array,
    at: number,
    payloadAt: number,
  ): CommandRecord {
    const name = migCmdName(cmd);
    const length = payload.byteLength;
    if (name === undefined) {
      throw new StreamFormatError(
        `Cannot decode command at offset ${at}: command ${cmd} is ${
          cmd === 0 ? "INVALID" : "unknown"
        }`,
        { offset: at },
      );
    }
    const fixed = MIG_CMD_LENGTH[name];
    if (fixed !== undefined && length !== fixed) {
      throw new StreamFormatError(
        `Cannot decode command ${name} at offset ${at}: payload length ${length} differs from ${fixed}`,
        { offset: at },
      );
    }
    switch (name) {
      case "POSTCOPY_LISTEN":
        this.#postcopyListening = true;
        return { type: "command", command: name };
      case "OPEN_RETURN_PATH":
      case "POSTCOPY_RUN":
      case "ENABLE_COLO":
      case "POSTCOPY_RESUME":
      case "SWITCHOVER_START":
        return { type: "command", command: name };
      case "PING":
        return { type: "command", command: "PING", value: be32(payload, 0) };
      case "POSTCOPY_ADVISE": {
        if (length === 0) return { type: "command", command: name };
        if (length !== 16) {
          throw new StreamFormatError(
            `Cannot decode command POSTCOPY_ADVISE at offset ${at}: payload length ${length} is neither 0 nor 16`,
            { offset: at },
          );
        }
        const pageSizeSummary = be64Number(payload, 0, payloadAt);
        const targetPageSize = be64Number(payload, 8, payloadAt + 8);
        if (targetPageSize !== this.#pageSize) {
          throw new StreamFormatError(
            `Cannot decode command POSTCOPY_ADVISE at offset ${at}: target page size ${targetPageSize} differs from ${this.#pageSize}`,
            { offset: payloadAt + 8 },
          );
        }
        this.#pageSizeSummary = pageSizeSummary;
        this.#capabilities.add("postcopy-ram");
        return {
          type: "command",
          command: name,
          pageSizeSummary,
          targetPageSize,
        };
      }
      case "POSTCOPY_RAM_DISCARD":
        return this.#discard(payload, at, payloadAt);
      case "PACKAGED":
        // Only postcopy packages a stream, and its LISTEN is inside the
        // package: from here on the stream is postcopy (no vmdesc after
        // EOF).
        this.#postcopyListening = true;
        return { type: "command", command: name, data: new Uint8Array(0) };
      case "RECV_BITMAP": {
        if (length < 1 || payload[0]! + 1 !== length) {
          throw new StreamFormatError(
            `Cannot decode command RECV_BITMAP at offset ${at}: payload length ${length} does not match the block name length ${
              payload[0] ?? "(missing)"
            }`,
            { offset: at },
          );
        }
        const block = TEXT.decode(payload.subarray(1));
        if (this.#blocks.size > 0 && !this.#blocks.has(block)) {
          throw new StreamFormatError(
            `Cannot decode command RECV_BITMAP at offset ${at}: block "${block}" is unknown`,
            { offset: payloadAt + 1 },
          );
        }
        return { type: "command", command: name, block };
      }
    }
  }

  #discard(
    payload: Uint8Array,
    at: number,
    payloadAt: number,
  ): CommandRecord {
    const fail = (what: string, offset = at): never => {
      throw new StreamFormatError(
        `Cannot decode command POSTCOPY_RAM_DISCARD at offset ${at}: ${what}`,
        { offset },
      );
    };
    if (payload.byteLength < 20) {
      fail(`payload length ${payload.byteLength} is below the minimum of 20`);
    }
    if (payload[0] !== 0) {
      fail(`version ${payload[0]} is not supported, expected 0`, payloadAt);
    }
    const nameLength = payload[1]!;
    const rest = payload.byteLength - 3 - nameLength;
    if (rest < 0 || rest % 16 !== 0) {
      fail(
        `payload length ${payload.byteLength} leaves ${rest} bytes for ranges, not a multiple of 16`,
      );
    }
    const block = TEXT.decode(payload.subarray(2, 2 + nameLength));
    if (payload[2 + nameLength] !== 0) {
      fail(
        "the byte after the block name is not 0",
        payloadAt + 2 + nameLength,
      );
    }
    const info = this.#blocks.get(block);
    if (this.#blocks.size > 0 && info === undefined) {
      fail(`block "${block}" is unknown`, payloadAt + 2);
    }
    const ranges: DiscardRange[] = [];
    for (let p = 3 + nameLength; p < payload.byteLength; p += 16) {
      const start = be64Number(payload, p, payloadAt + p);
      const length = be64Number(payload, p + 8, payloadAt + p + 8);
      if (info && start + length > info.usedLength) {
        fail(
          `range ${start}+${length} lies past the end of block "${block}" (${info.usedLength} bytes)`,
          payloadAt + p,
        );
      }
      ranges.push({ start, length });
    }
    return { type: "command", command: "POSTCOPY_RAM_DISCARD", block, ranges };
  }

  async *#ramSection(
    reader: ByteReader,
    type: number,
    at: number,
  ): AsyncGenerator<MigrationRecord[]> {
    yield* this.#flushIfWaiting(reader, 4);
    const sectionId = await readUint32(reader, "a section id");
    if (type === QEMU_VM.SECTION_START) {
      const idstr = await readCountedString(reader, "a section idstr");
      await reader.require(8, "a section instance and version");
      const instanceId = reader.takeUint32();
      const versionAt = reader.offset;
      const versionId = reader.takeUint32();
      if (idstr !== "ram") {
        throw new StreamFormatError(
          `Cannot decode section START at offset ${at}: iterative section "${idstr}" is not supported, only "ram" is`,
          { offset: at },
        );
      }
      if (versionId !== 4) {
        throw new StreamFormatError(
          `Cannot decode section START "ram" at offset ${versionAt}: version ${versionId} is not supported, expected 4`,
          { offset: versionAt },
        );
      }
      if (this.#sections.has(sectionId)) {
        throw new StreamFormatError(
          `Cannot decode section START at offset ${at}: section id ${sectionId} was already started`,
          { offset: at },
        );
      }
      const section = { sectionId, idstr, instanceId, versionId };
      this.#sections.set(sectionId, section);
      this.#push({ type: "section-start", ...section });
    } else {
      if (!this.#sections.has(sectionId)) {
        throw new StreamFormatError(
          `Cannot decode section ${
            type === QEMU_VM.SECTION_PART ? "PART" : "END"
          } at offset ${at}: section id ${sectionId} was never started`,
          { offset: at },
        );
      }
      this.#push({
        type: type === QEMU_VM.SECTION_PART ? "section-part" : "section-end",
        sectionId,
      });
    }
    yield* this.#ramRecords(reader);
    if (this.#footers) {
      yield* this.#flushIfWaiting(reader, 5);
      this.#push(await this.#footer(reader, sectionId));
    }
  }

  async #footer(
    reader: ByteReader,
    sectionId: number,
  ): Promise<MigrationRecord> {
    const at = reader.offset;
    await reader.require(5, "a section footer");
    const marker = reader.takeUint8();
    if (marker !== QEMU_VM.SECTION_FOOTER) {
      throw new StreamFormatError(
        `Cannot decode section footer at offset ${at}: expected byte 0x7e, found ${
          hex(marker, 2)
        }`,
        { offset: at },
      );
    }
    const id = reader.takeUint32();
    if (id !== sectionId) {
      throw new StreamFormatError(
        `Cannot decode section footer at offset ${at}: section id ${id} does not match section ${sectionId}`,
        { offset: at },
      );
    }
    return { type: "section-footer", sectionId };
  }

  /** Decodes RAM records up to and including EOS. */
  async *#ramRecords(reader: ByteReader): AsyncGenerator<MigrationRecord[]> {
    while (true) {
      if (this.#batch.length >= this.#batchRecords) yield this.#take();
      const need = this.#ramRecordSize(reader);
      if (need > reader.buffered) {
        if (this.#batch.length > 0) yield this.#take();
        if (!await reader.ensure(need)) {
          throw reader.endError(need, "a RAM record");
        }
        continue; // measure again: the bytes that came may reveal more
      }
      const record = this.#ramRecord(reader);
      if (record.type === "mem-size") {
        yield* this.#memSize(reader, record.total);
        continue;
      }
      if (record.type === "ram-compressed") {
        record.page = await inflatePage(
          record.data,
          this.#pageSize,
          reader.offset - record.data.byteLength,
        );
      }
      this.#push(record);
      if (record.type === "ram-eos") return;
    }
  }

  /**
   * How many buffered bytes the next RAM record needs before it can be
   * decoded synchronously (a lower bound while its header is incomplete).
   */
  #ramRecordSize(reader: ByteReader): number {
    if (reader.buffered < 8) return 8;
    const mask = this.#pageSize - 1;
    const low = reader.peekUint32(4);
    const flags = low & mask;
    const kind = flags & ~RAM_SAVE_FLAG.CONTINUE;
    // Anything #ramRecord rejects from the bytes seen so far is decoded at
    // once, so a bad header fails where it is instead of waiting for a
    // payload that may never come.
    if ((PAGE_CARRIERS & kind) === 0 || (kind & (kind - 1)) !== 0) return 8;
    let size = 8;
    let block = this.#currentBlock;
    if ((flags & RAM_SAVE_FLAG.CONTINUE) === 0) {
      if (reader.buffered < 9) return 9;
      const nameLength = reader.peekUint8(8);
      size += 1 + nameLength;
      if (reader.buffered < size) return size;
      block = this.#blocks.get(
        TEXT.decode(reader.peek(size).subarray(9, size)),
      );
    }
    const offset = reader.peekUint32(0) * 0x1_0000_0000 +
      ((low & ~mask) >>> 0);
    if (block === undefined || offset + this.#pageSize > block.usedLength) {
      return size;
    }
    switch (kind) {
      case RAM_SAVE_FLAG.ZERO:
        return size + 1;
      case RAM_SAVE_FLAG.PAGE:
        return size + this.#pageSize;
      case RAM_SAVE_FLAG.XBZRLE: {
        if (reader.buffered < size + 3) return size + 3;
        const bytes = reader.peek(size + 3);
        const length = (bytes[size + 1]! << 8) | bytes[size + 2]!;
        if (bytes[size] !== 0x01 || length > this.#pageSize) return size + 3;
        return size + 3 + length;
      }
      default: {
        if (reader.buffered < size + 4) return size + 4;
        const length = be32(reader.peek(size + 4), size);
        if (length > compressBound(this.#pageSize)) return size + 4;
        return size + 4 + length;
      }
    }
  }

  /** Decodes one fully buffered RAM record. */
  #ramRecord(
    reader: ByteReader,
  ): RamRecord | { type: "mem-size"; total: number } {
    const at = reader.offset;
    const high = reader.takeUint32();
    const low = reader.takeUint32();
    const mask = this.#pageSize - 1;
    const flags = low & mask;
    const offset = high * 0x1_0000_0000 + ((low & ~mask) >>> 0);
    const kind = flags & ~RAM_SAVE_FLAG.CONTINUE;
    const continued = (flags & RAM_SAVE_FLAG.CONTINUE) !== 0;
    // Errors come from functions, not closures: this runs once per page.
    if (high >= 0x20_0000) throw ramRecordError(at, "the address exceeds 2^53");
    if (
      kind === RAM_SAVE_FLAG.EOS || kind === RAM_SAVE_FLAG.MEM_SIZE ||
      kind === RAM_SAVE_FLAG.MULTIFD_FLUSH
    ) {
      if (continued) throw badRamFlags(at, flags);
      if (kind === RAM_SAVE_FLAG.MEM_SIZE) {
        return { type: "mem-size", total: offset };
      }
      if (offset !== 0) {
        throw ramRecordError(
          at,
          `${ramSaveFlagNames(kind)} record carries address ${hex(offset)}`,
        );
      }
      return kind === RAM_SAVE_FLAG.EOS
        ? { type: "ram-eos" }
        : { type: "ram-multifd-flush" };
    }
    if (
      kind !== RAM_SAVE_FLAG.ZERO && kind !== RAM_SAVE_FLAG.PAGE &&
      kind !== RAM_SAVE_FLAG.XBZRLE && kind !== RAM_SAVE_FLAG.COMPRESS_PAGE
    ) {
      if (kind & RAM_SAVE_FLAG.HOOK) {
        throw ramRecordError(
          at,
          "flag HOOK belongs to RDMA migration, which is not supported",
        );
      }
      throw badRamFlags(at, flags);
    }
    let block: RamBlockInfo | undefined;
    if (continued) {
      block = this.#currentBlock;
      if (block === undefined) {
        throw ramRecordError(
          at,
          "flag CONTINUE is set but no block was named before",
        );
      }
    } else {
      const nameAt = reader.offset;
      const name = TEXT.decode(reader.take(reader.takeUint8()));
      block = this.#blocks.get(name);
      if (block === undefined) {
        throw ramRecordError(
          at,
          `block "${name}" was never announced in the block list`,
          nameAt,
        );
      }
      this.#currentBlock = block;
    }
    const info = block!;
    if (offset + this.#pageSize > info.usedLength) {
      throw ramRecordError(
        at,
        `page offset ${
          hex(offset)
        } lies past the end of block "${info.idstr}" (${
          hex(info.usedLength)
        } bytes)`,
      );
    }
    if (kind === RAM_SAVE_FLAG.ZERO) {
      const fill = reader.takeUint8();
      return { type: "ram-zero", block: info.idstr, offset, fill, continued };
    }
    if (kind === RAM_SAVE_FLAG.PAGE) {
      const data = reader.take(this.#pageSize);
      return { type: "ram-page", block: info.idstr, offset, data, continued };
    }
    if (kind === RAM_SAVE_FLAG.XBZRLE) {
      const encodingAt = reader.offset;
      const encoding = reader.takeUint8();
      if (encoding !== 0x01) {
        throw ramRecordError(
          at,
          `XBZRLE encoding byte ${hex(encoding, 2)} is not 0x01`,
          encodingAt,
        );
      }
      const lengthAt = reader.offset;
      const length = reader.takeUint16();
      if (length > this.#pageSize) {
        throw ramRecordError(
          at,
          `XBZRLE length ${length} exceeds the page size ${this.#pageSize}`,
          lengthAt,
        );
      }
      const deltaAt = reader.offset;
      const delta = reader.take(length);
      checkXbzrleDelta(delta, this.#pageSize, deltaAt);
      return {
        type: "ram-xbzrle",
        block: info.idstr,
        offset,
        delta,
        continued,
      };
    }
    const lengthAt = reader.offset;
    const length = reader.takeUint32();
    const bound = compressBound(this.#pageSize);
    if (length > bound) {
      throw ramRecordError(
        at,
        `compressed length ${length} exceeds zlib's bound ${bound} for one page`,
        lengthAt,
      );
    }
    const data = reader.take(length);
    return {
      type: "ram-compressed",
      block: info.idstr,
      offset,
      data,
      continued,
    };
  }

  /**
   * Decodes the block list of a MEM_SIZE record, entry by entry, and skips
   * each mapped-ram block's bitmap and pages region, which the stream
   * jumps over (mapped-ram readers take the pages from their fixed offsets
   * instead).
   */
  async *#memSize(
    reader: ByteReader,
    total: number,
  ): AsyncGenerator<MigrationRecord[]> {
    const format: DecodeRamBlockEntryOptions = {
      total,
      previous: [],
      pageSize: this.#pageSize,
      pageSizeSummary: this.#pageSizeSummary,
      ignoreShared: this.#capabilities.has("x-ignore-shared"),
      mappedRam: this.#capabilities.has("mapped-ram"),
    };
    const blocks: RamBlockInfo[] = [];
    let sum = 0;
    while (sum < total) {
      yield* this.#flushIfWaiting(reader, 1);
      const block = await readBlockEntry(reader, {
        ...format,
        previous: blocks,
      });
      if (block.mappedRam !== undefined) {
        const resume = block.mappedRam.pagesOffset + block.usedLength;
        await reader.skip(
          resume - reader.offset,
          `the pages of block "${block.idstr}"`,
        );
      }
      sum += block.usedLength;
      blocks.push(block);
      this.#blocks.set(block.idstr, block);
    }
    this.#push({ type: "ram-mem-size", blocks });
  }

  async *#afterEof(reader: ByteReader): AsyncGenerator<MigrationRecord[]> {
    if (this.#expectVmdesc && !this.#postcopyListening) {
      yield* this.#flushIfWaiting(reader, 1);
      if (await reader.ensure(1)) {
        const at = reader.offset;
        const type = reader.takeUint8();
        if (type !== QEMU_VM.VMDESCRIPTION) {
          throw new StreamFormatError(
            `Cannot decode stream at offset ${at}: byte ${
              hex(type, 2)
            } follows EOF, expected VMDESCRIPTION (0x06) or the end`,
            { offset: at },
          );
        }
        const lengthAt = reader.offset;
        const length = await readUint32(reader, "the vmdesc length");
        if (length > this.#maxVmdesc) {
          throw new StreamFormatError(
            `Cannot decode vmdesc length at offset ${lengthAt}: ${length} bytes exceed the limit of ${this.#maxVmdesc} bytes`,
            { offset: lengthAt },
          );
        }
        const jsonAt = reader.offset;
        const data = (await readBytes(reader, length, "the vmdesc JSON"))
          .slice();
        const document = parseVmdesc(data, jsonAt);
        this.#vmdesc = document;
        this.#push({ type: "vmdesc", data, document });
      }
    }
    if (this.#batch.length > 0) yield this.#take();
    if (this.#checkEnd) await this.#expectEnd(reader);
  }

  async #expectEnd(reader: ByteReader): Promise<void> {
    if (await reader.ensure(1)) {
      const at = reader.offset;
      throw new StreamFormatError(
        `Cannot decode stream at offset ${at}: bytes follow the end of the stream (${
          this.#vmdesc ? "after the vmdesc" : "after EOF"
        })`,
        { offset: at },
      );
    }
  }

  /**
   * Reads the device tail. `"opaque"` yields it chunk by chunk as it
   * arrives; `"walk"` yields device sections walked through the vmdesc.
   * Either way the end is recognised by the vmdesc trailer, so a live
   * source that keeps the connection open does not stall the decoder.
   */
  async *#deviceTail(reader: ByteReader): AsyncGenerator<MigrationRecord[]> {
    if (this.#batch.length > 0) yield this.#take();
    const offset = reader.offset;
    const collector = new DeviceTailCollector({
      baseOffset: offset,
      maxBytes: this.#maxTail,
      maxVmdescBytes: this.#maxVmdesc,
      layouts: this.#layouts,
      footers: this.#footers,
    });
    const opaque = this.#mode === "opaque";
    let complete = false;
    while (!complete) {
      const chunk = await reader.readChunk();
      if (chunk === undefined) break;
      complete = collector.push(chunk);
      if (opaque) yield [{ type: "device-tail", data: chunk }];
    }
    if (!opaque && collector.overflowed) {
      throw new StreamFormatError(
        `Cannot walk device state at offset ${offset}: the device tail exceeds the limit of ${this.#maxTail} bytes`,
        { offset },
      );
    }
    let items = collector.items;
    let validated = complete;
    if (!complete && this.#expectVmdesc && !collector.overflowed) {
      throw new UnexpectedEndOfStreamError(1, {
        offset: offset + collector.length,
        what:
          "the vmdesc trailer (the stream ended inside the device state, or its trailer is damaged)",
      });
    }
    if (!complete) {
      const walk = collector.finish();
      items = walk.items;
      validated = walk.complete;
      // A tail walked to its end without EOF was cut short; one that could
      // not be walked (no vmdesc, no layout) cannot be judged.
      if (
        this.#eofRequired && walk.complete &&
        !walk.items.some((item) => item.kind === "eof")
      ) {
        throw new UnexpectedEndOfStreamError(1, {
          offset: offset + collector.length,
          what: "EOF (the device state ended without it)",
        });
      }
    }
    this.#vmdesc = collector.vmdesc ?? this.#vmdesc;
    this.#tail = { offset, bytes: collector.length, validated };
    if (!opaque) {
      yield* this.#walkedRecords(collector.bytes, items ?? [], offset);
    }
    if (this.#checkEnd && complete) await this.#expectEnd(reader);
  }

  async *#walkedRecords(
    tail: Uint8Array,
    items: readonly TailItem[],
    offset: number,
  ): AsyncGenerator<MigrationRecord[]> {
    let walked = 0;
    for (const item of items) {
      if (item.kind === "section") {
        const { sectionId, idstr, instanceId, versionId } = item;
        const section = { sectionId, idstr, instanceId, versionId };
        this.#sections.set(sectionId, section);
        this.#push({ type: "section-full", ...section });
        this.#push({
          type: "device-state",
          sectionId,
          idstr,
          instanceId,
          data: tail.slice(item.bodyStart, item.bodyEnd),
        });
        if (this.#footers) this.#push({ type: "section-footer", sectionId });
        walked = item.bodyEnd + (this.#footers ? 5 : 0);
      } else if (item.kind === "command") {
        const payload = tail.subarray(item.payloadStart, item.payloadEnd);
        const cmd = this.#decodeCommand(
          item.cmd,
          payload,
          offset + item.at,
          offset + item.payloadStart,
        );
        this.#push(cmd);
        walked = item.payloadEnd;
      } else if (item.kind === "eof") {
        this.#push({ type: "eof" });
        walked = item.at + 1;
      } else {
        const data = tail.slice(item.jsonStart);
        const document = parseVmdesc(data, offset + item.jsonStart);
        this.#vmdesc = document;
        this.#push({ type: "vmdesc", data, document });
        walked = tail.byteLength;
      }
    }
    if (walked < tail.byteLength) {
      this.#push({ type: "device-tail", data: tail.slice(walked) });
    }
    if (this.#batch.length > 0) yield this.#take();
  }
}

const PAGE_CARRIERS = RAM_SAVE_FLAG.ZERO | RAM_SAVE_FLAG.PAGE |
  RAM_SAVE_FLAG.XBZRLE | RAM_SAVE_FLAG.COMPRESS_PAGE;

/** Reads one block-list entry, waiting for as many bytes as it needs. */
async function readBlockEntry(
  reader: ByteReader,
  options: DecodeRamBlockEntryOptions,
): Promise<RamBlockInfo> {
  let ended = false;
  while (true) {
    const bytes = reader.peek(
      Math.min(reader.buffered, MAX_RAM_BLOCK_ENTRY_SIZE),
    );
    const step = decodeRamBlockEntry(bytes, {
      ...options,
      offset: reader.offset,
      ended,
    });
    if (step.type === "entry") {
      reader.take(step.size);
      return step.block;
    }
    ended = !await reader.ensure(step.bytes);
  }
}

async function readUint32(reader: ByteReader, what: string): Promise<number> {
  await reader.require(4, what);
  return reader.takeUint32();
}

async function readBytes(
  reader: ByteReader,
  size: number,
  what: string,
): Promise<Uint8Array> {
  await reader.require(size, what);
  return reader.take(size);
}

async function readCountedString(
  reader: ByteReader,
  what: string,
): Promise<string> {
  await reader.require(1, what);
  const length = reader.peekUint8();
  await reader.require(1 + length, what);
  reader.takeUint8();
  return TEXT.decode(reader.take(length));
}

async function inflatePage(
  data: Uint8Array,
  pageSize: number,
  offset: number,
): Promise<Uint8Array> {
  const page = new Uint8Array(pageSize);
  let size = 0;
  try {
    const stream = ReadableStream.from([data.slice()]).pipeThrough(
      new DecompressionStream("deflate"),
    );
    for await (const chunk of stream) {
      if (size + chunk.byteLength > pageSize) {
        size += chunk.byteLength;
        break;
      }
      page.set(chunk, size);
      size += chunk.byteLength;
    }
  } catch (cause) {
    throw new StreamFormatError(
      `Cannot inflate compressed page at offset ${offset}: the zlib data is corrupt`,
      { offset, cause },
    );
  }
  if (size !== pageSize) {
    throw new StreamFormatError(
      `Cannot inflate compressed page at offset ${offset}: it inflates to ${
        size > pageSize ? "more than" : ""
      } ${size} bytes, not ${pageSize}`,
      { offset },
    );
  }
  return page;
}

function compressBound(size: number): number {
  return size + (size >>> 12) + (size >>> 14) + (size >>> 25) + 13;
}

function duplicate(name: string, offset: number): StreamFormatError {
  return new StreamFormatError(
    `Cannot decode CONFIGURATION at offset ${offset}: subsection "${name}" appears twice`,
    { offset },
  );
}

function describeType(type: number): string {
  switch (type) {
    case QEMU_VM.SUBSECTION:
      return "SUBSECTION belongs inside a section";
    case QEMU_VM.VMDESCRIPTION:
      return "VMDESCRIPTION may only follow EOF";
    case QEMU_VM.SECTION_FOOTER:
      return "a SECTION_FOOTER without a section";
    default:
      return "unknown";
  }
}

function be32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) |
    bytes[at + 3]!) >>> 0;
}

function be64Number(bytes: Uint8Array, at: number, offset: number): number {
  const high = be32(bytes, at);
  if (high >= 0x20_0000) {
    throw new StreamFormatError(
      `Cannot decode 64-bit value at offset ${offset}: it exceeds 2^53`,
      { offset },
    );
  }
  return high * 0x1_0000_0000 + be32(bytes, at + 4);
}

function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 &&
    2 ** Math.round(Math.log2(value)) === value;
}

function hex(value: number, digits = 1): string {
  return `0x${value.toString(16).padStart(digits, "0")}`;
}

const TEXT = new TextDecoder();

/** The error for a RAM record that starts at `at`. */
function ramRecordError(
  at: number,
  what: string,
  offset: number = at,
): StreamFormatError {
  return new StreamFormatError(
    `Cannot decode RAM record at offset ${at}: ${what}`,
    { offset },
  );
}

/** The error for RAM record flags that make no valid combination. */
function badRamFlags(at: number, flags: number): StreamFormatError {
  return ramRecordError(
    at,
    `flags ${hex(flags, 3)} (${
      ramSaveFlagNames(flags)
    }) are not a valid combination`,
  );
}
