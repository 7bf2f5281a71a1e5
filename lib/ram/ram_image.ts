import type { PageMemory } from "./apply_ram_record.ts";
import { applyRamRecord } from "./apply_ram_record.ts";
import type { RamBlockInfo, RamRecord } from "./ram_record.ts";

/** Options for {@linkcode RamImage}. */
export interface RamImageOptions {
  /**
   * The target page size.
   *
   * @default {4096}
   */
  pageSize?: number;
}

const SLAB_BYTES = 1024 * 1024;

/**
 * The RAM a destination would hold after loading a stream: blocks sized
 * from the MEM_SIZE block list, records applied in stream order.
 *
 * Memory is allocated in 1 MiB slabs on first write, so a stream that
 * announces huge blocks costs only what it really sends; untouched pages
 * read as zeros.
 *
 * @example Usage
 * ```ts
 * import { RamImage } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const image = new RamImage();
 * image.apply({ type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 8192 }] });
 * image.apply({ type: "ram-page", block: "pc.ram", offset: 4096, data: new Uint8Array(4096).fill(7) });
 * const ram = image.read("pc.ram");
 * assert.equal(ram.byteLength, 8192);
 * assert.equal(ram[0], 0);
 * assert.equal(ram[4096], 7);
 * ```
 */
export class RamImage implements PageMemory {
  readonly #pageSize: number;
  readonly #blocks = new Map<
    string,
    { info: RamBlockInfo; slabs: Uint8Array[] }
  >();

  /**
   * Constructs a new instance.
   *
   * @param options The page size.
   */
  constructor(options: RamImageOptions = {}) {
    const pageSize = options.pageSize ?? 4096;
    if (!Number.isInteger(Math.log2(pageSize)) || pageSize > SLAB_BYTES) {
      throw new RangeError(
        `Cannot construct RamImage as pageSize must be a power of two <= 1 MiB: received ${pageSize}`,
      );
    }
    this.#pageSize = pageSize;
  }

  /** The target page size. */
  get pageSize(): number {
    return this.#pageSize;
  }

  /** The blocks, in the order they were announced. */
  get blocks(): RamBlockInfo[] {
    return [...this.#blocks.values()].map((block) => block.info);
  }

  /** Bytes actually allocated for page data. */
  get allocatedBytes(): number {
    let total = 0;
    for (const block of this.#blocks.values()) {
      for (const slab of block.slabs) total += slab?.byteLength ?? 0;
    }
    return total;
  }

  /**
   * Adds blocks (a block announced again keeps its content if its length
   * is unchanged, and restarts empty otherwise).
   *
   * @param blocks The blocks.
   */
  addBlocks(blocks: readonly RamBlockInfo[]): void {
    for (const info of blocks) {
      const known = this.#blocks.get(info.idstr);
      if (known && known.info.usedLength === info.usedLength) {
        known.info = info;
        continue;
      }
      this.#blocks.set(info.idstr, { info, slabs: [] });
    }
  }

  /**
   * Applies one record: MEM_SIZE adds blocks, page records change pages.
   *
   * @param record The record.
   */
  apply(record: RamRecord): void {
    if (record.type === "ram-mem-size") this.addBlocks(record.blocks);
    else applyRamRecord(record, this);
  }

  /**
   * A writable view of one page, allocating its slab when needed.
   *
   * @param block The block idstr.
   * @param offset The page's byte offset.
   * @returns The page view.
   * @throws {RangeError} If the block is unknown or the page outside it.
   */
  pageView(block: string, offset: number): Uint8Array {
    const entry = this.#blocks.get(block);
    if (entry === undefined) {
      throw new RangeError(
        `Cannot find RAM block "${block}": it was never announced`,
      );
    }
    if (offset < 0 || offset + this.#pageSize > entry.info.usedLength) {
      throw new RangeError(
        `Cannot access offset ${offset} of RAM block "${block}": the block is ${entry.info.usedLength} bytes`,
      );
    }
    const index = Math.floor(offset / SLAB_BYTES);
    let slab = entry.slabs[index];
    if (slab === undefined) {
      slab = new Uint8Array(
        Math.min(SLAB_BYTES, entry.info.usedLength - index * SLAB_BYTES),
      );
      entry.slabs[index] = slab;
    }
    const at = offset - index * SLAB_BYTES;
    return slab.subarray(at, at + this.#pageSize);
  }

  /**
   * The block's content in pieces of up to 1 MiB, zeros where nothing was
   * written; for writing large blocks out without one big allocation.
   *
   * @param block The block idstr.
   * @returns The pieces, in order. Views: copy before keeping.
   */
  *chunks(block: string): Generator<Uint8Array> {
    const entry = this.#blocks.get(block);
    if (entry === undefined) {
      throw new RangeError(
        `Cannot find RAM block "${block}": it was never announced`,
      );
    }
    const length = entry.info.usedLength;
    let zero: Uint8Array | undefined;
    for (let at = 0; at < length; at += SLAB_BYTES) {
      const index = at / SLAB_BYTES;
      const size = Math.min(SLAB_BYTES, length - at);
      const slab = entry.slabs[index];
      if (slab) {
        yield slab;
      } else {
        zero ??= new Uint8Array(SLAB_BYTES);
        yield zero.subarray(0, size);
      }
    }
  }

  /**
   * The block's whole content as one new array.
   *
   * @param block The block idstr.
   * @returns A copy of the block.
   */
  read(block: string): Uint8Array {
    const entry = this.#blocks.get(block);
    if (entry === undefined) {
      throw new RangeError(
        `Cannot find RAM block "${block}": it was never announced`,
      );
    }
    const out = new Uint8Array(entry.info.usedLength);
    let at = 0;
    for (const chunk of this.chunks(block)) {
      out.set(chunk, at);
      at += chunk.byteLength;
    }
    return out;
  }
}
