/**
 * A hook that sees every guest write before it lands: what a background
 * snapshot uses instead of the write protection QEMU gets from
 * userfaultfd (livemig's guests have no MMU). {@linkcode GuestMemory}
 * asks it before each page write that goes through `write()`,
 * `prepareWrite()` or `preparePageWrite()` (the workloads' path) and tells
 * it about each page marked written.
 *
 * @module
 */

/**
 * Decides whether a page may be written now; installed with
 * {@linkcode GuestMemory.guardWrites}.
 *
 * @example Usage
 * ```ts
 * import { GuestMemory, type PageWriteGuard } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * // Keeps page 0 as it was before its first write.
 * const memory = new GuestMemory([{ idstr: "ram", size: 2 * 4096 }]);
 * let kept: Uint8Array | undefined;
 * const guard: PageWriteGuard = {
 *   mayWrite(_block, page) {
 *     if (page === 0) kept ??= memory.blocks[0]!.bytes.slice(0, 4096);
 *     return true;
 *   },
 *   wait: () => Promise.resolve(),
 *   written() {},
 * };
 * memory.guardWrites(guard);
 * memory.write("ram", 0, new Uint8Array([9]));
 * assert.equal(kept![0], 0);
 * assert.equal(memory.blocks[0]!.bytes[0], 9);
 * ```
 */
export interface PageWriteGuard {
  /**
   * Called before a page is written: may the write go ahead now? A guard
   * may do its work here (keep the page's content first).
   *
   * @param blockIndex The block's index.
   * @param page The page.
   * @returns Whether the page may be written; false: the writer waits
   *   with {@linkcode PageWriteGuard.wait} and asks again.
   */
  mayWrite(blockIndex: number, page: number): boolean;
  /**
   * Resolves when asking {@linkcode PageWriteGuard.mayWrite} again may
   * succeed.
   *
   * @param blockIndex The block's index.
   * @param page The page.
   */
  wait(blockIndex: number, page: number): Promise<void>;
  /**
   * Called when a page is marked written ({@linkcode GuestMemory.markDirty},
   * {@linkcode GuestMemory.markPageDirty}), after the write: a guard learns
   * here of writes that did not ask first.
   *
   * @param blockIndex The block's index.
   * @param page The page.
   */
  written(blockIndex: number, page: number): void;
}
