/**
 * The flag bits in the low bits of every `ram` record header, named as QEMU
 * names them (`RAM_SAVE_FLAG_*` in QEMU's `migration/ram.c` / `ram.h`).
 *
 * ```
 * be64  offset | flags      flags = word & (page size - 1)
 * ```
 *
 * `FULL` (0x01) was renamed from the obsolete "full page" flag and is never
 * sent; `HOOK` is RDMA-only; `COMPRESS_PAGE` exists up to QEMU 9.0;
 * `MULTIFD_FLUSH` from QEMU 8.1.
 *
 * @example Usage
 * ```ts
 * import { RAM_SAVE_FLAG, ramSaveFlagNames } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(RAM_SAVE_FLAG.ZERO | RAM_SAVE_FLAG.CONTINUE, 0x22);
 * assert.equal(ramSaveFlagNames(0x22), "ZERO|CONTINUE");
 * ```
 */
export const RAM_SAVE_FLAG = {
  FULL: 0x001,
  ZERO: 0x002,
  MEM_SIZE: 0x004,
  PAGE: 0x008,
  EOS: 0x010,
  CONTINUE: 0x020,
  XBZRLE: 0x040,
  HOOK: 0x080,
  COMPRESS_PAGE: 0x100,
  MULTIFD_FLUSH: 0x200,
} as const;

/**
 * Spells flag bits with QEMU's names, joined by `|`; unnamed bits in hex.
 *
 * @example Usage
 * ```ts
 * import { ramSaveFlagNames } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(ramSaveFlagNames(0x48), "PAGE|XBZRLE");
 * assert.equal(ramSaveFlagNames(0x400), "0x400");
 * ```
 *
 * @param flags The flag bits.
 * @returns The names.
 */
export function ramSaveFlagNames(flags: number): string {
  const names: string[] = [];
  let rest = flags;
  for (const [name, bit] of Object.entries(RAM_SAVE_FLAG)) {
    if (flags & bit) {
      names.push(name);
      rest &= ~bit;
    }
  }
  if (rest !== 0) names.push(`0x${rest.toString(16)}`);
  return names.length === 0 ? "none" : names.join("|");
}
