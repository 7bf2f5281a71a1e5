/**
 * MIG_CMD_PACKAGED: a stream within the stream. At postcopy start the
 * source builds the device state in memory and sends it as one blob, so
 * the destination reads all of it off the connection before its guest
 * starts faulting on missing RAM (QEMU's `qemu_savevm_send_packaged()`).
 *
 * ```
 * 0x08 be16 7 (PACKAGED) be16 4 be32 N     then N bytes, no stream header:
 *   0x08 POSTCOPY_LISTEN
 *   0x04 FULL sections (device state) … 0x7e footers
 *   0x08 PING 3
 *   0x08 POSTCOPY_RUN
 * ```
 *
 * QEMU caps N at 4 GiB - 1 (`MAX_VM_CMD_PACKAGED_SIZE`); both directions
 * here enforce a cap, QEMU's by default.
 *
 * @module
 */

import { MAX_VM_CMD_PACKAGED_SIZE } from "./mig_cmd.ts";
import type { MigrationDecoderOptions } from "./migration_decoder.ts";
import { MigrationDecoderStream } from "./migration_decoder_stream.ts";
import { encodeMigrationRecords } from "./migration_encoder.ts";
import type { CommandRecord, MigrationRecord } from "./migration_record.ts";

/** Options for {@linkcode encodePostcopyPackage}. */
export interface PostcopyPackageOptions {
  /**
   * The target page size (for RAM records inside the package, if any).
   *
   * @default {4096}
   */
  pageSize?: number;
  /**
   * Largest package accepted.
   *
   * @default {MAX_VM_CMD_PACKAGED_SIZE}
   */
  maxBytes?: number;
}

/**
 * Wraps records (LISTEN, device sections, PING, RUN) into one PACKAGED
 * command.
 *
 * @example Usage
 * ```ts
 * import { encodePostcopyPackage } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const packaged = encodePostcopyPackage([
 *   { type: "command", command: "POSTCOPY_LISTEN" },
 *   { type: "command", command: "POSTCOPY_RUN" },
 * ]);
 * assert.equal(packaged.command, "PACKAGED");
 * assert.deepEqual(packaged.data, new Uint8Array([8, 0, 4, 0, 0, 8, 0, 5, 0, 0]));
 * ```
 *
 * @param records The nested stream's records.
 * @param options Page size and size cap.
 * @returns The PACKAGED command record.
 * @throws {RangeError} If the package exceeds the cap.
 */
export function encodePostcopyPackage(
  records: readonly MigrationRecord[],
  options: PostcopyPackageOptions = {},
): CommandRecord & { command: "PACKAGED" } {
  const data = encodeMigrationRecords(
    records,
    options.pageSize === undefined ? {} : { pageSize: options.pageSize },
  );
  const cap = Math.min(
    options.maxBytes ?? MAX_VM_CMD_PACKAGED_SIZE,
    MAX_VM_CMD_PACKAGED_SIZE,
  );
  if (data.byteLength > cap) {
    throw new RangeError(
      `Cannot build the postcopy package: ${data.byteLength} bytes exceed the limit of ${cap} bytes`,
    );
  }
  return { type: "command", command: "PACKAGED", data };
}

/**
 * Decodes the nested stream of a PACKAGED command.
 *
 * @example Usage
 * ```ts
 * import { decodePostcopyPackage, encodePostcopyPackage } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const packaged = encodePostcopyPackage([
 *   { type: "command", command: "POSTCOPY_LISTEN" },
 *   { type: "command", command: "PING", value: 3 },
 *   { type: "command", command: "POSTCOPY_RUN" },
 * ]);
 * const records = await decodePostcopyPackage(packaged.data);
 * assert.deepEqual(records.map((r) => r.type === "command" ? r.command : r.type), [
 *   "POSTCOPY_LISTEN", "PING", "POSTCOPY_RUN",
 * ]);
 * ```
 *
 * @param data The package bytes.
 * @param options Decoder options (device layouts, known blocks, cap).
 * @returns The records.
 * @throws {StreamFormatError} If the package is not a valid nested stream.
 * @throws {RangeError} If it exceeds `maxBytes`.
 */
export async function decodePostcopyPackage(
  data: Uint8Array,
  options: MigrationDecoderOptions & { maxBytes?: number } = {},
): Promise<MigrationRecord[]> {
  const cap = Math.min(
    options.maxBytes ?? MAX_VM_CMD_PACKAGED_SIZE,
    MAX_VM_CMD_PACKAGED_SIZE,
  );
  if (data.byteLength > cap) {
    throw new RangeError(
      `Cannot decode the postcopy package: ${data.byteLength} bytes exceed the limit of ${cap} bytes`,
    );
  }
  const { maxBytes: _, ...decoder } = options;
  const batches = await Array.fromAsync(
    ReadableStream.from([data]).pipeThrough(
      new MigrationDecoderStream({ ...decoder, kind: "packaged" }),
    ),
  );
  return batches.flat();
}
