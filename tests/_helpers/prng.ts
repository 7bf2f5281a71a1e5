/**
 * A small seeded pseudo-random number generator for tests and golden data:
 * the same seed always gives the same sequence, on every platform.
 *
 * The generator is mulberry32 (32-bit state, period 2^32), which is fast and
 * good enough to pick chunk sizes and fill buffers; it is not for secrets.
 *
 * @module
 */

/** A seeded source of pseudo-random numbers. */
export interface Prng {
  /** Returns the next unsigned 32-bit integer. */
  nextUint32(): number;
  /**
   * Returns an integer in `[0, max)`.
   *
   * @param max The exclusive upper bound, a positive integer up to 2^32.
   */
  nextInt(max: number): number;
  /**
   * Fills `bytes` with pseudo-random bytes and returns it.
   *
   * @param bytes The buffer to fill.
   */
  fill<T extends Uint8Array>(bytes: T): T;
}

/**
 * Creates a mulberry32 generator seeded with `seed`.
 *
 * @example Usage
 * ```ts ignore
 * const prng = createPrng(42);
 * const size = 1 + prng.nextInt(4096);
 * const bytes = prng.fill(new Uint8Array(size));
 * ```
 *
 * @param seed Any integer; only its low 32 bits are used.
 * @returns The generator.
 */
export function createPrng(seed: number): Prng {
  let state = seed >>> 0;
  function nextUint32(): number {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  return {
    nextUint32,
    nextInt(max: number): number {
      if (!Number.isInteger(max) || max < 1 || max > 2 ** 32) {
        throw new RangeError(
          `Cannot pick a random integer as max must be an integer in [1, 2^32]: received ${max}`,
        );
      }
      return Math.floor(nextUint32() / 2 ** 32 * max);
    },
    fill<T extends Uint8Array>(bytes: T): T {
      const words = bytes.byteLength >>> 2;
      const view = new DataView(
        bytes.buffer,
        bytes.byteOffset,
        bytes.byteLength,
      );
      for (let i = 0; i < words; i++) view.setUint32(i * 4, nextUint32());
      for (let i = words * 4; i < bytes.byteLength; i++) {
        bytes[i] = nextUint32() & 0xff;
      }
      return bytes;
    },
  };
}
