/**
 * A small seeded pseudo-random generator (mulberry32): the same seed gives
 * the same sequence everywhere, so workloads and test data are
 * reproducible. Not for secrets.
 *
 * @example Usage
 * ```ts
 * import { SeededRandom } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const a = new SeededRandom(42);
 * const b = new SeededRandom(42);
 * assert.equal(a.nextUint32(), b.nextUint32());
 * assert.ok(a.nextInt(10) < 10);
 * const saved = a.state;
 * const next = a.nextUint32();
 * assert.equal(new SeededRandom(0, saved).nextUint32(), next);
 * ```
 */
export class SeededRandom {
  #state: number;

  /**
   * Constructs a new instance.
   *
   * @param seed Any integer; only its low 32 bits are used.
   * @param state A state saved from {@linkcode SeededRandom.state}, to
   *   continue a sequence (overrides `seed`).
   */
  constructor(seed: number, state?: number) {
    this.#state = (state ?? seed) >>> 0;
  }

  /** The generator's state, to save and restore the sequence. */
  get state(): number {
    return this.#state;
  }

  /**
   * The next unsigned 32-bit integer.
   *
   * @returns The integer.
   */
  nextUint32(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /**
   * An integer in `[0, max)`.
   *
   * @param max The exclusive bound, 1..2^32.
   * @returns The integer.
   */
  nextInt(max: number): number {
    return Math.floor(this.nextUint32() / 0x1_0000_0000 * max);
  }

  /**
   * Fills `bytes` with pseudo-random bytes, none of whose 4-byte words is
   * zero (so a filled page is never a zero page).
   *
   * @param bytes The buffer; 4-byte aligned lengths fill fastest.
   * @returns The same buffer.
   */
  fill<T extends Uint8Array>(bytes: T): T {
    const aligned = (bytes.byteOffset & 3) === 0;
    const words = aligned
      ? new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2)
      : undefined;
    let i = 0;
    if (words) {
      for (; i < words.length; i++) words[i] = this.nextUint32() | 1;
      i <<= 2;
    }
    for (; i < bytes.byteLength; i++) bytes[i] = (this.nextUint32() & 0xff) | 1;
    return bytes;
  }
}
