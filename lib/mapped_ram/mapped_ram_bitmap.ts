/**
 * The written-pages bitmap of one RAM block in a mapped-ram file.
 *
 * QEMU stores it as its host's `unsigned long` array, written raw at the
 * block's `bitmap_offset`. For a little-endian 64-bit host, the only layout
 * handled here, that is:
 *
 * ```
 * byte   0        1        2             ⌈pages/64⌉*8 - 1
 *      [76543210][fedcba98][...]  ...   [........]
 *       bit i of the bitmap = bit (i % 8) of byte ⌊i / 8⌋
 * size ceil(pages / 64) * 8 bytes; bits from `pages` up to the end are padding
 * ```
 *
 * A set bit means the pages region holds that page's final content; a clear
 * bit means the page is zero (never written, or last seen as a zero page
 * while its region may still hold stale bytes).
 *
 * @module
 */

import { mappedRamBitmapSize } from "./mapped_ram_layout.ts";

/**
 * One bit per page of a block, in mapped-ram's on-disk byte order.
 *
 * @example Usage
 * ```ts
 * import { MappedRamBitmap } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bitmap = new MappedRamBitmap(100);
 * assert.equal(bitmap.bytes.byteLength, 16);
 * bitmap.set(9);
 * bitmap.set(10);
 * bitmap.set(64);
 * assert.equal(bitmap.bytes[1], 0b0000_0110);
 * assert.deepEqual([...bitmap.runs()], [[9, 11], [64, 65]]);
 * bitmap.clear(10);
 * assert.equal(bitmap.count(), 2);
 * ```
 */
export class MappedRamBitmap {
  readonly #pageCount: number;
  readonly #bytes: Uint8Array;

  /**
   * Constructs a new instance.
   *
   * @param pageCount Pages in the block.
   * @param bytes The bitmap as stored, `ceil(pageCount / 64) * 8` bytes;
   *   used in place, not copied. A zeroed bitmap when absent.
   * @throws {RangeError} If `bytes` has the wrong size.
   */
  constructor(pageCount: number, bytes?: Uint8Array) {
    const size = mappedRamBitmapSize(pageCount);
    if (bytes !== undefined && bytes.byteLength !== size) {
      throw new RangeError(
        `Cannot construct MappedRamBitmap as ${pageCount} pages need ${size} bytes: received ${bytes.byteLength}`,
      );
    }
    this.#pageCount = pageCount;
    this.#bytes = bytes ?? new Uint8Array(size);
  }

  /** Pages the bitmap covers. */
  get pageCount(): number {
    return this.#pageCount;
  }

  /** The stored bytes (not a copy: copy before handing them to a writer). */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  /**
   * Whether page `index` is stored.
   *
   * @param index The page index.
   * @returns Whether its bit is set.
   */
  has(index: number): boolean {
    this.#check(index);
    return (this.#bytes[index >>> 3]! & (1 << (index & 7))) !== 0;
  }

  /**
   * Marks page `index` as stored.
   *
   * @param index The page index.
   */
  set(index: number): void {
    this.#check(index);
    this.#bytes[index >>> 3]! |= 1 << (index & 7);
  }

  /**
   * Marks page `index` as zero.
   *
   * @param index The page index.
   */
  clear(index: number): void {
    this.#check(index);
    this.#bytes[index >>> 3]! &= ~(1 << (index & 7));
  }

  /**
   * Counts the stored pages (padding bits are not counted).
   *
   * @returns How many bits below `pageCount` are set.
   */
  count(): number {
    let total = 0;
    for (const [start, end] of this.runs()) total += end - start;
    return total;
  }

  /**
   * The runs of stored pages, in ascending order, as `[start, end)` page
   * index pairs. Padding bits are ignored.
   *
   * @returns The runs.
   */
  *runs(): Generator<[number, number]> {
    const bytes = this.#bytes;
    const count = this.#pageCount;
    let index = 0;
    while (index < count) {
      // Skip clear bits, a whole byte at a time where possible.
      while (index < count) {
        if ((index & 7) === 0 && bytes[index >>> 3] === 0) index += 8;
        else if ((bytes[index >>> 3]! & (1 << (index & 7))) === 0) index++;
        else break;
      }
      if (index >= count) return;
      const start = index;
      while (index < count) {
        if ((index & 7) === 0 && bytes[index >>> 3] === 0xff) index += 8;
        else if ((bytes[index >>> 3]! & (1 << (index & 7))) !== 0) index++;
        else break;
      }
      yield [start, Math.min(index, count)];
    }
  }

  /**
   * Finds a set padding bit: one at or past `pageCount`, which would name a
   * page outside the block.
   *
   * @returns The lowest such bit index, or `undefined` when there is none.
   */
  firstPaddingBit(): number | undefined {
    const bytes = this.#bytes;
    for (let index = this.#pageCount; index < bytes.byteLength * 8; index++) {
      if ((bytes[index >>> 3]! & (1 << (index & 7))) !== 0) return index;
    }
    return undefined;
  }

  #check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.#pageCount) {
      throw new RangeError(
        `Cannot access page ${index} of a mapped-ram bitmap: it covers ${this.#pageCount} pages`,
      );
    }
  }
}
