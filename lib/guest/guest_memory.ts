import { DirtyBitmap } from "./dirty_bitmap.ts";
import { MissingPages } from "./_missing_pages.ts";
import { ReceivedPages } from "./_received_pages.ts";
import { checkBlockSpec } from "./_check_block_spec.ts";
import type { PageWriteGuard } from "./page_write_guard.ts";

/** One RAM block to create, or to wrap when `bytes` is given. */
export interface GuestRamBlockSpec {
  /** The block idstr, e.g. `pc.ram`. */
  idstr: string;
  /** Size in bytes, a multiple of the page size (when `bytes` is absent). */
  size?: number;
  /**
   * Memory the caller owns and keeps writing to (it must then mark what it
   * writes with {@linkcode GuestMemory.markDirty}); its length must be a
   * multiple of the page size.
   */
  bytes?: Uint8Array;
}

/** A RAM block of a {@linkcode GuestMemory}. */
export interface GuestRamBlock {
  /** The block idstr. */
  readonly idstr: string;
  /** The block's memory. */
  readonly bytes: Uint8Array;
  /** Pages in the block. */
  readonly pageCount: number;
  /** Offset of the block in one flat address space over all blocks. */
  readonly base: number;
  /** Index of the block in {@linkcode GuestMemory.blocks}. */
  readonly index: number;
}

/** Options for {@linkcode GuestMemory}. */
export interface GuestMemoryOptions {
  /**
   * The target page size.
   *
   * @default {4096}
   */
  pageSize?: number;
  /**
   * Allocates a block's memory (zeroed), e.g. to ask the OS for huge
   * pages before the memory is first touched. Memory over a
   * `SharedArrayBuffer` lets a multifd destination's channel workers place
   * pages straight into it.
   *
   * @default {(size) => new Uint8Array(new SharedArrayBuffer(size))}
   */
  allocate?: (size: number) => Uint8Array;
}

/**
 * Guest RAM as page-addressed blocks, with a dirty log like KVM's: while
 * logging is on, every write marks its pages, and
 * {@linkcode GuestMemory.syncDirtyLog} hands the marked pages over and
 * clears the log.
 *
 * It wraps memory the caller owns as well as allocating its own, so any
 * Deno app can live-migrate a `Uint8Array` of its state.
 *
 * @example Usage
 * ```ts
 * import { GuestMemory } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const memory = new GuestMemory([{ idstr: "pc.ram", size: 16 * 4096 }]);
 * memory.startDirtyLog();
 * memory.write("pc.ram", 4096 + 10, new Uint8Array([1, 2, 3]));
 * const [dirty] = memory.syncDirtyLog();
 * assert.equal(dirty!.count(), 1);
 * assert.ok(dirty!.test(1));
 * assert.equal(memory.syncDirtyLog()[0]!.count(), 0);
 * ```
 *
 * @example Keeping pages as received while an app writes them
 * ```ts
 * import { GuestMemory } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const state = new Uint8Array(2 * 4096).fill(7);
 * const memory = new GuestMemory([{ idstr: "app.state", bytes: state }]);
 * memory.keepReceivedPages();
 * await memory.prepareWrite("app.state", 4096, 1); // waits in postcopy
 * state[4096] = 1;
 * memory.markDirty("app.state", 4096, 1);
 * assert.equal(memory.receivedCopies(0).get(1)![0], 7);
 * assert.equal(memory.keptPages, 1);
 * ```
 */
export class GuestMemory {
  readonly #pageSize: number;
  readonly #blocks: GuestRamBlock[] = [];
  readonly #byName = new Map<string, GuestRamBlock>();
  readonly #logs: DirtyBitmap[] = [];
  #logging = false;
  #totalBytes = 0;
  #missing: MissingPages | undefined;
  #received: ReceivedPages | undefined;
  #guard: PageWriteGuard | undefined;

  /**
   * Constructs a new instance.
   *
   * @param blocks The RAM blocks, in the order a migration lists them.
   * @param options The page size.
   */
  constructor(
    blocks: readonly GuestRamBlockSpec[],
    options: GuestMemoryOptions = {},
  ) {
    const pageSize = options.pageSize ?? 4096;
    if (!Number.isInteger(Math.log2(pageSize)) || pageSize < 1024) {
      throw new RangeError(
        `Cannot construct GuestMemory as pageSize must be a power of two >= 1024: received ${pageSize}`,
      );
    }
    this.#pageSize = pageSize;
    const allocate = options.allocate ??
      ((size: number) => new Uint8Array(new SharedArrayBuffer(size)));
    for (const spec of blocks) {
      const size = checkBlockSpec(spec, { pageSize, taken: this.#byName });
      const block: GuestRamBlock = {
        idstr: spec.idstr,
        bytes: spec.bytes ?? allocate(size),
        pageCount: size / pageSize,
        base: this.#totalBytes,
        index: this.#blocks.length,
      };
      this.#blocks.push(block);
      this.#byName.set(block.idstr, block);
      this.#logs.push(new DirtyBitmap(block.pageCount));
      this.#totalBytes += size;
    }
  }

  /** The target page size. */
  get pageSize(): number {
    return this.#pageSize;
  }

  /** The blocks, in order. */
  get blocks(): readonly GuestRamBlock[] {
    return this.#blocks;
  }

  /** Bytes of RAM over all blocks. */
  get totalBytes(): number {
    return this.#totalBytes;
  }

  /** Whether writes are being logged. */
  get dirtyLogging(): boolean {
    return this.#logging;
  }

  /**
   * The block named `idstr`.
   *
   * @param idstr The block idstr.
   * @returns The block.
   * @throws {RangeError} If there is no such block.
   */
  block(idstr: string): GuestRamBlock {
    const block = this.#byName.get(idstr);
    if (block === undefined) {
      throw new RangeError(`Cannot find RAM block "${idstr}"`);
    }
    return block;
  }

  /**
   * A writable view of one page (for loading a migration into this memory;
   * it marks nothing dirty).
   *
   * @param idstr The block idstr.
   * @param offset The page's byte offset in the block.
   * @returns The page view.
   */
  pageView(idstr: string, offset: number): Uint8Array {
    const block = this.block(idstr);
    if (offset < 0 || offset + this.#pageSize > block.bytes.byteLength) {
      throw new RangeError(
        `Cannot access offset ${offset} of RAM block "${idstr}": the block is ${block.bytes.byteLength} bytes`,
      );
    }
    return block.bytes.subarray(offset, offset + this.#pageSize);
  }

  /**
   * Writes bytes into a block and marks their pages dirty. In postcopy
   * every page written must have arrived (see
   * {@linkcode GuestMemory.prepareWrite}).
   *
   * @param idstr The block idstr.
   * @param offset Byte offset in the block.
   * @param bytes The bytes.
   * @throws {RangeError} If the bytes do not lie inside the block.
   * @throws {TypeError} If a page written has not arrived yet (postcopy),
   *   or the write guard holds it back (a background snapshot).
   */
  write(idstr: string, offset: number, bytes: Uint8Array): void {
    const block = this.block(idstr);
    if (offset < 0 || offset + bytes.byteLength > block.bytes.byteLength) {
      throw new RangeError(
        `Cannot write ${bytes.byteLength} bytes at offset ${offset} of RAM block "${idstr}": the block is ${block.bytes.byteLength} bytes`,
      );
    }
    if (bytes.byteLength === 0) return;
    const [first, last] = this.#pages(offset, bytes.byteLength);
    for (let page = first; page <= last; page++) {
      if (!this.preparePageWrite(block.index, page)) {
        throw new TypeError(
          `Cannot write to page ${page} of RAM block "${idstr}": ${
            this.isMissing(block.index, page)
              ? "it has not arrived yet (postcopy)"
              : "the write guard holds it back (a background snapshot has not saved it and its copy budget is full)"
          }; await prepareWrite() first`,
        );
      }
    }
    block.bytes.set(bytes, offset);
    this.markDirty(idstr, offset, bytes.byteLength);
  }

  /**
   * Makes the pages covering `length` bytes at `offset` ready to be
   * written in place: waits for any that has not arrived yet (postcopy)
   * and, while received pages are kept, keeps each page's content before
   * its first write. An app writing straight into memory it handed over
   * awaits this before each write while its migration is still arriving,
   * and calls {@linkcode GuestMemory.markDirty} after.
   *
   * @param idstr The block idstr.
   * @param offset Byte offset in the block.
   * @param length How many bytes will be written.
   * @returns When every page is there.
   * @throws {RangeError} If the bytes do not lie inside the block.
   */
  async prepareWrite(
    idstr: string,
    offset: number,
    length: number,
  ): Promise<void> {
    const block = this.block(idstr);
    if (offset < 0 || length < 0 || offset + length > block.bytes.byteLength) {
      throw new RangeError(
        `Cannot prepare ${length} bytes at offset ${offset} of RAM block "${idstr}" for writing: the block is ${block.bytes.byteLength} bytes`,
      );
    }
    if (length === 0) return;
    const [first, last] = this.#pages(offset, length);
    for (let page = first; page <= last; page++) {
      while (!this.preparePageWrite(block.index, page)) {
        await this.waitForPage(block.index, page);
      }
    }
  }

  /**
   * The synchronous form of {@linkcode GuestMemory.prepareWrite} for one
   * page: whether it may be written now (false: it has not arrived yet,
   * wait with {@linkcode GuestMemory.waitForPage}); when it may, its
   * content is kept first if received pages are being kept.
   *
   * @param blockIndex The block's index.
   * @param page The page.
   * @returns Whether the page may be written.
   */
  preparePageWrite(blockIndex: number, page: number): boolean {
    if (this.isMissing(blockIndex, page)) return false;
    if (this.#guard?.mayWrite(blockIndex, page) === false) return false;
    const received = this.#received;
    if (received !== undefined) {
      const block = this.#blocks[blockIndex]!;
      const at = page * this.#pageSize;
      received.keep(
        blockIndex,
        page,
        block.bytes.subarray(at, at + this.#pageSize),
      );
    }
    return true;
  }

  /**
   * Starts keeping pages as they were received: from now on a page is
   * copied before its first write through `prepareWrite()`,
   * `preparePageWrite()` or `write()`, so the RAM as it arrived stays
   * known while the guest runs (a destination in postcopy). Memory grows
   * by a page per page written, until `releaseReceivedPages()`.
   */
  keepReceivedPages(): void {
    this.#received ??= new ReceivedPages(this.#blocks.length);
  }

  /** Stops keeping received pages and drops the copies. */
  releaseReceivedPages(): void {
    this.#received = undefined;
  }

  /** How many pages are kept as they were received. */
  get keptPages(): number {
    return this.#received?.count ?? 0;
  }

  /**
   * The pages of a block kept as they were received, before the guest
   * first wrote them (empty when none are kept).
   *
   * @param blockIndex The block's index.
   * @returns Page index → the page's bytes as received.
   */
  receivedCopies(blockIndex: number): ReadonlyMap<number, Uint8Array> {
    return this.#received?.copies(blockIndex) ?? NO_COPIES;
  }

  /**
   * Marks the pages covering `length` bytes at `offset` as written. Apps
   * that write into memory they handed over call this after each write.
   *
   * @param idstr The block idstr.
   * @param offset Byte offset in the block.
   * @param length How many bytes were written.
   */
  markDirty(idstr: string, offset: number, length: number): void {
    if ((!this.#logging && !this.#guard) || length <= 0) return;
    const block = this.block(idstr);
    const [first, last] = this.#pages(offset, length);
    if (first < 0 || last >= block.pageCount) {
      throw new RangeError(
        `Cannot mark bytes ${offset}..${
          offset + length
        } of RAM block "${idstr}" dirty: the block is ${block.bytes.byteLength} bytes`,
      );
    }
    for (let page = first; this.#guard && page <= last; page++) {
      this.#guard.written(block.index, page);
    }
    if (!this.#logging) return;
    if (first === last) this.#logs[block.index]!.set(first);
    else this.#logs[block.index]!.setRange(first, last - first + 1);
  }

  /**
   * Marks one page written, by block index and page index (the fast path
   * for workloads).
   *
   * @param blockIndex Index of the block in {@linkcode GuestMemory.blocks}.
   * @param pageIndex The page.
   */
  markPageDirty(blockIndex: number, pageIndex: number): void {
    this.#guard?.written(blockIndex, pageIndex);
    if (this.#logging) this.#logs[blockIndex]!.set(pageIndex);
  }

  /**
   * Puts a guard before every page write (a background snapshot's
   * copy-before-write), or removes it with `undefined`.
   *
   * @param guard The guard.
   */
  guardWrites(guard: PageWriteGuard | undefined): void {
    this.#guard = guard;
  }

  /** Starts logging writes, with an empty log. */
  startDirtyLog(): void {
    for (const log of this.#logs) log.clearAll();
    this.#logging = true;
  }

  /** Stops logging writes and drops the log. */
  stopDirtyLog(): void {
    this.#logging = false;
    for (const log of this.#logs) log.clearAll();
  }

  /**
   * Hands over the pages written since the last sync (one bitmap per block,
   * in block order) and clears the log.
   *
   * @returns The dirty pages per block.
   */
  syncDirtyLog(): DirtyBitmap[] {
    return this.#logs.map((log) => log.take());
  }

  /** Pages still missing in postcopy (0 otherwise). */
  get missingPages(): number {
    return this.#missing?.count ?? 0;
  }

  /**
   * Enters postcopy on the destination: the pages set in `missing` (one
   * bitmap per block) have not arrived yet. Code that touches guest RAM
   * must then wait for a missing page with
   * {@linkcode GuestMemory.waitForPage}, which calls `onFault` once per
   * page so it can be requested; the loader calls
   * {@linkcode GuestMemory.markReceived} as pages land.
   *
   * @param missing The missing pages, per block; taken over.
   * @param onFault Called the first time a missing page is waited for.
   */
  startPostcopy(
    missing: DirtyBitmap[],
    onFault: (blockIndex: number, page: number) => void,
  ): void {
    if (missing.length !== this.#blocks.length) {
      throw new RangeError(
        `Cannot start postcopy: expected ${this.#blocks.length} bitmaps, received ${missing.length}`,
      );
    }
    this.#missing = new MissingPages(missing, onFault);
  }

  /**
   * Tells whether a page has not arrived yet (always false outside
   * postcopy).
   *
   * @param blockIndex The block's index.
   * @param page The page.
   * @returns Whether the page is missing.
   */
  isMissing(blockIndex: number, page: number): boolean {
    return this.#missing !== undefined && this.#missing.test(blockIndex, page);
  }

  /**
   * Waits until a page is present, asking for it (through `onFault`) the
   * first time it is waited for, or, during a background snapshot, until
   * the write guard may let a write to it go on. Resolves at once for a
   * present page.
   *
   * @param blockIndex The block's index.
   * @param page The page.
   */
  waitForPage(blockIndex: number, page: number): Promise<void> {
    if (this.isMissing(blockIndex, page)) {
      return this.#missing!.wait(blockIndex, page);
    }
    return this.#guard?.wait(blockIndex, page) ?? Promise.resolve();
  }

  /**
   * Whether something waits for a missing page (postcopy): a copy of it
   * should land at once.
   *
   * @param blockIndex The block's index.
   * @param page The page.
   * @returns Whether {@linkcode GuestMemory.waitForPage} waits for it.
   */
  isWaitedFor(blockIndex: number, page: number): boolean {
    return this.#missing?.waited(blockIndex, page) ?? false;
  }

  /**
   * The pages being waited for, as `[blockIndex, page]` pairs (to request
   * them again after a postcopy recovery).
   *
   * @returns The pairs.
   */
  pendingFaults(): [number, number][] {
    return this.#missing?.pending() ?? [];
  }

  /**
   * Records that a page arrived: it is no longer missing and whoever waits
   * for it goes on.
   *
   * @param blockIndex The block's index.
   * @param page The page.
   * @returns Whether the page was missing (false: a duplicate to ignore).
   */
  markReceived(blockIndex: number, page: number): boolean {
    return this.#missing?.arrived(blockIndex, page) ?? false;
  }

  /**
   * The pages that have arrived, per block (the complement of the missing
   * ones), for a postcopy recovery's RECV_BITMAP.
   *
   * @param blockIndex The block's index.
   * @returns A new bitmap of received pages.
   */
  receivedPages(blockIndex: number): DirtyBitmap {
    const received = new DirtyBitmap(this.#blocks[blockIndex]!.pageCount);
    received.setAll();
    if (this.#missing) received.andNot(this.#missing.of(blockIndex));
    return received;
  }

  /** Leaves postcopy: every page is present. */
  finishPostcopy(): void {
    this.#missing?.release();
    this.#missing = undefined;
  }

  /** The first and last page covering `length` (> 0) bytes at `offset`. */
  #pages(offset: number, length: number): [number, number] {
    return [
      Math.floor(offset / this.#pageSize),
      Math.floor((offset + length - 1) / this.#pageSize),
    ];
  }
}

const NO_COPIES: ReadonlyMap<number, Uint8Array> = new Map();
