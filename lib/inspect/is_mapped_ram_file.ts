import type { RandomAccessFile } from "../transport/transport.ts";
import type { MigrationDecoderOptions } from "../wire/migration_decoder.ts";
import { hasMappedRamConfiguration } from "./_mapped_ram_file.ts";

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
  return await hasMappedRamConfiguration(file, {
    ...(options.offset === undefined ? {} : { offset: options.offset }),
    decoder: { kind: "prefix", ...options.decoder },
  });
}
