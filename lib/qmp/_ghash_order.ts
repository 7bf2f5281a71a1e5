/**
 * The order in which QEMU finds arguments it did not expect. Private to
 * lib/qmp/.
 *
 * QEMU's argument check puts every member name of a request into a GLib
 * hash table (`g_str_hash`, open addressing), removes each name the schema
 * knows as it reads it, and reports the first name left when walking the
 * table's slots in order. So `{"a": 1, "b": 2}` for a command without
 * arguments is answered `Parameter 'b' is unexpected`. This models that
 * table (GLib 2.74): slot = (hash × 11) mod a prime below the table size,
 * collisions probe at increasing steps, the table grows when nearly full.
 *
 * @module
 */

import { qdictOrder } from "./_qdict_order.ts";

const MIN_SHIFT = 3;
/** GLib's prime below each power of two, by shift. */
const PRIME_MOD = [
  1,
  2,
  3,
  7,
  13,
  31,
  61,
  127,
  251,
  509,
  1021,
  2039,
  4093,
  8191,
  16381,
  32749,
  65521,
];

const encoder = new TextEncoder();

/** GLib's `g_str_hash` (djb2 over signed chars), as GLib stores it (≥ 2). */
function strHash(key: string): number {
  let hash = 5381;
  for (const byte of encoder.encode(key)) {
    const char = byte >= 0x80 ? byte - 0x100 : byte;
    hash = (Math.imul(hash, 33) + char) >>> 0;
  }
  return hash < 2 ? 2 : hash;
}

class StringSet {
  #shift = MIN_SHIFT;
  #slots: (string | null | undefined)[] = new Array(1 << MIN_SHIFT);
  #nodes = 0;
  #occupied = 0;

  get #size(): number {
    return 1 << this.#shift;
  }

  #find(key: string): { index: number; found: boolean } {
    const size = this.#size;
    let index = Math.imul(strHash(key), 11) >>> 0;
    index %= PRIME_MOD[this.#shift]!;
    let step = 0;
    let tombstone = -1;
    while (this.#slots[index] !== undefined) {
      const slot = this.#slots[index];
      if (slot === key) return { index, found: true };
      if (slot === null && tombstone === -1) tombstone = index;
      step++;
      index = (index + step) & (size - 1);
    }
    return { index: tombstone === -1 ? index : tombstone, found: false };
  }

  add(key: string): void {
    const { index, found } = this.#find(key);
    if (found) return;
    const wasUnused = this.#slots[index] === undefined;
    this.#slots[index] = key;
    this.#nodes++;
    if (wasUnused) {
      this.#occupied++;
      this.#maybeResize();
    }
  }

  delete(key: string): void {
    const { index, found } = this.#find(key);
    if (!found) return;
    this.#slots[index] = null;
    this.#nodes--;
    this.#maybeResize();
  }

  #maybeResize(): void {
    const size = this.#size;
    if (
      (size > this.#nodes * 4 && size > 1 << MIN_SHIFT) ||
      size <= this.#occupied + Math.floor(this.#occupied / 16)
    ) {
      const keys = this.keys();
      let shift = 0;
      for (let n = Math.floor(this.#nodes * 1.333); n > 0; n >>= 1) shift++;
      this.#shift = Math.max(shift, MIN_SHIFT);
      this.#slots = new Array(1 << this.#shift);
      this.#nodes = 0;
      this.#occupied = 0;
      for (const key of keys) {
        const { index } = this.#find(key);
        this.#slots[index] = key;
        this.#nodes++;
        this.#occupied++;
      }
    }
  }

  keys(): string[] {
    return this.#slots.filter((slot): slot is string =>
      typeof slot === "string"
    );
  }
}

/**
 * The names of `given` that are not in `known`, in the order QEMU's table
 * would list them (the first one is what QEMU reports).
 *
 * @param given The request's member names, in request order.
 * @param known The names the schema read.
 * @returns The leftover names, first reported first.
 */
export function unexpectedMembers(
  given: readonly string[],
  known: ReadonlySet<string>,
): string[] {
  const set = new StringSet();
  for (const key of qdictOrder(given)) set.add(key);
  for (const key of given) if (known.has(key)) set.delete(key);
  return set.keys();
}
