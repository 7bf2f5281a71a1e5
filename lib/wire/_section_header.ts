/**
 * The framing of iterative sections: the headers of START, PART and END
 * sections and the footer that closes every section (QEMU's
 * `qemu_loadvm_section_start_full()`, `qemu_loadvm_section_part_end()` and
 * `check_section_footer()` in `migration/savevm.c`).
 *
 * ```
 * start      0x01 be32 section_id, u8 n idstr[n], be32 instance_id, be32 version_id
 * part/end   0x02|0x03 be32 section_id
 * footer     0x7e be32 section_id
 * ```
 *
 * Only `ram` version 4 is accepted as an iterative section. The decoders
 * are step functions over the bytes buffered so far (see _step_cursor.ts).
 *
 * @module
 */

import { StreamFormatError } from "../errors.ts";
import type { ByteReader } from "../streams/byte_reader.ts";
import { type NeedBytes, readStep, StepCursor } from "./_step_cursor.ts";
import type { DecodedSection } from "./migration_decoder.ts";
import type {
  SectionFooterRecord,
  SectionPartRecord,
  SectionStartRecord,
} from "./migration_record.ts";
import { QEMU_VM } from "./qemu_vm.ts";

/** Size of a section footer in bytes. */
export const SECTION_FOOTER_SIZE = 5;

/** A START header after its type byte: id, a 255-byte idstr, instance, version. */
const MAX_SECTION_HEADER_SIZE = 4 + 1 + 255 + 8;

/** What {@linkcode decodeSectionHeader} made of the bytes it was given. */
export type SectionHeaderStep =
  | NeedBytes
  | {
    /** The header is decoded. */
    type: "section";
    /** The section's START, PART or END record. */
    record: SectionStartRecord | SectionPartRecord;
    /** Bytes it took, after its type byte. */
    size: number;
  };

/** What {@linkcode decodeSectionFooter} made of the bytes it was given. */
export type SectionFooterStep =
  | NeedBytes
  | {
    /** The footer is decoded. */
    type: "footer";
    /** The footer record. */
    record: SectionFooterRecord;
    /** Bytes it took. */
    size: number;
  };

/** Options for {@linkcode decodeSectionHeader}. */
export interface DecodeSectionHeaderOptions {
  /** Stream offset of the section's type byte. */
  offset: number;
  /** Whether the bytes given are all there is. */
  ended: boolean;
  /** The sections started so far. */
  sections: ReadonlyMap<number, DecodedSection>;
}

/**
 * Decodes the header of a START, PART or END section from the bytes after
 * its type byte, or tells how many bytes it needs first.
 *
 * @param type The section type byte.
 * @param bytes The bytes after it.
 * @param options Where the section starts, whether more bytes can come,
 *   and the sections started so far.
 * @returns The record and its size, or how many bytes to have first.
 * @throws {StreamFormatError} If the section is not a `ram` version 4 START
 *   under a new id, or a PART or END of a section never started.
 */
export function decodeSectionHeader(
  type: number,
  bytes: Uint8Array,
  options: DecodeSectionHeaderOptions,
): SectionHeaderStep {
  const at = options.offset;
  const cursor = new StepCursor(bytes, {
    offset: at + 1,
    ended: options.ended,
  });
  if (!cursor.need(0, 4, "a section id")) return cursor.more;
  const sectionId = cursor.uint32(0);
  if (type === QEMU_VM.SECTION_START) {
    return sectionStart(cursor, sectionId, options);
  }
  const name = type === QEMU_VM.SECTION_PART ? "PART" : "END";
  if (!options.sections.has(sectionId)) {
    throw new StreamFormatError(
      `Cannot decode section ${name} at offset ${at}: section id ${sectionId} was never started`,
      { offset: at },
    );
  }
  return {
    type: "section",
    record: {
      type: type === QEMU_VM.SECTION_PART ? "section-part" : "section-end",
      sectionId,
    },
    size: 4,
  };
}

/**
 * Reads the header of a START, PART or END section after its type byte.
 *
 * @param reader The bytes, positioned after the type byte.
 * @param type The type byte.
 * @param options Where the section starts and the sections started so far.
 * @returns The section's START, PART or END record.
 * @throws {StreamFormatError} As {@linkcode decodeSectionHeader} does.
 * @throws {UnexpectedEndOfStreamError} If the stream ends inside it.
 */
export async function readSectionHeader(
  reader: ByteReader,
  type: number,
  options: Omit<DecodeSectionHeaderOptions, "ended">,
): Promise<SectionStartRecord | SectionPartRecord> {
  const { record } = await readStep(
    reader,
    MAX_SECTION_HEADER_SIZE,
    (bytes, _, ended) =>
      decodeSectionHeader(type, bytes, { ...options, ended }),
  );
  return record;
}

/**
 * Reads the footer of section `sectionId`.
 *
 * @param reader The bytes, positioned at the footer.
 * @param sectionId The section it must close.
 * @returns The footer record.
 * @throws {StreamFormatError} As {@linkcode decodeSectionFooter} does.
 * @throws {UnexpectedEndOfStreamError} If the stream ends inside it.
 */
export async function readSectionFooter(
  reader: ByteReader,
  sectionId: number,
): Promise<SectionFooterRecord> {
  const { record } = await readStep(
    reader,
    SECTION_FOOTER_SIZE,
    (bytes, offset, ended) =>
      decodeSectionFooter(bytes, { offset, ended, sectionId }),
  );
  return record;
}

/**
 * Decodes a section footer, or tells how many bytes it needs first.
 *
 * @param bytes The bytes from the footer's first on.
 * @param options Its stream offset, whether more bytes can come, and the
 *   section it must close.
 * @returns The record and its size, or how many bytes to have first.
 * @throws {StreamFormatError} If the marker is not 0x7e or the footer
 *   names another section.
 */
export function decodeSectionFooter(
  bytes: Uint8Array,
  options: { offset: number; ended: boolean; sectionId: number },
): SectionFooterStep {
  const at = options.offset;
  const cursor = new StepCursor(bytes, options);
  if (!cursor.need(0, SECTION_FOOTER_SIZE, "a section footer")) {
    return cursor.more;
  }
  const marker = bytes[0]!;
  if (marker !== QEMU_VM.SECTION_FOOTER) {
    throw new StreamFormatError(
      `Cannot decode section footer at offset ${at}: expected byte 0x7e, found 0x${
        marker.toString(16).padStart(2, "0")
      }`,
      { offset: at },
    );
  }
  const id = cursor.uint32(1);
  if (id !== options.sectionId) {
    throw new StreamFormatError(
      `Cannot decode section footer at offset ${at}: section id ${id} does not match section ${options.sectionId}`,
      { offset: at },
    );
  }
  return {
    type: "footer",
    record: { type: "section-footer", sectionId: id },
    size: SECTION_FOOTER_SIZE,
  };
}

/**
 * The error for a type byte that starts no top-level item.
 *
 * @param type The type byte.
 * @param at Its stream offset.
 * @returns The error, to throw.
 */
export function topLevelTypeError(type: number, at: number): StreamFormatError {
  if (type === QEMU_VM.CONFIGURATION) {
    return new StreamFormatError(
      `Cannot decode section at offset ${at}: a CONFIGURATION section may only follow the stream header`,
      { offset: at },
    );
  }
  return new StreamFormatError(
    `Cannot decode section at offset ${at}: type byte 0x${
      type.toString(16).padStart(2, "0")
    } is not a top-level section type (${describeType(type)})`,
    { offset: at },
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

function sectionStart(
  cursor: StepCursor,
  sectionId: number,
  options: DecodeSectionHeaderOptions,
): SectionHeaderStep {
  const at = options.offset;
  if (!cursor.need(4, 1, "a section idstr")) return cursor.more;
  const length = cursor.bytes[4]!;
  if (!cursor.need(4, 1 + length, "a section idstr")) return cursor.more;
  const idstr = TEXT.decode(cursor.bytes.subarray(5, 5 + length));
  const fieldsAt = 5 + length;
  if (!cursor.need(fieldsAt, 8, "a section instance and version")) {
    return cursor.more;
  }
  const instanceId = cursor.uint32(fieldsAt);
  const versionId = cursor.uint32(fieldsAt + 4);
  if (idstr !== "ram") {
    throw new StreamFormatError(
      `Cannot decode section START at offset ${at}: iterative section "${idstr}" is not supported, only "ram" is`,
      { offset: at },
    );
  }
  if (versionId !== 4) {
    const versionAt = cursor.at(fieldsAt + 4);
    throw new StreamFormatError(
      `Cannot decode section START "ram" at offset ${versionAt}: version ${versionId} is not supported, expected 4`,
      { offset: versionAt },
    );
  }
  if (options.sections.has(sectionId)) {
    throw new StreamFormatError(
      `Cannot decode section START at offset ${at}: section id ${sectionId} was already started`,
      { offset: at },
    );
  }
  return {
    type: "section",
    record: { type: "section-start", sectionId, idstr, instanceId, versionId },
    size: fieldsAt + 8,
  };
}

const TEXT = new TextDecoder();
