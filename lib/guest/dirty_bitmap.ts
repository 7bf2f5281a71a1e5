/**
 * A fixed-size bitmap with one bit per guest page, stored in 32-bit words
 * (bit `i` is bit `i % 32` of word `i >> 5`), with the scans a migration
 * needs: next set bit, population count, merge, take-and-clear.
 *
 * @example Usage
 * ```ts
 * import { DirtyBitmap } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bitmap = new DirtyBitmap(100);
 * bitmap.set(3);
 * bitmap.setRange(40, 3);
 * assert.equal(bitmap.count(), 4);
 * assert.equal(bitmap.nextSet(4), 40);
 * assert.ok(bitmap.testAndClear(3));
 * assert.ok(!bitmap.test(3));
 * ```
 */
export class DirtyBitmap {
  readonly #size: number;
  #words: Uint32Array;

  /**
   * Constructs a new instance with every bit clear.
   *
   * @param size Number of bits (pages).
   */
  constructor(size: number) {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(
        `Cannot construct DirtyBitmap as size must be a non-negative integer: received ${size}`,
      );
    }
    this.#size = size;
    this.#words = new Uint32Array(Math.ceil(size / 32));
  }

  /** Number of bits. */
  get size(): number {
    return this.#size;
  }

  /** The backing words (bit `i` is bit `i % 32` of word `i >> 5`). */
  get words(): Uint32Array {
    return this.#words;
  }

  /**
   * Sets bit `index`.
   *
   * @param index The bit.
   */
  set(index: number): void {
    this.#words[index >>> 5]! |= 1 << (index & 31);
  }

  /**
   * Clears bit `index`.
   *
   * @param index The bit.
   */
  clear(index: number): void {
    this.#words[index >>> 5]! &= ~(1 << (index & 31));
  }

  /**
   * Tells whether bit `index` is set.
   *
   * @param index The bit.
   * @returns Whether it is set.
   */
  test(index: number): boolean {
    return (this.#words[index >>> 5]! & (1 << (index & 31))) !== 0;
  }

  /**
   * Clears bit `index` and tells whether it was set.
   *
   * @param index The bit.
   * @returns Whether it was set.
   */
  testAndClear(index: number): boolean {
    const word = index >>> 5;
    const mask = 1 << (index & 31);
    const was = (this.#words[word]! & mask) !== 0;
    this.#words[word]! &= ~mask;
    return was;
  }

  /**
   * Sets `count` bits starting at `start`.
   *
   * @param start The first bit.
   * @param count How many bits.
   */
  setRange(start: number, count: number): void {
    this.#range(start, count, true);
  }

  /**
   * Clears `count` bits starting at `start`.
   *
   * @param start The first bit.
   * @param count How many bits.
   */
  clearRange(start: number, count: number): void {
    this.#range(start, count, false);
  }

  /** Sets every bit. */
  setAll(): void {
    this.#words.fill(0xffff_ffff);
    const tail = this.#size & 31;
    if (tail !== 0) this.#words[this.#words.length - 1] = (1 << tail) - 1;
  }

  /** Clears every bit. */
  clearAll(): void {
    this.#words.fill(0);
  }

  /**
   * Counts the set bits.
   *
   * @returns The count.
   */
  count(): number {
    let total = 0;
    const words = this.#words;
    for (let i = 0; i < words.length; i++) {
      let v = words[i]!;
      if (v === 0) continue;
      v = v - ((v >>> 1) & 0x5555_5555);
      v = (v & 0x3333_3333) + ((v >>> 2) & 0x3333_3333);
      total += (((v + (v >>> 4)) & 0x0f0f_0f0f) * 0x0101_0101) >>> 24;
    }
    return total;
  }

  /**
   * Finds the first set bit at or after `from`.
   *
   * @param from Where to start looking.
   * @returns The bit, or `undefined` when none is set.
   */
  nextSet(from = 0): number | undefined {
    if (from >= this.#size) return undefined;
    const words = this.#words;
    let w = from >>> 5;
    let word = words[w]! & (0xffff_ffff << (from & 31));
    while (word === 0) {
      if (++w >= words.length) return undefined;
      word = words[w]!;
    }
    const index = (w << 5) + (31 - Math.clz32(word & -word));
    return index < this.#size ? index : undefined;
  }

  /**
   * A bitmap from bytes laid out as 64-bit little-endian words (bit `i` is
   * bit `i % 8` of byte `i / 8`), as QEMU's RECV_BITMAP dump carries it.
   *
   * @param bytes The bytes; at least `ceil(size / 8)` of them.
   * @param size Number of bits.
   * @returns The bitmap.
   */
  static fromLittleEndian(bytes: Uint8Array, size: number): DirtyBitmap {
    if (bytes.byteLength * 8 < size) {
      throw new RangeError(
        `Cannot read a ${size}-bit bitmap from ${bytes.byteLength} bytes`,
      );
    }
    const bitmap = new DirtyBitmap(size);
    for (let i = 0; i < size; i++) {
      if (bytes[i >>> 3]! & (1 << (i & 7))) bitmap.set(i);
    }
    return bitmap;
  }

  /**
   * The bits as 64-bit little-endian words, `ceil(size / 64) * 8` bytes
   * (QEMU's RECV_BITMAP dump layout).
   *
   * @returns The bytes.
   */
  toLittleEndian(): Uint8Array {
    const bytes = new Uint8Array(Math.ceil(this.#size / 64) * 8);
    for (let i = this.nextSet(0); i !== undefined; i = this.nextSet(i + 1)) {
      bytes[i >>> 3]! |= 1 << (i & 7);
    }
    return bytes;
  }

  /**
   * The runs of consecutive set bits, as `[first, count]` pairs in order.
   *
   * @returns The runs.
   */
  runs(): [number, number][] {
    const runs: [number, number][] = [];
    let start = this.nextSet(0);
    while (start !== undefined) {
      let end = start + 1;
      while (end < this.#size && this.test(end)) end++;
      runs.push([start, end - start]);
      start = this.nextSet(end);
    }
    return runs;
  }

  /**
   * Sets every bit that is set in `other` (same size).
   *
   * @param other The bitmap to merge in.
   */
  or(other: DirtyBitmap): void {
    this.#sameSize(other);
    const a = this.#words;
    const b = other.#words;
    for (let i = 0; i < a.length; i++) a[i]! |= b[i]!;
  }

  /**
   * Clears every bit that is set in `other` (same size).
   *
   * @param other The bits to clear.
   */
  andNot(other: DirtyBitmap): void {
    this.#sameSize(other);
    const a = this.#words;
    const b = other.#words;
    for (let i = 0; i < a.length; i++) a[i]! &= ~b[i]!;
  }

  /**
   * Returns a copy holding the current bits and clears this bitmap, as
   * KVM's dirty log hands over and resets its bits.
   *
   * @returns The bits that were set.
   */
  take(): DirtyBitmap {
    const taken = new DirtyBitmap(this.#size);
    const words = taken.#words;
    taken.#words = this.#words;
    this.#words = words;
    return taken;
  }

  /**
   * A copy of this bitmap.
   *
   * @returns The copy.
   */
  clone(): DirtyBitmap {
    const copy = new DirtyBitmap(this.#size);
    copy.#words.set(this.#words);
    return copy;
  }

  #sameSize(other: DirtyBitmap): void {
    if (other.#size !== this.#size) {
      throw new RangeError(
        `Cannot combine bitmaps of ${this.#size} and ${other.#size} bits`,
      );
    }
  }

  #range(start: number, count: number, value: boolean): void {
    if (start < 0 || count < 0 || start + count > this.#size) {
      throw new RangeError(
        `Cannot change bits ${start}..${
          start + count
        } of a ${this.#size}-bit bitmap`,
      );
    }
    let i = start;
    const end = start + count;
    const words = this.#words;
    while (i < end && (i & 31) !== 0) {
      if (value) this.set(i);
      else this.clear(i);
      i++;
    }
    while (i + 32 <= end) {
      words[i >>> 5] = value ? 0xffff_ffff : 0;
      i += 32;
    }
    while (i < end) {
      if (value) this.set(i);
      else this.clear(i);
      i++;
    }
  }
}
