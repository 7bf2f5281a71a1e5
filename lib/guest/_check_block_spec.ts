/**
 * The checks on one RAM block a `GuestMemory` is made of.
 * Private to lib/guest/.
 *
 * @module
 */

import type { GuestRamBlockSpec } from "./guest_memory.ts";

/**
 * Checks a block spec and returns its size.
 *
 * @param spec The block.
 * @param options The page size and the names already taken.
 * @returns The block's size in bytes.
 * @throws {RangeError} For a name listed twice or not 1..255 bytes, or a
 *   size that is not a positive multiple of the page size.
 */
export function checkBlockSpec(
  spec: GuestRamBlockSpec,
  options: { pageSize: number; taken: ReadonlyMap<string, unknown> },
): number {
  const { pageSize, taken } = options;
  if (taken.has(spec.idstr)) {
    throw new RangeError(
      `Cannot construct GuestMemory: block "${spec.idstr}" is listed twice`,
    );
  }
  if (
    spec.idstr.length === 0 || new TextEncoder().encode(spec.idstr).length > 255
  ) {
    throw new RangeError(
      `Cannot construct GuestMemory: block name "${spec.idstr}" must be 1..255 bytes`,
    );
  }
  const size = spec.bytes?.byteLength ?? spec.size ?? 0;
  if (!Number.isSafeInteger(size) || size <= 0 || size % pageSize !== 0) {
    throw new RangeError(
      `Cannot construct GuestMemory: block "${spec.idstr}" size must be a positive multiple of ${pageSize}: received ${size}`,
    );
  }
  return size;
}
