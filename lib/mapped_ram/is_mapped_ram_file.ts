import type { RandomAccessFile } from "../transport/transport.ts";
import type { MigrationDecoderOptions } from "../wire/migration_decoder.ts";
import { QEMU_VM_FILE_MAGIC, QEMU_VM_FILE_VERSION } from "../wire/qemu_vm.ts";
import { decodeFirstRecords } from "./_decode_first_records.ts";

/** Options for {@linkcode isMappedRamFile}. */
export interface IsMappedRamFileOptions {
  /**
   * File offset where the stream starts (QEMU's `file:PATH,offset=N`).
   *
   * @default {0}
   */
  offset?: number;
  /**
   * Decoder options for the stream header and CONFIGURATION.
   *
   * @default {{}}
   */
  decoder?: MigrationDecoderOptions;
}

/**
 * Tells whether a file holds a mapped-ram migration stream: a "QEVM"
 * version 3 header whose CONFIGURATION lists the `mapped-ram` capability.
 * Only the first bytes are read. Use it to choose between
 * {@linkcode analyzeMappedRamFile} and {@linkcode analyzeMigrationStream}.
 *
 * @example Usage
 * ```ts
 * import { encodeMigrationRecords, isMappedRamFile, openRandomAccessFile } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile();
 * const file = await openRandomAccessFile(path);
 * try {
 *   assert.equal(await isMappedRamFile(file), false); // empty
 *   await file.writeAt(0, encodeMigrationRecords([
 *     { type: "header", version: 3 },
 *     { type: "configuration", machine: "pc-q35-10.0", capabilities: ["mapped-ram"] },
 *   ]));
 *   assert.equal(await isMappedRamFile(file), true);
 * } finally {
 *   await file.close();
 *   await Deno.remove(path);
 * }
 * ```
 *
 * @param file The file; read only, not closed.
 * @param options Stream offset and decoder options.
 * @returns `true` for a mapped-ram stream; `false` for anything else that
 *   does not start with a "QEVM" version 3 header, or whose CONFIGURATION
 *   (if any) does not list `mapped-ram`.
 * @throws {StreamFormatError} If the header is right but the CONFIGURATION
 *   cannot be decoded.
 */
export async function isMappedRamFile(
  file: RandomAccessFile,
  options: IsMappedRamFileOptions = {},
): Promise<boolean> {
  const offset = options.offset ?? 0;
  if (await file.size() < offset + 8) return false;
  const head = new DataView((await file.readAt(offset, 8)).buffer);
  if (
    head.getUint32(0) !== QEMU_VM_FILE_MAGIC ||
    head.getUint32(4) !== QEMU_VM_FILE_VERSION
  ) {
    return false;
  }
  const { records } = await decodeFirstRecords(
    file,
    { offset, decoder: { kind: "prefix", ...options.decoder } },
    (record) => record.type !== "header",
  );
  return records.some((record) =>
    record.type === "configuration" &&
    record.capabilities?.includes("mapped-ram") === true
  );
}
