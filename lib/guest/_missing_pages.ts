/**
 * The pages of a destination's RAM that have not arrived yet in postcopy,
 * and who waits for them. Private to lib/guest/ (see GuestMemory's
 * postcopy methods).
 *
 * @module
 */

import type { DirtyBitmap } from "./dirty_bitmap.ts";

/** A block index's weight in a page's key (pages of a block stay below). */
const KEY_BLOCK = 0x1_0000_0000;

/** One number for a page of a block, the waiters' key. */
function pageKey(blockIndex: number, page: number): number {
  return blockIndex * KEY_BLOCK + page;
}

/** Missing pages per block, with a waiter per page waited for. */
export class MissingPages {
  readonly #missing: DirtyBitmap[];
  readonly #onFault: (blockIndex: number, page: number) => void;
  readonly #waiters = new Map<number, PromiseWithResolvers<void>>();
  #count: number;

  /**
   * @param missing The missing pages, one bitmap per block; taken over.
   * @param onFault Called the first time a missing page is waited for.
   */
  constructor(
    missing: DirtyBitmap[],
    onFault: (blockIndex: number, page: number) => void,
  ) {
    this.#missing = missing;
    this.#onFault = onFault;
    this.#count = missing.reduce((sum, bitmap) => sum + bitmap.count(), 0);
  }

  /** How many pages are missing. */
  get count(): number {
    return this.#count;
  }

  /** The missing pages of one block (read only). */
  of(blockIndex: number): DirtyBitmap {
    return this.#missing[blockIndex]!;
  }

  /** Whether a page is missing. */
  test(blockIndex: number, page: number): boolean {
    return this.#missing[blockIndex]!.test(page);
  }

  /** Waits for a missing page, calling `onFault` the first time. */
  wait(blockIndex: number, page: number): Promise<void> {
    const key = pageKey(blockIndex, page);
    let waiter = this.#waiters.get(key);
    if (waiter === undefined) {
      waiter = Promise.withResolvers<void>();
      this.#waiters.set(key, waiter);
      this.#onFault(blockIndex, page);
    }
    return waiter.promise;
  }

  /** Whether a page is waited for. */
  waited(blockIndex: number, page: number): boolean {
    return this.#waiters.has(pageKey(blockIndex, page));
  }

  /** The pages waited for, as `[blockIndex, page]` pairs. */
  pending(): [number, number][] {
    return [...this.#waiters.keys()].map((key) => [
      Math.floor(key / KEY_BLOCK),
      key % KEY_BLOCK,
    ]);
  }

  /** A page arrived; returns whether it was missing. */
  arrived(blockIndex: number, page: number): boolean {
    if (!this.#missing[blockIndex]!.testAndClear(page)) return false;
    this.#count--;
    const key = pageKey(blockIndex, page);
    const waiter = this.#waiters.get(key);
    if (waiter) {
      this.#waiters.delete(key);
      waiter.resolve();
    }
    return true;
  }

  /** Lets every waiter go on. */
  release(): void {
    for (const waiter of this.#waiters.values()) waiter.resolve();
    this.#waiters.clear();
  }
}
