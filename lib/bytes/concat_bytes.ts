/**
 * The parts one after the other, in a new buffer.
 *
 * @example Usage
 * ```ts
 * import { concatBytes } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const joined = concatBytes([new Uint8Array([1, 2]), [3], new Uint8Array(0)]);
 * assert.deepEqual(joined, new Uint8Array([1, 2, 3]));
 * ```
 *
 * @param parts The bytes to join, in order.
 * @returns A new array holding all of them.
 */
export function concatBytes(
  parts: readonly ArrayLike<number>[],
): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
