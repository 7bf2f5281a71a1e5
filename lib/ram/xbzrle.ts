/**
 * XBZRLE: QEMU's page delta ("Xor Based Zero Run Length Encoding"), as a
 * pure encoder and a validating decoder.
 *
 * A delta turns the destination's copy of a page (`old`) into the new
 * page. It is a sequence of pairs; run lengths are the 2-byte ULEB128 of
 * `uleb128.ts`:
 *
 * ```
 * delta := pair*                      empty delta = page unchanged
 * pair  := ZLEN NZLEN DATA
 *   ZLEN   uleb(z)   equal bytes to skip; 0 only in the first pair
 *   NZLEN  uleb(k)   k >= 1 changed bytes
 *   DATA   k bytes   their new values
 * ```
 *
 * Runs are maximal (a zero run stops at the first differing byte, a
 * non-zero run at the first equal byte) and the final run of equal bytes
 * up to the end of the page is left out. In the RAM stream the delta is
 * the payload of an XBZRLE record (`u8 0x01, be16 len, len bytes`), framed
 * by the wire layer.
 *
 * The encoder reproduces QEMU's bytes exactly, including when it gives up:
 * with a limit `L` (QEMU passes the page size) it overflows as soon as
 *
 * - A: at the top of a pair, fewer than 2 bytes of room remain, even if the
 *   rest of the page turns out to be unchanged;
 * - B: after ZLEN, fewer than 2 bytes of room remain;
 * - C: after NZLEN, the k data bytes do not fit.
 *
 * (B never decides on its own, since whatever it rejects C would reject
 * too; it keeps NZLEN itself inside the limit, so an output buffer of
 * `limit` bytes always suffices.)
 *
 * The decoder checks the whole delta against every rule QEMU's loader
 * applies before it writes a byte, so a bad delta never leaves a page half
 * patched.
 *
 * Source: QEMU `migration/xbzrle.c` (format and limits), `util/cutils.c`
 * (ULEB128). Left out: QEMU's AVX-512 encoder variant, which is meant to
 * produce the same bytes.
 *
 * @module
 */

import { StreamFormatError } from "../errors.ts";
import { ULEB128_MAX } from "../bytes/uleb128.ts";

/**
 * What {@linkcode encodeXbzrle} produced: nothing to send, a delta, or an
 * overflow (the delta would not fit the limit; QEMU then sends the whole
 * page).
 */
export type XbzrleEncodeResult =
  | {
    /** Discriminant: every byte is equal; QEMU sends nothing for the page. */
    kind: "unchanged";
  }
  | {
    /** Discriminant: a delta that fits the limit. */
    kind: "encoded";
    /**
     * The delta, 2..limit bytes. A view into `options.output` when one was
     * given (valid until that buffer is reused), else a fresh copy.
     */
    delta: Uint8Array;
  }
  | {
    /** Discriminant: the delta would exceed the limit. */
    kind: "overflow";
  };

/** Options for {@linkcode encodeXbzrle}. */
export interface EncodeXbzrleOptions {
  /**
   * Most bytes the delta may take (QEMU's `dlen`). The encoder overflows by
   * QEMU's checks A/B/C, not only when the final size exceeds it.
   *
   * @default {old.length}
   */
  limit?: number;
  /**
   * A buffer of at least `limit` bytes to encode into and reuse across
   * calls. When given, an `"encoded"` result's `delta` is a view into it,
   * valid until the next call that writes it; copy it to keep it. When
   * absent, the delta is a fresh array the caller owns.
   */
  output?: Uint8Array;
}

/**
 * Encodes the change from `old` to `current` as an XBZRLE delta, byte for
 * byte as QEMU does.
 *
 * Compares four bytes at a time when both pages start on a 4-byte boundary
 * (any `Uint8Array` over a fresh `ArrayBuffer` does) and their length is a
 * multiple of 4, and byte by byte otherwise; both give the same result.
 *
 * @example Usage
 * ```ts
 * import { encodeXbzrle } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const old = new Uint8Array(4096);
 * const current = old.slice();
 * current[0x123] = 0x8a;
 * const result = encodeXbzrle(old, current);
 * assert.equal(result.kind, "encoded");
 * assert.deepEqual(result.kind === "encoded" && result.delta, new Uint8Array([0xa3, 0x02, 0x01, 0x8a]));
 * assert.deepEqual(encodeXbzrle(old, old.slice()), { kind: "unchanged" });
 * ```
 *
 * @example Reusing an output buffer
 * ```ts
 * import { encodeXbzrle } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const output = new Uint8Array(4096);
 * const current = new Uint8Array(4096).fill(1, 0, 200);
 * const result = encodeXbzrle(new Uint8Array(4096), current, { output });
 * assert.ok(result.kind === "encoded" && result.delta.buffer === output.buffer);
 * assert.equal(result.delta.length, 203);
 * ```
 *
 * @param old The page the destination holds.
 * @param current The new page, the same length as `old`.
 * @param options The limit and an output buffer to reuse.
 * @returns The delta, or why there is none.
 * @throws {RangeError} If the pages differ in length, the limit is not a
 * non-negative integer, `output` is shorter than the limit, or a run is
 * longer than 16383 bytes (possible only with pages of 16 KiB or more; QEMU
 * treats that as a bug).
 */
export function encodeXbzrle(
  old: Uint8Array,
  current: Uint8Array,
  options: EncodeXbzrleOptions = {},
): XbzrleEncodeResult {
  const size = old.length;
  if (current.length !== size) {
    throw new RangeError(
      `Cannot encode XBZRLE delta as the pages differ in length: old has ${size} bytes, current has ${current.length}`,
    );
  }
  const limit = options.limit ?? size;
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new RangeError(
      `Cannot encode XBZRLE delta as limit must be a non-negative integer: received ${limit}`,
    );
  }
  if (size === 0) return UNCHANGED;
  let output = options.output;
  if (output === undefined) {
    // A delta never exceeds 1.5 × size + 4 bytes, whatever the limit.
    output = new Uint8Array(Math.min(limit, 2 * size + 8));
  } else if (output.length < limit) {
    throw new RangeError(
      `Cannot encode XBZRLE delta as output must hold limit (${limit}) bytes: it holds ${output.length}`,
    );
  }
  const length = LITTLE_ENDIAN &&
      ((old.byteOffset | current.byteOffset | size) & 3) === 0
    ? encodeWords(
      old,
      current,
      new Int32Array(old.buffer, old.byteOffset, size >>> 2),
      new Int32Array(current.buffer, current.byteOffset, size >>> 2),
      output,
      limit,
    )
    : encodeBytes(old, current, output, limit);
  if (length === UNCHANGED_CODE) return UNCHANGED;
  if (length === OVERFLOW_CODE) return OVERFLOW;
  return {
    kind: "encoded",
    delta: options.output === undefined
      ? output.slice(0, length)
      : output.subarray(0, length),
  };
}

/**
 * Checks that `delta` is a valid XBZRLE delta for pages of `pageSize`
 * bytes, by every rule QEMU's loader applies, without applying it.
 *
 * The rules, each reported at the byte that breaks it (`baseOffset` + its
 * position in `delta`):
 *
 * 1. a pair needs at least 2 bytes (also checked again before NZLEN, so a
 *    NZLEN in the last byte is rejected before its value is looked at);
 * 2. a run length's second byte must not have bit 7 set;
 * 3. ZLEN may be 0 only in the first pair;
 * 4. the zero run must end inside the page;
 * 5. NZLEN must not be 0;
 * 6. the non-zero run must end inside the page;
 * 7. the non-zero run's data must be inside the delta.
 *
 * The record-level rule that a delta is at most one page long belongs to
 * the frame decoder, which reads the record's length field.
 *
 * @example Usage
 * ```ts
 * import { checkXbzrleDelta, StreamFormatError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * checkXbzrleDelta(new Uint8Array([0xa3, 0x02, 0x01, 0x8a]), 4096);
 * assert.throws(
 *   () => checkXbzrleDelta(new Uint8Array([0x00, 0x01, 0xaa, 0x00, 0x01, 0xbb]), 4096, 100),
 *   (error) => error instanceof StreamFormatError && error.offset === 103,
 * );
 * ```
 *
 * @param delta The delta bytes.
 * @param pageSize Length of the page it applies to.
 * @param baseOffset Stream offset of `delta[0]`, for error offsets.
 * @throws {StreamFormatError} If the delta breaks a rule.
 */
export function checkXbzrleDelta(
  delta: Uint8Array,
  pageSize: number,
  baseOffset: number = 0,
): void {
  const end = delta.length;
  let i = 0;
  let d = 0;
  while (i < end) {
    if (end - i < 2) {
      throw fail(
        baseOffset + i,
        `a pair needs at least 2 bytes, ${end - i} left`,
      );
    }
    const zeroAt = i;
    let z = delta[i]!;
    if (z < 0x80) {
      i += 1;
    } else {
      const high = delta[i + 1]!;
      if (high >= 0x80) throw secondByte(baseOffset + i + 1, high);
      z = (z & 0x7f) | (high << 7);
      i += 2;
    }
    if (z === 0 && zeroAt !== 0) {
      throw fail(
        baseOffset + zeroAt,
        "zero run of length 0 after the first pair",
      );
    }
    d += z;
    if (d > pageSize) {
      throw fail(
        baseOffset + zeroAt,
        `zero run of ${z} bytes ends at byte ${d}, past the ${pageSize}-byte page`,
      );
    }
    if (end - i < 2) {
      throw fail(
        baseOffset + i,
        `a non-zero run needs a length and data, ${end - i} bytes left`,
      );
    }
    const lengthAt = i;
    let k = delta[i]!;
    if (k < 0x80) {
      i += 1;
    } else {
      const high = delta[i + 1]!;
      if (high >= 0x80) throw secondByte(baseOffset + i + 1, high);
      k = (k & 0x7f) | (high << 7);
      i += 2;
    }
    if (k === 0) {
      throw fail(baseOffset + lengthAt, "non-zero run of length 0");
    }
    if (d + k > pageSize) {
      throw fail(
        baseOffset + lengthAt,
        `non-zero run of ${k} bytes ends at byte ${
          d + k
        }, past the ${pageSize}-byte page`,
      );
    }
    if (i + k > end) {
      throw fail(
        baseOffset + lengthAt,
        `non-zero run of ${k} bytes has only ${end - i} bytes of data`,
      );
    }
    d += k;
    i += k;
  }
}

/**
 * Applies an XBZRLE delta in place onto `page`, the destination's current
 * copy. The whole delta is checked first ({@linkcode checkXbzrleDelta}), so
 * on error `page` is untouched. Bytes the delta does not cover keep their
 * value.
 *
 * @example Usage
 * ```ts
 * import { decodeXbzrle } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const page = new Uint8Array(4096);
 * decodeXbzrle(new Uint8Array([0x10, 0x01, 0xaa, 0x0f, 0x02, 0xbb, 0xcc]), page);
 * assert.equal(page[0x10], 0xaa);
 * assert.deepEqual(page.subarray(0x20, 0x22), new Uint8Array([0xbb, 0xcc]));
 * assert.equal(page[0x11], 0);
 * ```
 *
 * @param delta The delta bytes.
 * @param page The page to patch; its length is the page size.
 * @param baseOffset Stream offset of `delta[0]`, for error offsets.
 * @throws {StreamFormatError} If the delta breaks a rule; `page` is then
 * unchanged.
 */
export function decodeXbzrle(
  delta: Uint8Array,
  page: Uint8Array,
  baseOffset: number = 0,
): void {
  checkXbzrleDelta(delta, page.length, baseOffset);
  const end = delta.length;
  let i = 0;
  let d = 0;
  while (i < end) {
    let z = delta[i]!;
    if (z < 0x80) {
      i += 1;
    } else {
      z = (z & 0x7f) | (delta[i + 1]! << 7);
      i += 2;
    }
    d += z;
    let k = delta[i]!;
    if (k < 0x80) {
      i += 1;
    } else {
      k = (k & 0x7f) | (delta[i + 1]! << 7);
      i += 2;
    }
    d = putLiteral(page, d, delta, i, k);
    i += k;
  }
}

const UNCHANGED: XbzrleEncodeResult = Object.freeze({ kind: "unchanged" });
const OVERFLOW: XbzrleEncodeResult = Object.freeze({ kind: "overflow" });
const UNCHANGED_CODE = -1;
const OVERFLOW_CODE = -2;
/** Runs shorter than this are copied byte by byte (cheaper than a subarray). */
const SMALL_COPY = 32;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * The encoder over 4-byte words; requires a little-endian host, both pages
 * aligned and a size that is a multiple of 4. Returns the delta length,
 * UNCHANGED_CODE or OVERFLOW_CODE.
 *
 * Within a word, byte j is the j-th lowest byte (little-endian), so the
 * first byte of interest is the lowest set bit of a mask divided by 8.
 * `x = old ^ current` is 0 in the bytes that are equal; the mask of equal
 * bytes is `~(((x & 0x7f7f7f7f) + 0x7f7f7f7f) | x) & 0x80808080` (bit 7 of
 * each byte whose x is 0, exact per byte). Bytes before the scan position
 * are masked off with `-1 << 8 * (position & 3)`.
 */
function encodeWords(
  old: Uint8Array,
  current: Uint8Array,
  old32: Int32Array,
  current32: Int32Array,
  output: Uint8Array,
  limit: number,
): number {
  const size = old.length;
  const words = old32.length;
  let i = 0;
  let o = 0;
  while (i < size) {
    if (o + 2 > limit) return OVERFLOW_CODE; // check A
    // Zero run: find the first differing byte at or after i.
    const zeroStart = i;
    let w = i >>> 2;
    let x = (old32[w]! ^ current32[w]!) & (-1 << ((i & 3) << 3));
    while (x === 0) {
      if (++w === words) break;
      x = old32[w]! ^ current32[w]!;
    }
    if (x === 0) return zeroStart === 0 ? UNCHANGED_CODE : o;
    i = (w << 2) + ((31 - Math.clz32(x & -x)) >>> 3);
    const z = i - zeroStart;
    o = putLength(output, o, z);
    if (o + 2 > limit) return OVERFLOW_CODE; // check B
    // Non-zero run: find the first equal byte after i, in the same word
    // first (x still holds it), then in the following words.
    const runStart = i;
    let equal = ~(((x & 0x7f7f7f7f) + 0x7f7f7f7f) | x) & 0x80808080 &
      (-2 << ((i & 3) << 3));
    while (equal === 0) {
      if (++w === words) break;
      x = old32[w]! ^ current32[w]!;
      equal = ~(((x & 0x7f7f7f7f) + 0x7f7f7f7f) | x) & 0x80808080;
    }
    i = equal === 0
      ? size
      : (w << 2) + ((31 - Math.clz32(equal & -equal)) >>> 3);
    const k = i - runStart;
    o = putLength(output, o, k);
    if (o + k > limit) return OVERFLOW_CODE; // check C
    o = putLiteral(output, o, current, runStart, k);
  }
  return o;
}

/** The encoder byte by byte, for pages that are not 4-byte aligned. */
function encodeBytes(
  old: Uint8Array,
  current: Uint8Array,
  output: Uint8Array,
  limit: number,
): number {
  const size = old.length;
  let i = 0;
  let o = 0;
  while (i < size) {
    if (o + 2 > limit) return OVERFLOW_CODE; // check A
    const zeroStart = i;
    while (i < size && old[i] === current[i]) i++;
    if (i === size) return zeroStart === 0 ? UNCHANGED_CODE : o;
    const z = i - zeroStart;
    o = putLength(output, o, z);
    if (o + 2 > limit) return OVERFLOW_CODE; // check B
    const runStart = i;
    while (i < size && old[i] !== current[i]) i++;
    const k = i - runStart;
    o = putLength(output, o, k);
    if (o + k > limit) return OVERFLOW_CODE; // check C
    o = putLiteral(output, o, current, runStart, k);
  }
  return o;
}

/** Writes `n` as a 1- or 2-byte ULEB128 at `o`; returns the next offset. */
function putLength(output: Uint8Array, o: number, n: number): number {
  if (n < 0x80) {
    output[o] = n;
    return o + 1;
  }
  if (n > ULEB128_MAX) throw runTooLong(n);
  output[o] = (n & 0x7f) | 0x80;
  output[o + 1] = n >>> 7;
  return o + 2;
}

/** Copies `k` bytes of `from` at `start` to `output` at `o`; returns `o + k`. */
function putLiteral(
  output: Uint8Array,
  o: number,
  from: Uint8Array,
  start: number,
  k: number,
): number {
  if (k < SMALL_COPY) {
    for (let j = 0; j < k; j++) output[o + j] = from[start + j]!;
  } else {
    output.set(from.subarray(start, start + k), o);
  }
  return o + k;
}

function runTooLong(run: number): RangeError {
  return new RangeError(
    `Cannot encode XBZRLE delta as a run of ${run} bytes exceeds ${ULEB128_MAX}, the longest a 2-byte ULEB128 holds`,
  );
}

function fail(offset: number, detail: string): StreamFormatError {
  return new StreamFormatError(
    `Cannot decode XBZRLE delta at offset ${offset}: ${detail}`,
    { offset },
  );
}

function secondByte(offset: number, value: number): StreamFormatError {
  return fail(
    offset,
    `second length byte 0x${value.toString(16).padStart(2, "0")} has bit 7 set`,
  );
}
