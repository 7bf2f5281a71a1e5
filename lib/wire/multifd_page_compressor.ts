/**
 * The sending side of multifd compression, as QEMU 7.2 does it
 * (`migration/multifd-zlib.c`, `migration/multifd-zstd.c`):
 *
 * - one compression stream per channel for the whole migration, so a
 *   packet may refer back to pages of the channel's earlier packets;
 * - zlib: a zlib-wrapped deflate stream (`deflateInit`, window 15, default
 *   memory level and strategy) at `multifd-zlib-level`; each page is fed
 *   with no flush and the packet's last page with a sync flush, so every
 *   packet ends on a byte boundary with `00 00 ff ff` and the stream is
 *   never finished; the first packet opens with the 2-byte zlib header;
 * - zstd: one zstd frame (`ZSTD_initCStream` at `multifd-zstd-level`, no
 *   checksum, size unknown) that is never ended; the packet's last page is
 *   fed with `ZSTD_e_flush`;
 * - the packet's `next_packet_size` is the compressed size, and a packet
 *   without pages compresses nothing.
 *
 * @module
 */

import { concatBytes } from "../bytes/concat_bytes.ts";
import { NodeZlibSession } from "./_node_zlib_session.ts";
import type { MultifdCompression } from "./multifd_flags.ts";

/** Options for {@linkcode MultifdPageCompressor}. */
export interface MultifdPageCompressorOptions {
  /**
   * The compression level: 0–9 for zlib (`multifd-zlib-level`), 0–20 for
   * zstd (`multifd-zstd-level`, 0 meaning zstd's default); ignored for
   * none.
   *
   * @default {1}
   */
  level?: number;
}

/**
 * Compresses the pages of one multifd channel, packet by packet, into the
 * data that follows each packet header. Keep one per channel for the whole
 * migration: its state carries over from packet to packet, as the
 * receiver's does.
 *
 * @example Usage
 * ```ts
 * import { MultifdPageCompressor, MultifdPageDecompressor } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const compressor = new MultifdPageCompressor("zlib");
 * const decompressor = new MultifdPageDecompressor("zlib");
 * const pages = [new Uint8Array(4096).fill(1), new Uint8Array(4096).fill(2)];
 * const data = await compressor.compress(pages);
 * assert.deepEqual(data.subarray(0, 2), new Uint8Array([0x78, 0x01])); // zlib header, level 1
 * assert.deepEqual(data.subarray(-4), new Uint8Array([0, 0, 0xff, 0xff])); // sync flush
 * const out = await decompressor.decompress(data, 2);
 * assert.equal(out[0], 1);
 * assert.equal(out[4096], 2);
 * compressor.close();
 * decompressor.close();
 * ```
 */
export class MultifdPageCompressor {
  readonly #compression: MultifdCompression;
  readonly #session: NodeZlibSession | undefined;

  /**
   * Constructs a new instance.
   *
   * @param compression The method.
   * @param options The level.
   * @throws {RangeError} If the level is outside what QEMU 7.2 accepts for the method.
   */
  constructor(
    compression: MultifdCompression,
    options: MultifdPageCompressorOptions = {},
  ) {
    const { level = 1 } = options;
    this.#compression = compression;
    if (compression === "none") return;
    const max = compression === "zlib" ? 9 : 20;
    if (!Number.isInteger(level) || level < 0 || level > max) {
      throw new RangeError(
        `Cannot construct MultifdPageCompressor as the ${compression} level must be an integer from 0 to ${max}: received ${level}`,
      );
    }
    this.#session = new NodeZlibSession(
      compression === "zlib" ? "deflate" : "zstd-compress",
      level,
    );
  }

  /** The method. */
  get compression(): MultifdCompression {
    return this.#compression;
  }

  /**
   * Compresses one packet's pages. Calls run in call order.
   *
   * @param pages The pages, in the packet's offset order; they must not
   *   change until the promise settles.
   * @returns The packet's data: the pages one after the other for none,
   *   the compressed bytes otherwise (empty when there is no page).
   */
  compress(pages: readonly Uint8Array[]): Promise<Uint8Array> {
    if (pages.length === 0) return Promise.resolve(new Uint8Array(0));
    if (this.#session === undefined) {
      return Promise.resolve(concatBytes(pages));
    }
    return this.#session.process(pages);
  }

  /** Frees the compression stream; later calls fail. */
  close(): void {
    this.#session?.close();
  }
}
