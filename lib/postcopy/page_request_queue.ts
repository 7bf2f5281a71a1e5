/**
 * The source's queue of pages the destination asked for in postcopy
 * (REQ_PAGES / REQ_PAGES_ID on the return path), served ahead of the
 * background copy. A request names a byte range of a block; it is queued
 * page by page, and a request for a page that was already sent is simply
 * skipped by whoever serves the queue.
 *
 * @module
 */

/** One requested page. */
export interface RequestedPage {
  /** Index of the block in guest memory. */
  blockIndex: number;
  /** The page. */
  page: number;
}

/**
 * A FIFO of requested pages that wakes its consumer when requests arrive.
 *
 * @example Usage
 * ```ts
 * import { PageRequestQueue } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const queue = new PageRequestQueue();
 * queue.push(0, 3, 2); // pages 3 and 4 of block 0
 * assert.equal(queue.requests, 1);
 * assert.deepEqual(queue.shift(), { blockIndex: 0, page: 3 });
 * assert.deepEqual(queue.shift(), { blockIndex: 0, page: 4 });
 * assert.equal(queue.shift(), undefined);
 * ```
 */
export class PageRequestQueue {
  #pages: RequestedPage[] = [];
  #head = 0;
  #requests = 0;
  #waiter: PromiseWithResolvers<void> | undefined;

  /** Requests received so far (QEMU's `postcopy-requests`). */
  get requests(): number {
    return this.#requests;
  }

  /** Pages waiting to be served. */
  get size(): number {
    return this.#pages.length - this.#head;
  }

  /**
   * Queues one request: `count` pages from `page` on.
   *
   * @param blockIndex The block's index.
   * @param page The first page.
   * @param count How many pages.
   */
  push(blockIndex: number, page: number, count = 1): void {
    this.#requests++;
    for (let i = 0; i < count; i++) {
      this.#pages.push({ blockIndex, page: page + i });
    }
    this.#waiter?.resolve();
    this.#waiter = undefined;
  }

  /**
   * Takes the oldest requested page.
   *
   * @returns The page, or `undefined` when none is waiting.
   */
  shift(): RequestedPage | undefined {
    if (this.#head >= this.#pages.length) return undefined;
    const page = this.#pages[this.#head++]!;
    if (this.#head > 1024 && this.#head * 2 > this.#pages.length) {
      this.#pages = this.#pages.slice(this.#head);
      this.#head = 0;
    }
    return page;
  }

  /**
   * Resolves when a request arrives (at once if one is waiting).
   *
   * @returns A promise.
   */
  wait(): Promise<void> {
    if (this.size > 0) return Promise.resolve();
    this.#waiter ??= Promise.withResolvers<void>();
    return this.#waiter.promise;
  }
}
