/**
 * The small unsigned LEB128 that XBZRLE uses for its run lengths: at most
 * two bytes, so values 0..16383 (0x3fff).
 *
 * ```
 * value < 0x80         one byte    0vvvvvvv                 (bits 6..0)
 * 0x80 <= value <= 0x3fff
 *                      two bytes   1vvvvvvv 0vvvvvvv        (bits 6..0, then bits 13..7)
 * ```
 *
 * A decoder takes the first byte's low seven bits and, when its bit 7 is
 * set, the second byte as bits 13..7. A second byte with bit 7 set would
 * need a third byte, which this form does not have: it is invalid. A
 * two-byte form of a value below 0x80 (`0x85 0x00` for 5) is not canonical
 * but decodes, as it does in QEMU (`util/cutils.c`).
 *
 * @module
 */

/**
 * The largest value the two-byte form holds: 16383.
 *
 * @example Usage
 * ```ts
 * import { encodeUleb128, ULEB128_MAX } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const output = new Uint8Array(2);
 * encodeUleb128(ULEB128_MAX, output);
 * assert.deepEqual(output, new Uint8Array([0xff, 0x7f]));
 * assert.throws(() => encodeUleb128(ULEB128_MAX + 1, output), RangeError);
 * ```
 */
export const ULEB128_MAX = 0x3fff;

/**
 * What {@linkcode decodeUleb128} found at a position: a value and its size,
 * the end of the input, or a second byte that has bit 7 set.
 */
export type Uleb128DecodeResult =
  | {
    /** Discriminant: a value was read. */
    kind: "value";
    /** The decoded value, 0..16383. */
    value: number;
    /** How many bytes it took. */
    size: 1 | 2;
  }
  | {
    /** Discriminant: the input ends before the value does. */
    kind: "truncated";
  }
  | {
    /** Discriminant: the second byte has bit 7 set (a third byte would follow). */
    kind: "invalid";
  };

/**
 * Writes `value` as a one- or two-byte ULEB128 into `output` at `position`.
 *
 * Takes the position as a third argument, like `TypedArray.set()`, because
 * it runs once per XBZRLE run on the encoder's hot path.
 *
 * @example Usage
 * ```ts
 * import { encodeUleb128 } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const output = new Uint8Array(3);
 * let position = encodeUleb128(0x7f, output, 0);
 * position = encodeUleb128(0x123, output, position);
 * assert.equal(position, 3);
 * assert.deepEqual(output, new Uint8Array([0x7f, 0xa3, 0x02]));
 * ```
 *
 * @param value The value, an integer in 0..16383.
 * @param output Where to write.
 * @param position Index of the first byte to write.
 * @returns The position just after the written bytes.
 * @throws {RangeError} If `value` is out of range or does not fit at `position`.
 */
export function encodeUleb128(
  value: number,
  output: Uint8Array,
  position: number = 0,
): number {
  if (value < 0x80 && value >= 0 && (value | 0) === value) {
    if (position >= output.length || position < 0) {
      throw noRoom(value, 1, output, position);
    }
    output[position] = value;
    return position + 1;
  }
  if (!(value >= 0 && value <= ULEB128_MAX && (value | 0) === value)) {
    throw new RangeError(
      `Cannot encode ${value} as a 2-byte ULEB128: value must be an integer in 0..${ULEB128_MAX}`,
    );
  }
  if (position + 1 >= output.length || position < 0) {
    throw noRoom(value, 2, output, position);
  }
  output[position] = (value & 0x7f) | 0x80;
  output[position + 1] = value >>> 7;
  return position + 2;
}

/**
 * Reads a one- or two-byte ULEB128 from `input` at `position`.
 *
 * @example Usage
 * ```ts
 * import { decodeUleb128 } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(decodeUleb128(new Uint8Array([0xa3, 0x02])), { kind: "value", value: 0x123, size: 2 });
 * assert.deepEqual(decodeUleb128(new Uint8Array([0xff, 0x80])), { kind: "invalid" });
 * assert.deepEqual(decodeUleb128(new Uint8Array([0xff])), { kind: "truncated" });
 * ```
 *
 * @param input The bytes.
 * @param position Index of the first byte of the value.
 * @returns The value and its size, or why there is none.
 */
export function decodeUleb128(
  input: Uint8Array,
  position: number = 0,
): Uleb128DecodeResult {
  if (position < 0 || position >= input.length) return TRUNCATED;
  const first = input[position]!;
  if (first < 0x80) return { kind: "value", value: first, size: 1 };
  if (position + 1 >= input.length) return TRUNCATED;
  const second = input[position + 1]!;
  if (second >= 0x80) return INVALID;
  return { kind: "value", value: (first & 0x7f) | (second << 7), size: 2 };
}

const TRUNCATED: Uleb128DecodeResult = Object.freeze({ kind: "truncated" });
const INVALID: Uleb128DecodeResult = Object.freeze({ kind: "invalid" });

function noRoom(
  value: number,
  size: number,
  output: Uint8Array,
  position: number,
): RangeError {
  return new RangeError(
    `Cannot encode ${value} as a 2-byte ULEB128 at position ${position}: it needs ${size} bytes and the output holds ${output.length}`,
  );
}
