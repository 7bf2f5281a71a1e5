/**
 * A background snapshot's copy-before-write, livemig's stand-in for the
 * userfaultfd write protection QEMU puts on guest RAM (its
 * `ram_write_tracking_start()`). Private to the source.
 *
 * Every page starts unsaved (set in the scan's bitmap). A guest write to
 * an unsaved page first copies the page aside, so the snapshot keeps its
 * content from the snapshot point; the single pass over RAM then saves
 * each page from its copy, or straight from RAM when the guest has not
 * touched it. Copies are freed as the pass reaches them, and at most
 * `maxCopies` are held: past that, a write to an unsaved page waits until
 * the pass frees a copy or saves that page (as a QEMU vCPU waits on a
 * write-protected page until the page is saved).
 *
 * ```
 * unsaved ──guest write, room──▶ copied ──pass──▶ saved (copy freed)
 *    │     ──guest write, full──▶ waits for the pass
 *    └──────────────────pass──────────────────▶ saved (read from RAM)
 * ```
 *
 * @module
 */

import type { DirtyBitmap } from "../guest/dirty_bitmap.ts";
import type { GuestMemory } from "../guest/guest_memory.ts";
import type { PageWriteGuard } from "../guest/page_write_guard.ts";

/** The copy-before-write state of one background snapshot. */
export class SnapshotWriteGuard implements PageWriteGuard {
  readonly #memory: GuestMemory;
  readonly #unsaved: readonly DirtyBitmap[];
  readonly #copies: Map<number, Uint8Array>[];
  readonly #maxCopies: number;
  #held = 0;
  #peak = 0;
  #copied = 0;
  #change: PromiseWithResolvers<void> | undefined;
  #violation: string | undefined;
  #released = false;

  /**
   * @param memory The guest's RAM.
   * @param unsaved The pages not saved yet, a bitmap per block (the
   *   scan's: the pass clears a page's bit when it saves it).
   * @param maxCopies Most pages held as copies at once.
   */
  constructor(
    memory: GuestMemory,
    unsaved: readonly DirtyBitmap[],
    maxCopies: number,
  ) {
    this.#memory = memory;
    this.#unsaved = unsaved;
    this.#copies = memory.blocks.map(() => new Map());
    this.#maxCopies = maxCopies;
  }

  /** Copies held now. */
  get held(): number {
    return this.#held;
  }

  /** The most copies held at once. */
  get peak(): number {
    return this.#peak;
  }

  /** Pages copied aside before a guest write, in all. */
  get copied(): number {
    return this.#copied;
  }

  /** What went wrong: a page written without asking before it was saved. */
  get violation(): string | undefined {
    return this.#violation;
  }

  /**
   * Before a guest write: a saved or copied page may be written; an
   * unsaved one is copied first when there is room.
   */
  mayWrite(blockIndex: number, page: number): boolean {
    if (!this.#isProtected(blockIndex, page)) return true;
    if (this.#held >= this.#maxCopies) return false;
    this.#copies[blockIndex]!.set(page, this.#view(blockIndex, page).slice());
    this.#held++;
    this.#copied++;
    if (this.#held > this.#peak) this.#peak = this.#held;
    return true;
  }

  /** Resolves when the pass has freed a copy or saved pages. */
  wait(blockIndex: number, page: number): Promise<void> {
    if (!this.#isProtected(blockIndex, page) || this.#held < this.#maxCopies) {
      return Promise.resolve();
    }
    this.#change ??= Promise.withResolvers();
    return this.#change.promise;
  }

  /** After a write: one to an unsaved page broke the snapshot. */
  written(blockIndex: number, page: number): void {
    if (this.#violation !== undefined || !this.#isProtected(blockIndex, page)) {
      return;
    }
    const idstr = this.#memory.blocks[blockIndex]!.idstr;
    this.#violation =
      `page ${page} of RAM block "${idstr}" was written before the snapshot saved it (write with GuestMemory.write(), or await prepareWrite() before writing in place)`;
  }

  /**
   * The content of a page at the snapshot point, owned by the caller;
   * call it right after the pass cleared the page's bit.
   *
   * @param blockIndex The block's index.
   * @param page The page.
   * @returns The page's bytes.
   */
  take(blockIndex: number, page: number): Uint8Array {
    const copies = this.#copies[blockIndex]!;
    const copy = copies.get(page);
    if (copy === undefined) return this.#view(blockIndex, page).slice();
    copies.delete(page);
    this.#held--;
    return copy;
  }

  /** Lets writers waiting for the pass ask again. */
  notify(): void {
    const change = this.#change;
    this.#change = undefined;
    change?.resolve();
  }

  /** The snapshot ended: every write may go on, copies are dropped. */
  release(): void {
    this.#released = true;
    for (const copies of this.#copies) copies.clear();
    this.#held = 0;
    this.notify();
  }

  #isProtected(blockIndex: number, page: number): boolean {
    return !this.#released && this.#unsaved[blockIndex]!.test(page) &&
      !this.#copies[blockIndex]!.has(page);
  }

  #view(blockIndex: number, page: number): Uint8Array {
    const pageSize = this.#memory.pageSize;
    const at = page * pageSize;
    return this.#memory.blocks[blockIndex]!.bytes.subarray(at, at + pageSize);
  }
}
