/**
 * Pages that follow each other in a mapped-ram file, gathered into large
 * positioned writes:
 *
 * - a run of at least 256 KiB whose pages are back-to-back views of one
 *   buffer (pages read from guest memory) is written straight from it;
 * - other pages are copied into one of two alternating buffers of
 *   `writeBytes`, so copying one run overlaps writing the other;
 * - a short gap of pages never written (holes, which read as zeros) is
 *   filled with zeros to keep a run going, so a pass that skips scattered
 *   zero pages still makes large writes. A gap over a page that holds data
 *   ends the run instead.
 *
 * Every page sets its bit in the block's bitmap.
 *
 * @module
 */

import type { RamBlockInfo, RamPageRecord } from "../ram/ram_record.ts";
import type { RandomAccessFile } from "../transport/transport.ts";
import type { WriteTracker } from "./_write_tracker.ts";
import type { MappedRamBitmap } from "./mapped_ram_bitmap.ts";
import type { MappedRamBlockLayout } from "./mapped_ram_layout.ts";

/** One block of the file being written. */
export interface MappedRamBlockState {
  /** The block, without a mapped-ram header. */
  info: RamBlockInfo;
  /** Where its header, bitmap and pages lie. */
  layout: MappedRamBlockLayout;
  /** Which pages the file holds. */
  bitmap: MappedRamBitmap;
  /** Bits changed since the bitmap was last written, or never written. */
  bitmapDirty: boolean;
  /** Pages whose place in the file ever received data (not a hole). */
  written: MappedRamBitmap;
}

interface RunBuffer {
  bytes: Uint8Array<ArrayBuffer>;
  /** The write of this buffer's previous run, while it is in flight. */
  busy: Promise<void> | undefined;
}

interface Run {
  buffer: RunBuffer;
  fileOffset: number;
  length: number;
  state: MappedRamBlockState;
}

/** Runs at least this long are written from the caller's memory, not copied. */
const DIRECT_WRITE_BYTES = 256 * 1024;
/** Longest gap of never-written pages filled with zeros to keep a run going. */
const MAX_GAP_BYTES = 64 * 1024;

/** Gathers pages into runs of file-contiguous positioned writes. */
export class PageRuns {
  readonly #file: RandomAccessFile;
  readonly #tracker: WriteTracker;
  readonly #pageSize: number;
  readonly #buffers: [RunBuffer, RunBuffer];
  #run: Run | undefined;
  #nextBuffer = 0;
  #pagesWritten = 0;

  /**
   * Constructs a new instance.
   *
   * @param file Where the pages go.
   * @param options The page size, the size of each run buffer, and the
   *   tracker that keeps the writes.
   */
  constructor(
    file: RandomAccessFile,
    options: { pageSize: number; writeBytes: number; tracker: WriteTracker },
  ) {
    const { pageSize, writeBytes } = options;
    this.#file = file;
    this.#tracker = options.tracker;
    this.#pageSize = pageSize;
    const runBytes = writeBytes - writeBytes % pageSize;
    this.#buffers = [
      { bytes: new Uint8Array(runBytes), busy: undefined },
      { bytes: new Uint8Array(runBytes), busy: undefined },
    ];
  }

  /** Page writes issued so far, re-sent pages included. */
  get pagesWritten(): number {
    return this.#pagesWritten;
  }

  /**
   * Copies a page into the current run, starting a new run when it does
   * not follow on. Returns a promise only when a new run must wait for its
   * buffer's previous write, so the common case costs no await.
   *
   * @param state The page's block.
   * @param offset The page's offset in the block (checked by the caller).
   * @param data The page; copied before the call returns or the promise
   *   resolves.
   * @returns A promise to wait for, or `undefined`.
   * @throws {RangeError} If `data` is not one page.
   */
  page(
    state: MappedRamBlockState,
    offset: number,
    data: Uint8Array,
  ): Promise<void> | undefined {
    const pageSize = this.#pageSize;
    if (data.byteLength !== pageSize) {
      throw new RangeError(
        `Cannot write page of block "${state.info.idstr}" at ${offset}: data is ${data.byteLength} bytes, the page size is ${pageSize}`,
      );
    }
    const fileOffset = state.layout.header.pagesOffset + offset;
    const run = this.#run;
    if (run !== undefined && run.state === state) {
      const end = run.fileOffset + run.length;
      const gap = fileOffset - end;
      if (
        gap >= 0 && gap <= MAX_GAP_BYTES &&
        run.length + gap + pageSize <= run.buffer.bytes.byteLength &&
        this.#holes(state, end, gap)
      ) {
        run.buffer.bytes.fill(0, run.length, run.length + gap);
        run.length += gap;
        this.#copy(run, offset, data);
        return undefined;
      }
    }
    this.flush();
    const buffer = this.#buffers[this.#nextBuffer]!;
    this.#nextBuffer ^= 1;
    const start = () => {
      const next = { buffer, fileOffset, length: 0, state };
      this.#run = next;
      this.#copy(next, offset, data);
    };
    if (buffer.busy === undefined) {
      start();
      return undefined;
    }
    return buffer.busy.then(() => {
      this.#tracker.throwIfFailed();
      start();
    });
  }

  /**
   * How many PAGE records from `batch[index]` on are one run both in the
   * file and in memory (views of one buffer, back to back), when that run
   * is large enough to be written straight from the caller's memory;
   * otherwise 0.
   *
   * @param batch The records.
   * @param index Where a PAGE record starts the run.
   * @returns The run's length in records, or 0.
   */
  directSpan(
    batch: readonly { type: string }[],
    index: number,
  ): number {
    const first = batch[index] as RamPageRecord;
    const pageSize = this.#pageSize;
    const minimum = DIRECT_WRITE_BYTES / pageSize;
    if (batch.length - index < minimum) return 0;
    let count = 1;
    let previous = first;
    while (index + count < batch.length) {
      const next = batch[index + count]! as RamPageRecord;
      if (
        next.type !== "ram-page" || next.block !== first.block ||
        next.offset !== previous.offset + pageSize ||
        next.data.buffer !== first.data.buffer ||
        next.data.byteOffset !== previous.data.byteOffset + pageSize ||
        next.data.byteLength !== pageSize
      ) {
        break;
      }
      previous = next;
      count++;
    }
    return count >= minimum ? count : 0;
  }

  /**
   * Writes `count` pages straight from the caller's memory, after the
   * runs before them.
   *
   * @param state The pages' block.
   * @param first The first page; the others follow it in memory.
   * @param count How many pages.
   * @returns The write; the caller must not reuse the pages before it
   *   settles.
   * @throws {RangeError} If the first page is not one page long.
   */
  direct(
    state: MappedRamBlockState,
    first: RamPageRecord,
    count: number,
  ): Promise<void> {
    const pageSize = this.#pageSize;
    if (first.data.byteLength !== pageSize) {
      throw new RangeError(
        `Cannot write page of block "${first.block}" at ${first.offset}: data is ${first.data.byteLength} bytes, the page size is ${pageSize}`,
      );
    }
    this.flush(); // keeps earlier pages ahead of these in the file's queue
    const start = first.offset / pageSize;
    for (let page = start; page < start + count; page++) {
      state.bitmap.set(page);
      state.written.set(page);
    }
    state.bitmapDirty = true;
    this.#pagesWritten += count;
    return this.#tracker.track(
      this.#file.writeAt(
        state.layout.header.pagesOffset + first.offset,
        new Uint8Array(
          first.data.buffer,
          first.data.byteOffset,
          count * pageSize,
        ),
      ),
    );
  }

  /** Issues the write of the current run, if any. */
  flush(): void {
    const run = this.#run;
    if (run === undefined) return;
    this.#run = undefined;
    const buffer = run.buffer;
    const busy = this.#tracker.track(
      this.#file.writeAt(run.fileOffset, buffer.bytes.subarray(0, run.length)),
    ).then(() => {
      if (buffer.busy === busy) buffer.busy = undefined;
    });
    buffer.busy = busy;
  }

  #copy(run: Run, offset: number, data: Uint8Array): void {
    run.buffer.bytes.set(data, run.length);
    run.length += data.byteLength;
    const index = offset / this.#pageSize;
    run.state.bitmap.set(index);
    run.state.written.set(index);
    run.state.bitmapDirty = true;
    this.#pagesWritten++;
  }

  /** Whether `bytes` of pages from file offset `at` were never written. */
  #holes(state: MappedRamBlockState, at: number, bytes: number): boolean {
    const first = (at - state.layout.header.pagesOffset) / this.#pageSize;
    const last = first + bytes / this.#pageSize;
    for (let index = first; index < last; index++) {
      if (state.written.has(index)) return false;
    }
    return true;
  }
}
