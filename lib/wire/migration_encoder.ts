/**
 * Encodes {@linkcode MigrationRecord}s into QEMU's migration stream bytes,
 * the exact inverse of {@linkcode MigrationDecoder}: records decoded from a
 * real QEMU stream encode back to the identical bytes.
 *
 * ```
 * header        be32 "QEVM" be32 3
 * configuration 0x07 be32 len machine (0x05 u8 n name be32 1 body)*
 * command       0x08 be16 cmd be16 len payload   (PACKAGED: be32 N, then N bytes)
 * start/full    0x01|0x04 be32 id, u8 n idstr, be32 instance, be32 version
 * part/end      0x02|0x03 be32 id
 * footer        0x7e be32 id
 * ram record    be64 offset|flags [u8 n name] payload   (name unless CONTINUE)
 * eof, vmdesc   0x00; 0x06 be32 len JSON
 * ```
 *
 * CONTINUE: a record that says `continued: true` must name the current
 * block; one that leaves `continued` out gets CONTINUE exactly when its
 * block is the previous record's block, as QEMU's source does.
 *
 * @module
 */

import { ByteWriter } from "../bytes/byte_writer.ts";
import type {
  RamBlockInfo,
  RamPageRecord,
  RamRecord,
} from "../ram/ram_record.ts";
import { encodeCommandRecord } from "./_command_record.ts";
import { encodeConfiguration } from "./_stream_header.ts";
import type {
  CommandRecord,
  ConfigurationRecord,
  HeaderRecord,
  MigrationRecord,
} from "./migration_record.ts";
import { QEMU_VM, QEMU_VM_FILE_MAGIC } from "./qemu_vm.ts";
import { encodeRamBlockList } from "./ram_block_list.ts";
import { RAM_SAVE_FLAG } from "./ram_save_flags.ts";

/** Options for {@linkcode MigrationEncoder}. */
export interface MigrationEncoderOptions {
  /**
   * The target page size, until a CONFIGURATION record with
   * `targetPageBits` says otherwise.
   *
   * @default {4096}
   */
  pageSize?: number;
}

/**
 * Encodes records into stream bytes, keeping the state the format needs
 * across records (page size, the current block for CONTINUE).
 *
 * @example Usage
 * ```ts
 * import { ByteWriter, MigrationEncoder } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const writer = new ByteWriter();
 * new MigrationEncoder().encode([
 *   { type: "header", version: 3 },
 *   { type: "command", command: "PING", value: 1 },
 *   { type: "eof" },
 * ], writer);
 * assert.deepEqual(
 *   writer.bytes(),
 *   new Uint8Array([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 8, 0, 2, 0, 4, 0, 0, 0, 1, 0]),
 * );
 * ```
 */
export class MigrationEncoder {
  #pageSize: number;
  #currentBlock: string | undefined;

  /**
   * Constructs a new instance.
   *
   * @param options The page size to start with.
   */
  constructor(options: MigrationEncoderOptions = {}) {
    const pageSize = options.pageSize ?? 4096;
    if (!Number.isInteger(Math.log2(pageSize)) || pageSize < 1024) {
      throw new RangeError(
        `Cannot construct MigrationEncoder as pageSize must be a power of two >= 1024: received ${pageSize}`,
      );
    }
    this.#pageSize = pageSize;
  }

  /** The target page size in use. */
  get pageSize(): number {
    return this.#pageSize;
  }

  /** The block the next CONTINUE record refers to, if any. */
  get currentBlock(): string | undefined {
    return this.#currentBlock;
  }

  /**
   * Forgets the current block, so the next page record names its block (as
   * QEMU's source does at postcopy start and on a new channel).
   */
  forgetCurrentBlock(): void {
    this.#currentBlock = undefined;
  }

  /**
   * Appends the bytes of `records` to `writer`.
   *
   * @param records The records, in stream order.
   * @param writer Where the bytes go.
   * @throws {TypeError} If a record cannot be encoded as given.
   * @throws {RangeError} If a value does not fit its field.
   */
  encode(records: readonly MigrationRecord[], writer: ByteWriter): void {
    for (const record of records) this.encodeRecord(record, writer);
  }

  /**
   * Appends the bytes of one record to `writer`.
   *
   * @param record The record.
   * @param writer Where the bytes go.
   */
  encodeRecord(record: MigrationRecord, writer: ByteWriter): void {
    switch (record.type) {
      case "ram-page": {
        const pageSize = this.#pageSize;
        if (record.data.byteLength !== pageSize) {
          throw new RangeError(
            `Cannot encode PAGE of block "${record.block}" at ${record.offset}: data is ${record.data.byteLength} bytes, the page size is ${pageSize}`,
          );
        }
        writer.reserve(8 + 256 + pageSize);
        this.#pageHeader(record, RAM_SAVE_FLAG.PAGE, writer);
        writer.write(record.data);
        return;
      }
      case "ram-zero":
      case "ram-xbzrle":
      case "ram-compressed":
      case "ram-eos":
      case "ram-multifd-flush":
      case "ram-mem-size":
        this.#ramRecord(record, writer);
        return;
      case "header":
        writer.uint32(QEMU_VM_FILE_MAGIC).uint32(record.version);
        return;
      case "configuration":
        if (record.targetPageBits !== undefined) {
          this.#pageSize = 2 ** record.targetPageBits;
        }
        encodeConfiguration(record, writer);
        return;
      case "command":
        encodeCommandRecord(record, writer);
        return;
      default:
        encodeFraming(record, writer);
    }
  }

  /** The RAM records other than PAGE. */
  #ramRecord(
    record: Exclude<RamRecord, RamPageRecord>,
    writer: ByteWriter,
  ): void {
    switch (record.type) {
      case "ram-zero":
        if (!(record.fill >= 0 && record.fill <= 255)) {
          throw new RangeError(
            `Cannot encode ZERO record: fill must be a byte: received ${record.fill}`,
          );
        }
        this.#pageHeader(record, RAM_SAVE_FLAG.ZERO, writer);
        writer.uint8(record.fill);
        return;
      case "ram-xbzrle":
        if (record.delta.byteLength > this.#pageSize) {
          throw new RangeError(
            `Cannot encode XBZRLE record: the delta is ${record.delta.byteLength} bytes, more than the page size ${this.#pageSize}`,
          );
        }
        this.#pageHeader(record, RAM_SAVE_FLAG.XBZRLE, writer);
        writer.uint8(0x01).uint16(record.delta.byteLength).write(record.delta);
        return;
      case "ram-compressed":
        this.#pageHeader(record, RAM_SAVE_FLAG.COMPRESS_PAGE, writer);
        writer.uint32(record.data.byteLength).write(record.data);
        return;
      case "ram-eos":
        writer.uint32(0).uint32(RAM_SAVE_FLAG.EOS);
        return;
      case "ram-multifd-flush":
        writer.uint32(0).uint32(RAM_SAVE_FLAG.MULTIFD_FLUSH);
        return;
      case "ram-mem-size":
        this.#memSize(record.blocks, writer);
        return;
    }
  }

  #pageHeader(
    record: { block: string; offset: number; continued?: boolean },
    flag: number,
    writer: ByteWriter,
  ): void {
    const { block, offset } = record;
    if (
      !Number.isSafeInteger(offset) || offset < 0 ||
      offset % this.#pageSize !== 0
    ) {
      throw new RangeError(
        `Cannot encode RAM record of block "${block}": offset must be a non-negative multiple of the page size ${this.#pageSize}: received ${offset}`,
      );
    }
    let continued = record.continued;
    if (continued === undefined) {
      continued = block === this.#currentBlock;
    } else if (continued && block !== this.#currentBlock) {
      throw new TypeError(
        `Cannot encode RAM record with CONTINUE for block "${block}": the current block is ${
          this.#currentBlock === undefined ? "unset" : `"${this.#currentBlock}"`
        }`,
      );
    }
    const flags = flag | (continued ? RAM_SAVE_FLAG.CONTINUE : 0);
    writer.uint32(Math.floor(offset / 0x1_0000_0000)).uint32(
      ((offset >>> 0) | flags) >>> 0,
    );
    if (!continued) writer.countedString(block);
    this.#currentBlock = block;
  }

  #memSize(blocks: readonly RamBlockInfo[], writer: ByteWriter): void {
    for (const block of blocks) {
      if (block.usedLength % this.#pageSize !== 0) {
        throw new RangeError(
          `Cannot encode block list: block "${block.idstr}" length ${block.usedLength} is not a multiple of the page size ${this.#pageSize}`,
        );
      }
      if (block.mappedRam !== undefined) {
        throw new TypeError(
          `Cannot encode block "${block.idstr}" with a mapped-ram header into a stream: write mapped-ram files with the mapped-ram writer`,
        );
      }
    }
    encodeRamBlockList(blocks, writer);
  }
}

/** Section framing, device state, EOF and vmdesc: no state involved. */
function encodeFraming(
  record: Exclude<
    MigrationRecord,
    RamRecord | HeaderRecord | ConfigurationRecord | CommandRecord
  >,
  writer: ByteWriter,
): void {
  switch (record.type) {
    case "section-start":
    case "section-full":
      writer.uint8(
        record.type === "section-start"
          ? QEMU_VM.SECTION_START
          : QEMU_VM.SECTION_FULL,
      ).uint32(record.sectionId).countedString(record.idstr)
        .uint32(record.instanceId).uint32(record.versionId);
      return;
    case "section-part":
    case "section-end":
      writer.uint8(
        record.type === "section-part"
          ? QEMU_VM.SECTION_PART
          : QEMU_VM.SECTION_END,
      ).uint32(record.sectionId);
      return;
    case "section-footer":
      writer.uint8(QEMU_VM.SECTION_FOOTER).uint32(record.sectionId);
      return;
    case "device-state":
    case "device-tail":
      writer.write(record.data);
      return;
    case "eof":
      writer.uint8(QEMU_VM.EOF);
      return;
    case "vmdesc":
      writer.uint8(QEMU_VM.VMDESCRIPTION).uint32(record.data.byteLength)
        .write(record.data);
      return;
    default: {
      const unknown: never = record;
      throw new TypeError(
        `Cannot encode record: type "${
          (unknown as { type: string }).type
        }" is unknown`,
      );
    }
  }
}

/**
 * Encodes records into one byte array.
 *
 * @example Usage
 * ```ts
 * import { encodeMigrationRecords } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeMigrationRecords([{ type: "ram-eos" }]);
 * assert.deepEqual(bytes, new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0x10]));
 * ```
 *
 * @param records The records.
 * @param options The page size to start with.
 * @returns The bytes.
 */
export function encodeMigrationRecords(
  records: readonly MigrationRecord[],
  options: MigrationEncoderOptions = {},
): Uint8Array {
  const writer = new ByteWriter(64 * 1024);
  new MigrationEncoder(options).encode(records, writer);
  return writer.takeBytes();
}
