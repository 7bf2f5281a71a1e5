/**
 * The order in which QEMU writes the members of a JSON object. Private to
 * lib/qmp/.
 *
 * QEMU keeps a JSON object in a hash table of 512 buckets and writes the
 * buckets in order; inside a bucket the member added last comes first. The
 * bucket of a key is a 32-bit hash of its UTF-8 bytes (the one the TDB
 * database uses): start from 0x238F13AF times the length, add each byte
 * shifted left by (5 × index mod 24) bits, then multiply by 1103515243 and
 * add 12345. This is why QEMU answers `{"return": {}, "id": 1}` but
 * `{"id": 1, "error": {...}}`.
 *
 * @module
 */

const BUCKETS = 512;
const encoder = new TextEncoder();

/**
 * The bucket QEMU puts `key` in.
 *
 * @param key A member name.
 * @returns 0 to 511.
 */
export function qdictBucket(key: string): number {
  const bytes = encoder.encode(key);
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    value = (value + (bytes[i]! << ((i * 5) % 24))) >>> 0;
  }
  return ((Math.imul(1103515243, value) + 12345) >>> 0) % BUCKETS;
}

/**
 * Sorts member names into the order QEMU writes them.
 *
 * @param keys Member names in the order they were added.
 * @returns A new array in QEMU's order.
 */
export function qdictOrder(keys: readonly string[]): string[] {
  return keys
    .map((key, index) => ({ key, index, bucket: qdictBucket(key) }))
    .sort((a, b) => a.bucket - b.bucket || b.index - a.index)
    .map((entry) => entry.key);
}
