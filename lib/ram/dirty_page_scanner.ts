import { DirtyBitmap } from "../guest/dirty_bitmap.ts";
import type { GuestMemory, GuestRamBlock } from "../guest/guest_memory.ts";

/** A run of pages of one block to send, in ascending order. */
export interface PageBatch {
  /** The block. */
  block: GuestRamBlock;
  /** Page indices in the block, ascending. */
  pages: Uint32Array;
  /**
   * Complete rounds over RAM when the batch was taken: 0 during the first
   * round (QEMU sends every page once before XBZRLE starts).
   */
  round: number;
}

/**
 * The source's migration bitmap and scan position (QEMU's RAMState): which
 * pages still have to be sent, merged from the guest's dirty log at every
 * sync, and where the next scan continues. Blocks are scanned in order,
 * pages ascending; wrapping to the first block completes a round.
 *
 * @example Usage
 * ```ts
 * import { DirtyPageScanner, GuestMemory } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const memory = new GuestMemory([{ idstr: "pc.ram", size: 8 * 4096 }]);
 * const scanner = new DirtyPageScanner(memory);
 * assert.equal(scanner.remainingPages, 8); // the first pass sends everything
 * const batch = scanner.next(5)!;
 * assert.deepEqual([...batch.pages], [0, 1, 2, 3, 4]);
 * assert.equal(scanner.remainingPages, 3);
 * ```
 */
export class DirtyPageScanner {
  readonly #memory: GuestMemory;
  readonly #bitmaps: DirtyBitmap[];
  #blockIndex = 0;
  #page = 0;
  #rounds = 0;
  #syncCount = 1;
  #remaining: number;

  /**
   * Constructs a new instance with every page marked to send (QEMU's first
   * bitmap sync at setup), and turns on the guest's dirty log.
   *
   * @param memory The guest memory.
   */
  constructor(memory: GuestMemory) {
    this.#memory = memory;
    this.#bitmaps = memory.blocks.map((block) => {
      const bitmap = new DirtyBitmap(block.pageCount);
      bitmap.setAll();
      return bitmap;
    });
    this.#remaining = memory.totalBytes / memory.pageSize;
    memory.startDirtyLog();
  }

  /** Pages still to send. */
  get remainingPages(): number {
    return this.#remaining;
  }

  /** Complete rounds over RAM so far. */
  get rounds(): number {
    return this.#rounds;
  }

  /** Dirty-bitmap syncs so far, the setup one included (`dirty-sync-count`). */
  get syncCount(): number {
    return this.#syncCount;
  }

  /** The per-block bitmaps of pages still to send. */
  get bitmaps(): readonly DirtyBitmap[] {
    return this.#bitmaps;
  }

  /**
   * Merges the pages the guest dirtied since the last sync into the pages
   * to send.
   *
   * @returns How many pages were newly dirtied.
   */
  sync(): number {
    const logs = this.#memory.syncDirtyLog();
    let dirtied = 0;
    for (let i = 0; i < logs.length; i++) {
      const log = logs[i]!;
      dirtied += log.count();
      this.#bitmaps[i]!.or(log);
    }
    this.#remaining = 0;
    for (const bitmap of this.#bitmaps) this.#remaining += bitmap.count();
    this.#syncCount++;
    return dirtied;
  }

  /**
   * Marks a page to be sent (again).
   *
   * @param blockIndex The block's index.
   * @param page The page.
   */
  mark(blockIndex: number, page: number): void {
    const bitmap = this.#bitmaps[blockIndex]!;
    if (!bitmap.test(page)) {
      bitmap.set(page);
      this.#remaining++;
    }
  }

  /**
   * Takes the page out of the pages to send, when it is still there (a
   * postcopy page request served ahead of the scan).
   *
   * @param blockIndex The block's index.
   * @param page The page.
   * @returns Whether it still had to be sent.
   */
  take(blockIndex: number, page: number): boolean {
    if (!this.#bitmaps[blockIndex]!.testAndClear(page)) return false;
    this.#remaining--;
    return true;
  }

  /**
   * Moves the scan position (QEMU continues the background scan after a
   * postcopy page request from the requested address).
   *
   * @param blockIndex The block's index.
   * @param page The page.
   */
  seek(blockIndex: number, page: number): void {
    this.#blockIndex = blockIndex;
    this.#page = page;
  }

  /**
   * Takes up to `maxPages` pages to send from the current block, clearing
   * their bits, continuing from where the last call stopped.
   *
   * @param maxPages Most pages in the batch.
   * @returns The pages, or `undefined` when no page is left to send.
   */
  next(maxPages: number): PageBatch | undefined {
    if (this.#remaining === 0) return undefined;
    const blocks = this.#memory.blocks;
    for (let visited = 0; visited <= blocks.length; visited++) {
      const bitmap = this.#bitmaps[this.#blockIndex]!;
      let page = bitmap.nextSet(this.#page);
      if (page !== undefined) {
        const pages = new Uint32Array(Math.min(maxPages, this.#remaining));
        let count = 0;
        while (page !== undefined && count < pages.length) {
          bitmap.clear(page);
          pages[count++] = page;
          page = bitmap.nextSet(page + 1);
        }
        this.#remaining -= count;
        this.#page = pages[count - 1]! + 1;
        return {
          block: blocks[this.#blockIndex]!,
          pages: pages.subarray(0, count),
          round: this.#rounds,
        };
      }
      this.#page = 0;
      this.#blockIndex++;
      if (this.#blockIndex === blocks.length) {
        this.#blockIndex = 0;
        this.#rounds++;
      }
    }
    return undefined;
  }

  /**
   * A batch of given pages of one block (taken out of the bitmap by the
   * caller, e.g. postcopy requests).
   *
   * @param blockIndex The block's index.
   * @param pages The pages.
   * @returns The batch.
   */
  batchOf(blockIndex: number, pages: readonly number[]): PageBatch {
    return {
      block: this.#memory.blocks[blockIndex]!,
      pages: Uint32Array.from(pages),
      round: this.#rounds,
    };
  }

  /**
   * Replaces the pages to send of one block (postcopy recovery: what the
   * destination reports it lacks).
   *
   * @param blockIndex The block's index.
   * @param pages The pages to send; taken over.
   */
  replace(blockIndex: number, pages: DirtyBitmap): void {
    const old = this.#bitmaps[blockIndex]!;
    if (pages.size !== old.size) {
      throw new RangeError(
        `Cannot replace the bitmap of block ${blockIndex}: ${pages.size} bits, expected ${old.size}`,
      );
    }
    this.#remaining += pages.count() - old.count();
    this.#bitmaps[blockIndex] = pages;
  }

  /** Stops the guest's dirty log (at the end of a migration). */
  stop(): void {
    this.#memory.stopDirtyLog();
  }
}
