/**
 * The VMDESCRIPTION trailer that follows a precopy EOF (QEMU's
 * `qemu_savevm_state_complete_precopy_non_iterable()` writes it unless the
 * machine property `suppress-vmdesc` is set):
 *
 * ```
 * 0x06 be32 len, len bytes of JSON (vmdesc.ts)
 * ```
 *
 * The trailer is optional: a stream that ends right after EOF has none.
 * The decoder is a step function over the bytes buffered so far (see
 * _step_cursor.ts).
 *
 * @module
 */

import { StreamFormatError } from "../errors.ts";
import type { ByteReader } from "../streams/byte_reader.ts";
import { type NeedBytes, readStep, StepCursor } from "./_step_cursor.ts";
import type { VmdescRecord } from "./migration_record.ts";
import { QEMU_VM } from "./qemu_vm.ts";
import { parseVmdesc } from "./vmdesc.ts";

/** What {@linkcode decodeVmdescTrailer} made of the bytes it was given. */
export type VmdescTrailerStep =
  | NeedBytes
  | {
    /** The trailer is decoded, or the stream ended without one. */
    type: "trailer";
    /** The trailer, or `undefined` when the stream ended after EOF. */
    record: VmdescRecord | undefined;
    /** Bytes it took. */
    size: number;
  };

/**
 * Reads the trailer after EOF, if the stream does not end there.
 *
 * @param reader The bytes, positioned after EOF.
 * @param maxBytes The largest JSON accepted.
 * @returns The trailer, or `undefined` when the stream ended after EOF.
 * @throws {StreamFormatError} As {@linkcode decodeVmdescTrailer} does.
 * @throws {UnexpectedEndOfStreamError} If the stream ends inside it.
 */
export async function readVmdescTrailer(
  reader: ByteReader,
  maxBytes: number,
): Promise<VmdescRecord | undefined> {
  const { record } = await readStep(
    reader,
    5 + maxBytes,
    (bytes, offset, ended) =>
      decodeVmdescTrailer(bytes, { offset, ended, maxBytes }),
  );
  return record;
}

/**
 * Decodes the trailer after EOF, or tells how many bytes it needs first.
 *
 * @param bytes The bytes after EOF.
 * @param options Their stream offset, whether more bytes can come, and the
 *   largest JSON accepted.
 * @returns The trailer (or none) and its size, or how many bytes to have
 *   first.
 * @throws {StreamFormatError} If something other than a trailer follows
 *   EOF, or the JSON is too long or not a vmdesc.
 */
export function decodeVmdescTrailer(
  bytes: Uint8Array,
  options: { offset: number; ended: boolean; maxBytes: number },
): VmdescTrailerStep {
  const at = options.offset;
  const cursor = new StepCursor(bytes, options);
  if (bytes.byteLength === 0) {
    if (options.ended) return { type: "trailer", record: undefined, size: 0 };
    return { type: "need", bytes: 1 };
  }
  const type = bytes[0]!;
  if (type !== QEMU_VM.VMDESCRIPTION) {
    throw new StreamFormatError(
      `Cannot decode stream at offset ${at}: byte 0x${
        type.toString(16).padStart(2, "0")
      } follows EOF, expected VMDESCRIPTION (0x06) or the end`,
      { offset: at },
    );
  }
  if (!cursor.need(1, 4, "the vmdesc length")) return cursor.more;
  const length = cursor.uint32(1);
  if (length > options.maxBytes) {
    throw new StreamFormatError(
      `Cannot decode vmdesc length at offset ${
        at + 1
      }: ${length} bytes exceed the limit of ${options.maxBytes} bytes`,
      { offset: at + 1 },
    );
  }
  if (!cursor.need(5, length, "the vmdesc JSON")) return cursor.more;
  const data = bytes.slice(5, 5 + length);
  const document = parseVmdesc(data, at + 5);
  return {
    type: "trailer",
    record: { type: "vmdesc", data, document },
    size: 5 + length,
  };
}
