/**
 * A VM's UUID as QEMU writes and reads it (`-uuid`, `util/uuid.c`): 16
 * bytes, shown as 36 characters, lower-case hex in 8-4-4-4-12 groups.
 *
 * ```
 * 6b2d7b0c-3e61-4f3a-9c3e-1a2b3c4d5e6f   ←→   6b 2d 7b 0c 3e 61 … 6f
 * ```
 *
 * @module
 */

const UUID_PATTERN =
  /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Parses a UUID in the 8-4-4-4-12 form QEMU's `-uuid` accepts (either
 * case).
 *
 * @example Usage
 * ```ts
 * import { formatUuid, parseUuid } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const uuid = parseUuid("6B2D7B0C-3E61-4F3A-9C3E-1A2B3C4D5E6F");
 * assert.equal(uuid.byteLength, 16);
 * assert.equal(uuid[0], 0x6b);
 * assert.equal(formatUuid(uuid), "6b2d7b0c-3e61-4f3a-9c3e-1a2b3c4d5e6f");
 * assert.throws(() => parseUuid("6b2d7b0c3e614f3a9c3e1a2b3c4d5e6f"), TypeError);
 * ```
 *
 * @param text The UUID.
 * @returns Its 16 bytes.
 * @throws {TypeError} If `text` is not 8-4-4-4-12 hex digits.
 */
export function parseUuid(text: string): Uint8Array {
  if (!UUID_PATTERN.test(text)) {
    throw new TypeError(
      `Cannot parse UUID "${text}": expected 8-4-4-4-12 hex digits, e.g. 6b2d7b0c-3e61-4f3a-9c3e-1a2b3c4d5e6f`,
    );
  }
  const hex = text.replaceAll("-", "");
  const bytes = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  return bytes;
}

/**
 * Formats 16 bytes as QEMU shows a UUID (`qemu_uuid_unparse()`).
 *
 * @example Usage
 * ```ts
 * import { formatUuid } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatUuid(new Uint8Array(16)), "00000000-0000-0000-0000-000000000000");
 * assert.throws(() => formatUuid(new Uint8Array(4)), RangeError);
 * ```
 *
 * @param bytes The UUID's 16 bytes.
 * @returns The 36-character form.
 * @throws {RangeError} If `bytes` is not 16 bytes long.
 */
export function formatUuid(bytes: Uint8Array): string {
  if (bytes.byteLength !== 16) {
    throw new RangeError(
      `Cannot format a UUID: expected 16 bytes, received ${bytes.byteLength}`,
    );
  }
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0"))
    .join("");
  return [
    hex.slice(0, 8),
    hex.slice(8, 12),
    hex.slice(12, 16),
    hex.slice(16, 20),
    hex.slice(20),
  ].join("-");
}
