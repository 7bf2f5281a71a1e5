/**
 * The start of a migration stream: the header and the CONFIGURATION
 * section that may follow it (QEMU's `qemu_savevm_state_header()` and
 * `vmstate_configuration` in `migration/savevm.c`).
 *
 * ```
 * header          be32 0x5145564d "QEVM", be32 3
 * configuration   0x07 be32 len, machine[len],
 *                 (0x05 u8 n "configuration/<name>" be32 1 body)*
 *   target-page-bits   be32 bits (10..30)
 *   capabilities       be32 count (<= 256), (u8 n name)*
 *   uuid               16 bytes
 * ```
 *
 * A subsection follows while the next bytes are 0x05 and a name under
 * "configuration/"; anything else ends the section (QEMU's rule), so the
 * section's end is known only once those bytes are seen, or the stream
 * ended. The decoder here is a step function over the bytes buffered so
 * far.
 *
 * @module
 */

import type { ByteWriter } from "../bytes/byte_writer.ts";
import { StreamFormatError } from "../errors.ts";
import type { ByteReader } from "../streams/byte_reader.ts";
import { type NeedBytes, readStep, StepCursor } from "./_step_cursor.ts";
import type { ConfigurationRecord, HeaderRecord } from "./migration_record.ts";
import {
  QEMU_VM,
  QEMU_VM_FILE_MAGIC,
  QEMU_VM_FILE_VERSION,
} from "./qemu_vm.ts";

/** Size of the stream header in bytes. */
export const STREAM_HEADER_SIZE = 8;

/** The longest machine name accepted. */
const MAX_MACHINE_NAME = 1024;

/** The most capabilities one CONFIGURATION may list. */
const MAX_CAPABILITIES = 256;

const PREFIX = "configuration/";

/** What {@linkcode decodeConfiguration} made of the bytes it was given. */
export type ConfigurationStep =
  | NeedBytes
  | {
    /** The section is decoded. */
    type: "configuration";
    /** The section. */
    record: ConfigurationRecord;
    /** Bytes it took, after its 0x07 type byte. */
    size: number;
  };

/**
 * Decodes the 8-byte stream header.
 *
 * @param bytes At least 8 bytes; the header is the first 8.
 * @param offset Stream offset of `bytes[0]`.
 * @returns The header record.
 * @throws {StreamFormatError} If the magic or the version is wrong.
 */
export function decodeStreamHeader(
  bytes: Uint8Array,
  offset: number,
): HeaderRecord {
  const cursor = new StepCursor(bytes, { offset });
  const magic = cursor.uint32(0);
  if (magic !== QEMU_VM_FILE_MAGIC) {
    throw new StreamFormatError(
      `Cannot decode stream header at offset ${offset}: magic ${
        hex(magic, 8)
      } is not "QEVM" (0x5145564d), so this is not a migration stream${
        // A TLS record header: handshake (0x16), version 3.x.
        bytes[0] === 0x16 && bytes[1] === 0x03
          ? ": it starts a TLS handshake (the source uses TLS, so give this side tls-creds too)"
          : ""}`,
      { offset },
    );
  }
  const version = cursor.uint32(4);
  if (version !== QEMU_VM_FILE_VERSION) {
    throw new StreamFormatError(
      `Cannot decode stream header at offset ${
        offset + 4
      }: version ${version} ${
        version === 2 ? "is the obsolete v2 format" : "is not supported"
      }, expected ${QEMU_VM_FILE_VERSION}`,
      { offset: offset + 4 },
    );
  }
  return { type: "header", version };
}

/**
 * Decodes a CONFIGURATION section from the bytes after its 0x07 type
 * byte, or tells how many bytes it needs first.
 *
 * @param bytes The bytes after the type byte (more may follow the section).
 * @param options Stream offset of `bytes[0]`, and whether `bytes` is all
 *   there is.
 * @returns The section and its size, or how many bytes to have first.
 * @throws {StreamFormatError} If the section is not valid.
 */
export function decodeConfiguration(
  bytes: Uint8Array,
  options: { offset: number; ended: boolean },
): ConfigurationStep {
  const cursor = new StepCursor(bytes, options);
  if (!cursor.need(0, 4, "the machine name length")) return cursor.more;
  const length = cursor.uint32(0);
  if (length > MAX_MACHINE_NAME) {
    throw configurationError(
      cursor.at(0),
      `machine name length ${length} exceeds ${MAX_MACHINE_NAME}`,
    );
  }
  if (!cursor.need(4, length, "the machine name")) return cursor.more;
  const record: ConfigurationRecord = {
    type: "configuration",
    machine: TEXT.decode(bytes.subarray(4, 4 + length)),
  };
  let at = 4 + length;
  while (true) {
    const name = subsectionName(cursor, at);
    if (name === "need") return cursor.more;
    if (name === undefined) return { type: "configuration", record, size: at };
    const end = subsection(cursor, at, name, record);
    if (end === "need") return cursor.more;
    at = end;
  }
}

/**
 * Reads the stream header and the CONFIGURATION section when one follows.
 *
 * @param reader The bytes, positioned at the start of the stream.
 * @returns The header record, then the CONFIGURATION record if any.
 * @throws {StreamFormatError} If either is not valid.
 * @throws {UnexpectedEndOfStreamError} If the stream ends inside either.
 */
export async function readStreamHeader(
  reader: ByteReader,
): Promise<[HeaderRecord] | [HeaderRecord, ConfigurationRecord]> {
  await reader.require(STREAM_HEADER_SIZE, "the stream header");
  const at = reader.offset;
  const header = decodeStreamHeader(reader.take(STREAM_HEADER_SIZE), at);
  if (
    !await reader.ensure(1) || reader.peekUint8() !== QEMU_VM.CONFIGURATION
  ) {
    return [header];
  }
  reader.takeUint8();
  const { record } = await readStep(
    reader,
    Infinity,
    (bytes, offset, ended) => decodeConfiguration(bytes, { offset, ended }),
  );
  return [header, record];
}

/**
 * Appends a CONFIGURATION section, type byte included.
 *
 * @param record The section.
 * @param writer Where the bytes go.
 * @throws {RangeError} If the UUID is not 16 bytes.
 */
export function encodeConfiguration(
  record: ConfigurationRecord,
  writer: ByteWriter,
): void {
  const name = ENCODER.encode(record.machine);
  writer.uint8(QEMU_VM.CONFIGURATION).uint32(name.byteLength).write(name);
  if (record.targetPageBits !== undefined) {
    writer.uint8(QEMU_VM.SUBSECTION)
      .countedString("configuration/target-page-bits").uint32(1)
      .uint32(record.targetPageBits);
  }
  if (record.capabilities !== undefined) {
    writer.uint8(QEMU_VM.SUBSECTION)
      .countedString("configuration/capabilities").uint32(1)
      .uint32(record.capabilities.length);
    for (const capability of record.capabilities) {
      writer.countedString(capability);
    }
  }
  if (record.uuid !== undefined) {
    if (record.uuid.byteLength !== 16) {
      throw new RangeError(
        `Cannot encode CONFIGURATION: the UUID must be 16 bytes: received ${record.uuid.byteLength}`,
      );
    }
    writer.uint8(QEMU_VM.SUBSECTION).countedString("configuration/uuid")
      .uint32(1).write(record.uuid);
  }
}

/** A subsection's name, and where the bytes after the name start. */
interface SubsectionName {
  name: string;
  end: number;
}

/**
 * The name of the subsection at `at`, `undefined` when the section ends
 * there, or `"need"` when the bytes do not tell yet.
 */
function subsectionName(
  cursor: StepCursor,
  at: number,
): SubsectionName | undefined | "need" {
  if (!cursor.settled(at, 2)) return "need";
  if (!cursor.has(at, 2)) return undefined;
  const bytes = cursor.bytes;
  if (bytes[at] !== QEMU_VM.SUBSECTION) return undefined;
  const nameLength = bytes[at + 1]!;
  if (nameLength < PREFIX.length + 1) return undefined;
  if (!cursor.settled(at, 2 + nameLength)) return "need";
  if (!cursor.has(at, 2 + nameLength)) return undefined;
  const end = at + 2 + nameLength;
  const name = TEXT.decode(bytes.subarray(at + 2, end));
  return name.startsWith(PREFIX) ? { name, end } : undefined;
}

/**
 * Decodes the subsection `name` at `at` into `record`; returns where the
 * next one starts, or `"need"`.
 */
function subsection(
  cursor: StepCursor,
  at: number,
  { name, end: versionAt }: SubsectionName,
  record: ConfigurationRecord,
): number | "need" {
  if (!cursor.need(versionAt, 4, `the version of "${name}"`)) return "need";
  const version = cursor.uint32(versionAt);
  if (version !== 1) {
    throw new StreamFormatError(
      `Cannot decode CONFIGURATION subsection "${name}" at offset ${
        cursor.at(versionAt)
      }: version ${version} is not supported, expected 1`,
      { offset: cursor.at(versionAt) },
    );
  }
  const bodyAt = versionAt + 4;
  switch (name) {
    case "configuration/target-page-bits":
      if (record.targetPageBits !== undefined) {
        throw duplicate(name, cursor, at);
      }
      return targetPageBits(cursor, bodyAt, record);
    case "configuration/capabilities":
      if (record.capabilities !== undefined) throw duplicate(name, cursor, at);
      return capabilities(cursor, bodyAt, record);
    case "configuration/uuid":
      if (record.uuid !== undefined) throw duplicate(name, cursor, at);
      if (!cursor.need(bodyAt, 16, "the UUID")) return "need";
      record.uuid = cursor.bytes.slice(bodyAt, bodyAt + 16);
      return bodyAt + 16;
    default:
      throw configurationError(
        cursor.at(at),
        `subsection "${name}" is unknown`,
      );
  }
}

function targetPageBits(
  cursor: StepCursor,
  at: number,
  record: ConfigurationRecord,
): number | "need" {
  if (!cursor.need(at, 4, "the target page bits")) return "need";
  const bits = cursor.uint32(at);
  if (bits < 10 || bits > 30) {
    throw configurationError(
      cursor.at(at),
      `target page bits ${bits} are out of range 10..30`,
    );
  }
  record.targetPageBits = bits;
  return at + 4;
}

function capabilities(
  cursor: StepCursor,
  at: number,
  record: ConfigurationRecord,
): number | "need" {
  if (!cursor.need(at, 4, "the capability count")) return "need";
  const count = cursor.uint32(at);
  if (count > MAX_CAPABILITIES) {
    throw configurationError(
      cursor.at(at),
      `capability count ${count} exceeds ${MAX_CAPABILITIES}`,
    );
  }
  const names: string[] = [];
  let next = at + 4;
  for (let i = 0; i < count; i++) {
    if (!cursor.need(next, 1, "a capability")) return "need";
    const length = cursor.bytes[next]!;
    if (!cursor.need(next, 1 + length, "a capability")) return "need";
    names.push(TEXT.decode(cursor.bytes.subarray(next + 1, next + 1 + length)));
    next += 1 + length;
  }
  record.capabilities = names;
  return next;
}

function configurationError(offset: number, what: string): StreamFormatError {
  return new StreamFormatError(
    `Cannot decode CONFIGURATION at offset ${offset}: ${what}`,
    { offset },
  );
}

function duplicate(
  name: string,
  cursor: StepCursor,
  at: number,
): StreamFormatError {
  return configurationError(
    cursor.at(at),
    `subsection "${name}" appears twice`,
  );
}

function hex(value: number, digits: number): string {
  return `0x${value.toString(16).padStart(digits, "0")}`;
}

const TEXT = new TextDecoder();
const ENCODER = new TextEncoder();
