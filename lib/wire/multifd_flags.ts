/**
 * The flags word of a multifd packet (QEMU 7.2 `MULTIFD_FLAG_*`,
 * `migration/multifd.h`), a big-endian u32 at byte 8 of the packet:
 *
 * ```
 * bit 0      SYNC         the channel's last packet before a RAM EOS on the main channel
 * bits 1-3   compression  0 none, 1 zlib, 2 zstd (5-7 unknown to 7.2)
 * bits 4-31  unused       zero from QEMU 7.2, which ignores them
 * ```
 *
 * The compression bits are set only on packets that carry pages; a packet
 * without pages has them at 0 whatever the method.
 *
 * @module
 */

/**
 * Flag bits of a multifd packet (QEMU 7.2 `MULTIFD_FLAG_*`).
 *
 * @example Usage
 * ```ts
 * import { MULTIFD_FLAG } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const flags = MULTIFD_FLAG.SYNC | MULTIFD_FLAG.ZSTD;
 * assert.equal(flags & MULTIFD_FLAG.COMPRESSION_MASK, MULTIFD_FLAG.ZSTD);
 * ```
 */
export const MULTIFD_FLAG = {
  /** The sender's last packet before a RAM EOS on the main channel. */
  SYNC: 1 << 0,
  /** The three bits that name the compression method. */
  COMPRESSION_MASK: 7 << 1,
  /** Pages as they are (also what a packet without pages carries). */
  NOCOMP: 0 << 1,
  /** One zlib stream per channel. */
  ZLIB: 1 << 1,
  /** One zstd frame per channel. */
  ZSTD: 2 << 1,
} as const;

/** A multifd compression method, named as QEMU's `multifd-compression` parameter. */
export type MultifdCompression = "none" | "zlib" | "zstd";

const COMPRESSION_BY_BITS: Record<number, MultifdCompression> = {
  [MULTIFD_FLAG.NOCOMP]: "none",
  [MULTIFD_FLAG.ZLIB]: "zlib",
  [MULTIFD_FLAG.ZSTD]: "zstd",
};

const BITS_BY_COMPRESSION: Record<MultifdCompression, number> = {
  none: MULTIFD_FLAG.NOCOMP,
  zlib: MULTIFD_FLAG.ZLIB,
  zstd: MULTIFD_FLAG.ZSTD,
};

/**
 * The compression method that `flags` names, or `undefined` for bits QEMU
 * 7.2 does not know. Meaningless for a packet without pages, whose bits
 * are always 0.
 *
 * @example Usage
 * ```ts
 * import { MULTIFD_FLAG, multifdCompressionOf } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(multifdCompressionOf(MULTIFD_FLAG.SYNC | MULTIFD_FLAG.ZLIB), "zlib");
 * assert.equal(multifdCompressionOf(0), "none");
 * assert.equal(multifdCompressionOf(4 << 1), undefined);
 * ```
 *
 * @param flags A packet's flags word.
 * @returns The method, or `undefined`.
 */
export function multifdCompressionOf(
  flags: number,
): MultifdCompression | undefined {
  return COMPRESSION_BY_BITS[flags & MULTIFD_FLAG.COMPRESSION_MASK];
}

/**
 * The flag bits that name `compression`.
 *
 * @example Usage
 * ```ts
 * import { MULTIFD_FLAG, multifdCompressionFlag } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(multifdCompressionFlag("zstd"), MULTIFD_FLAG.ZSTD);
 * ```
 *
 * @param compression The method.
 * @returns Its bits.
 */
export function multifdCompressionFlag(
  compression: MultifdCompression,
): number {
  return BITS_BY_COMPRESSION[compression];
}
