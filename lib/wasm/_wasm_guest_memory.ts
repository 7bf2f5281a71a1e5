/**
 * The guest memory of a Wasm program: its linear memories as RAM blocks,
 * whose dirty log is filled from the dirty maps the instrumented code
 * writes (a byte per 4 KiB page) each time the migration syncs it. While
 * the log is on, `memory.grow` is locked. Private to the Wasm guest.
 *
 * @module
 */

import { NotSupportedError } from "../errors.ts";
import type { DirtyBitmap } from "../guest/dirty_bitmap.ts";
import { GuestMemory, type GuestRamBlockSpec } from "../guest/guest_memory.ts";
import type { PageWriteGuard } from "../guest/page_write_guard.ts";

/** How the memory reaches the instrumented module. */
export interface WasmGuestMemoryOptions {
  /** The dirty map of each block, a byte per page. */
  dirtyMaps: readonly Uint8Array[];
  /** Sets the grow lock (true while migrating). */
  lockGrowth: (locked: boolean) => void;
  /** State a migration cannot carry, by name (migrating is refused). */
  uncapturable: readonly string[];
}

/** {@linkcode GuestMemory} over a Wasm instance's linear memories. */
export class WasmGuestMemory extends GuestMemory {
  readonly #options: WasmGuestMemoryOptions;

  constructor(
    blocks: readonly GuestRamBlockSpec[],
    options: WasmGuestMemoryOptions,
  ) {
    super(blocks);
    this.#options = options;
  }

  /**
   * Starts logging writes; refuses a program with state a migration
   * cannot carry, and locks `memory.grow`.
   */
  override startDirtyLog(): void {
    const { uncapturable } = this.#options;
    if (uncapturable.length > 0) {
      throw new NotSupportedError(
        `Cannot migrate: livemig cannot carry the Wasm program's ${
          uncapturable.join(", ")
        }`,
      );
    }
    this.blocks.forEach((block, i) =>
      this.#options.dirtyMaps[i]!.fill(0, 0, block.pageCount)
    );
    this.#options.lockGrowth(true);
    super.startDirtyLog();
  }

  /** Stops logging and lets the program grow its memory again. */
  override stopDirtyLog(): void {
    this.#options.lockGrowth(false);
    super.stopDirtyLog();
  }

  /**
   * Refuses a write guard (a background snapshot): the program's stores
   * are instrumented to mark pages after they land, so nothing could keep
   * a page's content before the program writes it.
   */
  override guardWrites(guard: PageWriteGuard | undefined): void {
    if (guard === undefined) return super.guardWrites(guard);
    throw new NotSupportedError(
      "Cannot take a background snapshot of a WasmGuest: the program writes its memory without a copy-before-write hook",
    );
  }

  /**
   * Moves the pages the program marked into the log, then hands the log
   * over.
   */
  override syncDirtyLog(): DirtyBitmap[] {
    if (this.dirtyLogging) this.#pull();
    return super.syncDirtyLog();
  }

  #pull(): void {
    this.blocks.forEach((block, index) => {
      const map = this.#options.dirtyMaps[index]!;
      const words = new Uint32Array(
        map.buffer,
        map.byteOffset,
        Math.ceil(block.pageCount / 4),
      );
      for (let w = 0; w < words.length; w++) {
        if (words[w] === 0) continue;
        for (let page = w * 4; page < w * 4 + 4; page++) {
          if (map[page] !== 0 && page < block.pageCount) {
            this.markPageDirty(index, page);
          }
        }
        words[w] = 0;
      }
    });
  }
}
