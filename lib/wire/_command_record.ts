/**
 * COMMAND records (0x08): their payloads, decoded from bytes and encoded
 * back (QEMU's `qemu_savevm_command_send()` and `loadvm_process_command()`
 * in `migration/savevm.c`; mig_cmd.ts has the table).
 *
 * ```
 * 0x08 be16 cmd be16 len payload[len]
 *   PING                   be32 value
 *   POSTCOPY_ADVISE        nothing, or be64 page-size summary, be64 target page size
 *   POSTCOPY_RAM_DISCARD   u8 0 (version), u8 n, name[n], u8 0, (be64 start, be64 length)*
 *   PACKAGED               be32 N, then N bytes outside the payload
 *   RECV_BITMAP            u8 n, name[n]
 *   others                 nothing
 * ```
 *
 * Decoding a payload is pure: the decoder reads the bytes (and PACKAGED's
 * blob) and applies what a command means for the rest of the stream.
 *
 * @module
 */

import type { ByteWriter } from "../bytes/byte_writer.ts";
import { StreamFormatError } from "../errors.ts";
import type { RamBlockInfo } from "../ram/ram_record.ts";
import type { ByteReader } from "../streams/byte_reader.ts";
import { MIG_CMD, MIG_CMD_LENGTH, migCmdName } from "./mig_cmd.ts";
import type { CommandRecord, DiscardRange } from "./migration_record.ts";
import { QEMU_VM } from "./qemu_vm.ts";

/** What {@linkcode decodeCommandRecord} checks a payload against. */
export interface DecodeCommandOptions {
  /** Stream offset of the command's 0x08 byte. */
  offset: number;
  /** Stream offset of the payload's first byte. */
  payloadOffset: number;
  /** The target page size, which POSTCOPY_ADVISE must repeat. */
  pageSize: number;
  /** The blocks announced so far; commands naming others are refused. */
  blocks: ReadonlyMap<string, RamBlockInfo>;
}

/**
 * Decodes a command from its number and payload. A PACKAGED record comes
 * back with empty `data`: its blob follows the payload.
 *
 * @param cmd The command number.
 * @param payload The payload bytes.
 * @param options Where the command is and what it is checked against.
 * @returns The record.
 * @throws {StreamFormatError} If the command is unknown or its payload is
 *   not valid.
 */
export function decodeCommandRecord(
  cmd: number,
  payload: Uint8Array,
  options: DecodeCommandOptions,
): CommandRecord {
  const { offset: at } = options;
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
    throw commandError(
      name,
      at,
      `payload length ${length} differs from ${fixed}`,
    );
  }
  switch (name) {
    case "PING":
      return { type: "command", command: "PING", value: be32(payload, 0) };
    case "POSTCOPY_ADVISE":
      return advise(payload, options);
    case "POSTCOPY_RAM_DISCARD":
      return discard(payload, options);
    case "PACKAGED":
      return { type: "command", command: name, data: new Uint8Array(0) };
    case "RECV_BITMAP":
      return recvBitmap(payload, options);
    default:
      return { type: "command", command: name };
  }
}

/** Options for {@linkcode readCommandRecord}. */
export interface ReadCommandOptions {
  /** The target page size, which POSTCOPY_ADVISE must repeat. */
  pageSize: number;
  /** The blocks announced so far; commands naming others are refused. */
  blocks: ReadonlyMap<string, RamBlockInfo>;
  /** Largest PACKAGED blob accepted. */
  maxPackagedBytes: number;
}

/**
 * Reads a command after its 0x08 type byte, and a PACKAGED command's blob.
 *
 * @param reader The bytes, positioned after the type byte.
 * @param at Stream offset of the type byte.
 * @param options What the command is checked against.
 * @returns The record; a PACKAGED blob is copied out of the reader.
 * @throws {StreamFormatError} If the command is not valid or its blob
 *   exceeds `maxPackagedBytes`.
 * @throws {UnexpectedEndOfStreamError} If the stream ends inside it.
 */
export async function readCommandRecord(
  reader: ByteReader,
  at: number,
  options: ReadCommandOptions,
): Promise<CommandRecord> {
  await reader.require(4, "a command header");
  const cmd = reader.takeUint16();
  const length = reader.takeUint16();
  const payloadOffset = reader.offset;
  const payload = await reader.readExact(length, "a command payload");
  const command = decodeCommandRecord(cmd, payload, {
    offset: at,
    payloadOffset,
    pageSize: options.pageSize,
    blocks: options.blocks,
  });
  if (command.command === "PACKAGED") {
    const size = be32(payload, 0);
    if (size > options.maxPackagedBytes) {
      throw new StreamFormatError(
        `Cannot decode command PACKAGED at offset ${at}: length ${size} exceeds the limit of ${options.maxPackagedBytes} bytes`,
        { offset: payloadOffset },
      );
    }
    command.data = (await reader.readExact(size, "the PACKAGED data"))
      .slice();
  }
  return command;
}

/**
 * Appends a COMMAND record, type byte included.
 *
 * @param record The command.
 * @param writer Where the bytes go.
 * @throws {RangeError} If a payload does not fit its fields.
 */
export function encodeCommandRecord(
  record: CommandRecord,
  writer: ByteWriter,
): void {
  writer.uint8(QEMU_VM.COMMAND).uint16(MIG_CMD[record.command]);
  switch (record.command) {
    case "PING":
      writer.uint16(4).uint32(record.value);
      return;
    case "POSTCOPY_ADVISE":
      if (
        record.pageSizeSummary === undefined ||
        record.targetPageSize === undefined
      ) {
        writer.uint16(0);
      } else {
        writer.uint16(16).uint64(record.pageSizeSummary).uint64(
          record.targetPageSize,
        );
      }
      return;
    case "POSTCOPY_RAM_DISCARD":
      encodeDiscard(record, writer);
      return;
    case "PACKAGED":
      if (record.data.byteLength > 0xffff_ffff) {
        throw new RangeError(
          `Cannot encode PACKAGED: ${record.data.byteLength} bytes exceed QEMU's limit of 4 GiB - 1`,
        );
      }
      writer.uint16(4).uint32(record.data.byteLength).write(record.data);
      return;
    case "RECV_BITMAP": {
      const name = ENCODER.encode(record.block);
      writer.uint16(1 + name.byteLength).countedString(record.block);
      return;
    }
    default:
      writer.uint16(0);
  }
}

function advise(
  payload: Uint8Array,
  options: DecodeCommandOptions,
): CommandRecord {
  const { offset: at, payloadOffset, pageSize } = options;
  const length = payload.byteLength;
  const name = "POSTCOPY_ADVISE";
  if (length === 0) return { type: "command", command: name };
  if (length !== 16) {
    throw commandError(
      name,
      at,
      `payload length ${length} is neither 0 nor 16`,
    );
  }
  const pageSizeSummary = be64Number(payload, 0, payloadOffset);
  const targetPageSize = be64Number(payload, 8, payloadOffset + 8);
  if (targetPageSize !== pageSize) {
    throw commandError(
      name,
      at,
      `target page size ${targetPageSize} differs from ${pageSize}`,
      payloadOffset + 8,
    );
  }
  return { type: "command", command: name, pageSizeSummary, targetPageSize };
}

function discard(
  payload: Uint8Array,
  options: DecodeCommandOptions,
): CommandRecord {
  const { offset: at, payloadOffset, blocks } = options;
  const fail = (what: string, offset = at): never => {
    throw commandError("POSTCOPY_RAM_DISCARD", at, what, offset);
  };
  if (payload.byteLength < 20) {
    fail(`payload length ${payload.byteLength} is below the minimum of 20`);
  }
  if (payload[0] !== 0) {
    fail(`version ${payload[0]} is not supported, expected 0`, payloadOffset);
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
      payloadOffset + 2 + nameLength,
    );
  }
  const info = blocks.get(block);
  if (blocks.size > 0 && info === undefined) {
    fail(`block "${block}" is unknown`, payloadOffset + 2);
  }
  const ranges: DiscardRange[] = [];
  for (let p = 3 + nameLength; p < payload.byteLength; p += 16) {
    const start = be64Number(payload, p, payloadOffset + p);
    const length = be64Number(payload, p + 8, payloadOffset + p + 8);
    if (info && start + length > info.usedLength) {
      fail(
        `range ${start}+${length} lies past the end of block "${block}" (${info.usedLength} bytes)`,
        payloadOffset + p,
      );
    }
    ranges.push({ start, length });
  }
  return { type: "command", command: "POSTCOPY_RAM_DISCARD", block, ranges };
}

function recvBitmap(
  payload: Uint8Array,
  options: DecodeCommandOptions,
): CommandRecord {
  const { offset: at, payloadOffset, blocks } = options;
  const length = payload.byteLength;
  if (length < 1 || payload[0]! + 1 !== length) {
    throw commandError(
      "RECV_BITMAP",
      at,
      `payload length ${length} does not match the block name length ${
        payload[0] ?? "(missing)"
      }`,
    );
  }
  const block = TEXT.decode(payload.subarray(1));
  if (blocks.size > 0 && !blocks.has(block)) {
    throw commandError(
      "RECV_BITMAP",
      at,
      `block "${block}" is unknown`,
      payloadOffset + 1,
    );
  }
  return { type: "command", command: "RECV_BITMAP", block };
}

function encodeDiscard(
  record: CommandRecord & { command: "POSTCOPY_RAM_DISCARD" },
  writer: ByteWriter,
): void {
  const name = ENCODER.encode(record.block);
  const length = 3 + name.byteLength + 16 * record.ranges.length;
  if (length > 0xffff || name.byteLength > 255) {
    throw new RangeError(
      `Cannot encode POSTCOPY_RAM_DISCARD: ${record.ranges.length} ranges of block "${record.block}" do not fit one command`,
    );
  }
  writer.uint16(length).uint8(0).uint8(name.byteLength).write(name).uint8(0);
  for (const range of record.ranges) {
    writer.uint64(range.start).uint64(range.length);
  }
}

function commandError(
  name: string,
  at: number,
  what: string,
  offset: number = at,
): StreamFormatError {
  return new StreamFormatError(
    `Cannot decode command ${name} at offset ${at}: ${what}`,
    { offset },
  );
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

const TEXT = new TextDecoder();
const ENCODER = new TextEncoder();
