/**
 * The receiving side of multifd compression (QEMU 7.2
 * `migration/multifd-zlib.c`, `migration/multifd-zstd.c`): one inflate or
 * zstd decompression stream per channel for the whole migration, fed each
 * packet's `next_packet_size` bytes; the packet must give back exactly its
 * pages. multifd_page_compressor.ts describes the sending side.
 *
 * @module
 */

import { StreamFormatError } from "../errors.ts";
import { NodeZlibSession } from "./_node_zlib_session.ts";
import type { MultifdCompression } from "./multifd_flags.ts";
import { multifdPageSlots } from "./multifd_packet.ts";

/** Options for {@linkcode MultifdPageDecompressor}. */
export interface MultifdPageDecompressorOptions {
  /**
   * The target page size.
   *
   * @default {4096}
   */
  pageSize?: number;
}

/** Options for {@linkcode MultifdPageDecompressor.decompress}. */
export interface MultifdDecompressOptions {
  /**
   * Stream offset of the data's first byte, for error messages.
   *
   * @default {0}
   */
  offset?: number;
}

/**
 * Decompresses the packets of one multifd channel into their pages. Keep
 * one per channel for the whole migration, fed with the channel's packets
 * in order: a packet's data may refer back to earlier packets.
 *
 * @example Usage
 * ```ts
 * import { MultifdPageCompressor, MultifdPageDecompressor } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const compressor = new MultifdPageCompressor("zstd");
 * const decompressor = new MultifdPageDecompressor("zstd");
 * const page = new Uint8Array(4096).map((_, i) => i % 251);
 * const first = await compressor.compress([page]);
 * const second = await compressor.compress([page]); // refers back to the first packet
 * assert.ok(second.byteLength < 64);
 * assert.deepEqual(await decompressor.decompress(first, 1), page);
 * assert.deepEqual(await decompressor.decompress(second, 1), page);
 * compressor.close();
 * decompressor.close();
 * ```
 *
 * @example Corrupt data names its offset
 * ```ts
 * import { MultifdPageDecompressor, StreamFormatError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const decompressor = new MultifdPageDecompressor("zlib");
 * await assert.rejects(
 *   decompressor.decompress(new Uint8Array([1, 2, 3, 4]), 1, { offset: 1408 }),
 *   (error) => error instanceof StreamFormatError && error.offset === 1408,
 * );
 * decompressor.close();
 * ```
 */
export class MultifdPageDecompressor {
  readonly #compression: MultifdCompression;
  readonly #pageSize: number;
  readonly #session: NodeZlibSession | undefined;

  /**
   * Constructs a new instance.
   *
   * @param compression The method the channel's packets use.
   * @param options The page size.
   * @throws {RangeError} If the page size is not a power of two from 512 to 512 KiB.
   */
  constructor(
    compression: MultifdCompression,
    options: MultifdPageDecompressorOptions = {},
  ) {
    const { pageSize = 4096 } = options;
    multifdPageSlots(pageSize);
    this.#compression = compression;
    this.#pageSize = pageSize;
    if (compression === "none") return;
    this.#session = new NodeZlibSession(
      compression === "zlib" ? "inflate" : "zstd-decompress",
    );
  }

  /** The method. */
  get compression(): MultifdCompression {
    return this.#compression;
  }

  /**
   * Decompresses one packet's data. Calls run in call order.
   *
   * @param data The packet's data (`next_packet_size` bytes).
   * @param pageCount How many pages the packet carries (`normal_pages`).
   * @param options Stream offset of `data`.
   * @returns The pages, one after the other (for none: `data` itself).
   * @throws {StreamFormatError} If the data is corrupt or does not give
   *   exactly `pageCount` pages; for zlib and zstd the channel cannot go on.
   */
  async decompress(
    data: Uint8Array,
    pageCount: number,
    options: MultifdDecompressOptions = {},
  ): Promise<Uint8Array> {
    const { offset = 0 } = options;
    const expected = pageCount * this.#pageSize;
    if (this.#session === undefined || pageCount === 0) {
      if (data.byteLength !== (this.#session === undefined ? expected : 0)) {
        throw new StreamFormatError(
          `Cannot decompress multifd packet data at offset ${offset}: ${data.byteLength} bytes for ${pageCount} pages`,
          { offset },
        );
      }
      return data;
    }
    let pages: Uint8Array;
    try {
      pages = await this.#session.process([data]);
    } catch (cause) {
      throw new StreamFormatError(
        `Cannot decompress multifd packet data at offset ${offset}: the ${this.#compression} data is corrupt`,
        { offset, cause },
      );
    }
    if (pages.byteLength !== expected) {
      throw new StreamFormatError(
        `Cannot decompress multifd packet data at offset ${offset}: it gives ${pages.byteLength} bytes, not ${pageCount} pages of ${this.#pageSize}`,
        { offset },
      );
    }
    return pages;
  }

  /** Frees the decompression stream; later calls fail. */
  close(): void {
    this.#session?.close();
  }
}
