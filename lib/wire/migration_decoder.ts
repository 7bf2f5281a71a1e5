/**
 * Decodes QEMU's migration stream into typed records (QEMU 7.2 and 10.0
 * formats; QEMU's `migration/savevm.c` and `migration/ram.c` loaders are the
 * reference for every check).
 *
 * ```
 * header        be32 0x5145564d "QEVM", be32 3              (_stream_header.ts)
 * configuration 0x07 be32 len, machine[len], (0x05 u8 n name be32 version body)*
 * start/full    0x01|0x04 be32 section_id, u8 n idstr, be32 instance_id, be32 version_id
 * part/end      0x02|0x03 be32 section_id
 * ram body      record* EOS, then footer 0x7e be32 section_id (_ram_record_decoder.ts)
 * block list    MEM_SIZE record, then entries                (ram_block_list.ts)
 * command       0x08 be16 cmd be16 len payload[len]          (_command_record.ts)
 *               (PACKAGED: be32 N then N bytes)
 * eof           0x00, then 0x06 be32 len JSON (vmdesc)
 * ```
 *
 * This module frames the stream and keeps its context; each part has its
 * own decoder. Device (FULL) sections carry no length: from the first one
 * to the end of the stream everything is the device tail
 * (_device_tail.ts), passed on raw as it arrives or buffered (bounded) and
 * walked through the vmdesc trailer at its end, as QEMU's
 * `scripts/analyze-migration.py` does. What the stream looks like (header
 * or not, EOF required, end checked) is its {@linkcode MigrationStreamKind}.
 *
 * Left out on purpose: RDMA's HOOK flag, iterative sections other than
 * `ram`, FULL sections before the RAM END (QEMU 10.0 early-setup devices),
 * and the obsolete v2 format. Each is refused with a clear error.
 *
 * @module
 */

import { StreamFormatError, UnexpectedEndOfStreamError } from "../errors.ts";
import type { RamBlockInfo } from "../ram/ram_record.ts";
import type { ByteReader } from "../streams/byte_reader.ts";
import { readCommandRecord } from "./_command_record.ts";
import { collectDeviceTail, tailRecords } from "./_device_tail.ts";
import type { RamRecordDecoder } from "./_ram_record_decoder.ts";
import { RecordBatch } from "./_record_batch.ts";
import {
  readSectionFooter,
  readSectionHeader,
  SECTION_FOOTER_SIZE,
  topLevelTypeError,
} from "./_section_header.ts";
import { StreamContext } from "./_stream_context.ts";
import { readStreamHeader } from "./_stream_header.ts";
import { MAX_VM_CMD_PACKAGED_SIZE } from "./mig_cmd.ts";
import type {
  ConfigurationRecord,
  MigrationRecord,
} from "./migration_record.ts";
import {
  type DeviceStateMode,
  MIGRATION_STREAM_KINDS,
  type MigrationStreamKind,
  type MigrationStreamShape,
} from "./migration_stream_kind.ts";
import { QEMU_VM } from "./qemu_vm.ts";
import { readVmdescTrailer } from "./_vmdesc_trailer.ts";
import type { VmdescDevice, VmdescDocument } from "./vmdesc.ts";

/** Options for {@linkcode MigrationDecoder}. */
export interface MigrationDecoderOptions {
  /**
   * What kind of stream this is: where it starts and ends, what may
   * follow (see {@linkcode MigrationStreamKind}).
   *
   * @default {"live"}
   */
  kind?: MigrationStreamKind;
  /**
   * Whether a precopy EOF is followed by a VMDESCRIPTION trailer (QEMU's
   * default; off with the machine property `suppress-vmdesc`). The decoder
   * stops right after EOF when it is off, and after the trailer when on.
   *
   * @default {true, false for "packaged"}
   */
  vmdesc?: boolean;
  /**
   * `"opaque"` passes device sections on as raw tail bytes, as they
   * arrive; `"walk"` buffers the tail and walks it through the vmdesc
   * trailer.
   *
   * @default {"opaque" for "live", "walk" otherwise}
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
   * such as a postcopy recovery).
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
 *
 * @example A file: nothing may follow the end
 * ```ts
 * import { ByteReader, MigrationDecoder, StreamFormatError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = new Uint8Array([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 0x00, 0x00]);
 * const decoder = new MigrationDecoder({ kind: "file", vmdesc: false });
 * await assert.rejects(
 *   Array.fromAsync(decoder.decode(new ByteReader(ReadableStream.from([bytes])))),
 *   (error) => error instanceof StreamFormatError && error.offset === 9,
 * );
 * ```
 */
export class MigrationDecoder {
  readonly #shape: Readonly<MigrationStreamShape>;
  readonly #expectVmdesc: boolean;
  readonly #mode: DeviceStateMode;
  readonly #footers: boolean;
  readonly #layouts: readonly VmdescDevice[];
  readonly #maxPackaged: number;
  readonly #maxVmdesc: number;
  readonly #maxTail: number;
  readonly #batch: RecordBatch;
  readonly #context: StreamContext;
  readonly #ram: RamRecordDecoder;
  #tail: DeviceTailSummary | undefined;

  /**
   * Constructs a new instance.
   *
   * @param options What the stream looks like and the limits to enforce.
   * @throws {RangeError} If the page size is not a power of two >= 1024.
   * @throws {TypeError} If the kind is unknown.
   */
  constructor(options: MigrationDecoderOptions = {}) {
    const pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    if (!isPowerOfTwo(pageSize) || pageSize < 1024) {
      throw new RangeError(
        `Cannot construct MigrationDecoder as pageSize must be a power of two >= 1024: received ${pageSize}`,
      );
    }
    const kind = options.kind ?? "live";
    const shape = MIGRATION_STREAM_KINDS[kind];
    if (shape === undefined) {
      throw new TypeError(
        `Cannot construct MigrationDecoder as kind "${kind}" is unknown`,
      );
    }
    this.#shape = shape;
    this.#expectVmdesc = options.vmdesc ?? shape.vmdesc;
    this.#mode = options.deviceState ?? shape.deviceState;
    this.#footers = options.sectionFooters ?? true;
    this.#layouts = options.deviceLayouts ?? [];
    this.#maxPackaged = Math.min(
      options.maxPackagedBytes ?? 64 * 1024 * 1024,
      MAX_VM_CMD_PACKAGED_SIZE,
    );
    this.#maxVmdesc = options.maxVmdescBytes ?? 16 * 1024 * 1024;
    this.#maxTail = options.maxTailBytes ?? 64 * 1024 * 1024;
    this.#batch = new RecordBatch(options.batchRecords ?? 512);
    this.#context = new StreamContext({
      pageSize,
      blocks: options.blocks ?? [],
      sections: options.sections ?? [],
      capabilities: options.capabilities ?? [],
    });
    this.#ram = this.#context.ram;
  }

  /** The target page size in use. */
  get pageSize(): number {
    return this.#ram.pageSize;
  }

  /** The RAM blocks announced so far, by idstr, in announcement order. */
  get blocks(): ReadonlyMap<string, RamBlockInfo> {
    return this.#context.blocks;
  }

  /** The sections seen so far, by section id. */
  get sections(): ReadonlyMap<number, DecodedSection> {
    return this.#context.sections;
  }

  /** The CONFIGURATION section, once decoded. */
  get configuration(): ConfigurationRecord | undefined {
    return this.#context.configuration;
  }

  /** The capabilities known to shape the stream. */
  get capabilities(): ReadonlySet<string> {
    return this.#context.capabilities;
  }

  /** The vmdesc trailer, once decoded. */
  get vmdesc(): VmdescDocument | undefined {
    return this.#context.vmdesc;
  }

  /** What is known about the device tail, once it was read. */
  get deviceTail(): DeviceTailSummary | undefined {
    return this.#tail;
  }

  /** Forgets the current block, as QEMU's source does on a new channel. */
  forgetCurrentBlock(): void {
    this.#ram.forgetCurrentBlock();
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
    const batch = this.#batch;
    if (this.#shape.ramOnly) {
      yield* this.#ram.records(reader, batch);
      yield* batch.flush();
      return;
    }
    if (this.#shape.header) this.#push(await readStreamHeader(reader));
    while (true) {
      if (batch.full) yield batch.take();
      if (reader.buffered < 1) {
        yield* batch.flush();
        if (!await reader.ensure(1)) {
          this.#endBeforeEof(reader);
          return;
        }
      }
      const at = reader.offset;
      const type = reader.peekUint8();
      if (type === QEMU_VM.EOF) {
        reader.takeUint8();
        batch.push({ type: "eof" });
        yield* this.#afterEof(reader);
        return;
      }
      if (type === QEMU_VM.SECTION_FULL) {
        yield* this.#deviceTail(reader);
        return;
      }
      reader.takeUint8();
      if (type === QEMU_VM.COMMAND) {
        yield* this.#command(reader, at);
      } else if (
        type === QEMU_VM.SECTION_START || type === QEMU_VM.SECTION_PART ||
        type === QEMU_VM.SECTION_END
      ) {
        yield* this.#ramSection(reader, type, at);
      } else {
        throw topLevelTypeError(type, at);
      }
    }
  }

  /** Adds records to the batch, taking in what they tell. */
  #push(records: readonly MigrationRecord[]): void {
    for (const record of records) {
      this.#context.note(record);
      this.#batch.push(record);
    }
  }

  #endBeforeEof(reader: ByteReader): void {
    if (this.#shape.eofRequired) {
      throw new UnexpectedEndOfStreamError(1, {
        offset: reader.offset,
        what: "the next section (the stream ended before EOF)",
      });
    }
  }

  async *#command(
    reader: ByteReader,
    at: number,
  ): AsyncGenerator<MigrationRecord[]> {
    yield* this.#batch.flushIfWaiting(reader, 4);
    const command = await readCommandRecord(reader, at, {
      pageSize: this.#ram.pageSize,
      blocks: this.#context.blocks,
      maxPackagedBytes: this.#maxPackaged,
    });
    this.#push([command]);
    if (command.command === "PACKAGED" || command.command === "PING") {
      yield this.#batch.take(); // the destination acts on these at once
    }
  }

  async *#ramSection(
    reader: ByteReader,
    type: number,
    at: number,
  ): AsyncGenerator<MigrationRecord[]> {
    yield* this.#batch.flushIfWaiting(reader, 4);
    const record = await readSectionHeader(reader, type, {
      offset: at,
      sections: this.#context.sections,
    });
    this.#push([record]);
    yield* this.#ram.records(reader, this.#batch);
    if (!this.#footers) return;
    yield* this.#batch.flushIfWaiting(reader, SECTION_FOOTER_SIZE);
    this.#batch.push(await readSectionFooter(reader, record.sectionId));
  }

  async *#afterEof(reader: ByteReader): AsyncGenerator<MigrationRecord[]> {
    if (this.#expectVmdesc && !this.#context.postcopy) {
      yield* this.#batch.flushIfWaiting(reader, 1);
      const record = await readVmdescTrailer(reader, this.#maxVmdesc);
      if (record !== undefined) this.#push([record]);
    }
    yield* this.#batch.flush();
    if (this.#shape.checkEnd) await this.#expectEnd(reader);
  }

  async #expectEnd(reader: ByteReader): Promise<void> {
    if (await reader.ensure(1)) {
      const at = reader.offset;
      throw new StreamFormatError(
        `Cannot decode stream at offset ${at}: bytes follow the end of the stream (${
          this.#context.vmdesc ? "after the vmdesc" : "after EOF"
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
    yield* this.#batch.flush();
    const tail = yield* collectDeviceTail(reader, {
      mode: this.#mode,
      maxBytes: this.#maxTail,
      maxVmdescBytes: this.#maxVmdesc,
      layouts: this.#layouts,
      footers: this.#footers,
      vmdesc: this.#expectVmdesc,
      eofRequired: this.#shape.eofRequired,
    });
    this.#context.vmdesc = tail.vmdesc ?? this.#context.vmdesc;
    this.#tail = tail.summary;
    if (this.#mode === "walk") {
      this.#push(tailRecords(tail, {
        footers: this.#footers,
        command: { pageSize: this.#ram.pageSize, blocks: this.#context.blocks },
      }));
      yield* this.#batch.flush();
    }
    if (this.#shape.checkEnd && tail.complete) await this.#expectEnd(reader);
  }
}

function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 &&
    2 ** Math.round(Math.log2(value)) === value;
}
