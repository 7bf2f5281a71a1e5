/**
 * Copies of pages as they arrived from a migration source, kept for the
 * pages a guest writes while its migration is still arriving (postcopy):
 * each page is copied once, before its first write. Private to
 * lib/guest/.
 *
 * @module
 */

/** The kept copies, one map (page index → bytes) per block. */
export class ReceivedPages {
  readonly #copies: Map<number, Uint8Array>[];
  #count = 0;

  /** @param blockCount How many blocks the memory has. */
  constructor(blockCount: number) {
    this.#copies = Array.from({ length: blockCount }, () => new Map());
  }

  /** How many pages are kept. */
  get count(): number {
    return this.#count;
  }

  /**
   * Keeps a copy of a page unless one is kept already.
   *
   * @param blockIndex The block's index.
   * @param page The page's index in the block.
   * @param view The page as it is now, about to be written.
   */
  keep(blockIndex: number, page: number, view: Uint8Array): void {
    const copies = this.#copies[blockIndex]!;
    if (copies.has(page)) return;
    copies.set(page, view.slice());
    this.#count++;
  }

  /**
   * The kept copies of one block.
   *
   * @param blockIndex The block's index.
   * @returns Page index → the page as it arrived.
   */
  copies(blockIndex: number): ReadonlyMap<number, Uint8Array> {
    return this.#copies[blockIndex]!;
  }
}
