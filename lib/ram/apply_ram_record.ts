import type { RamRecord } from "./ram_record.ts";
import { decodeXbzrle } from "./xbzrle.ts";

/**
 * Guest memory as the destination's loader sees it: a writable view of one
 * page, by block and byte offset.
 *
 * @example Usage
 * ```ts
 * import type { PageMemory } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const ram = new Uint8Array(8192);
 * const memory: PageMemory = {
 *   pageSize: 4096,
 *   pageView: (_block, offset) => ram.subarray(offset, offset + 4096),
 * };
 * assert.equal(memory.pageView("pc.ram", 4096).byteOffset, 4096);
 * ```
 */
export interface PageMemory {
  /** The target page size. */
  readonly pageSize: number;
  /**
   * A writable view of the page at `offset` in `block`.
   *
   * @param block The block idstr.
   * @param offset The page's byte offset in the block.
   */
  pageView(block: string, offset: number): Uint8Array;
}

/**
 * Applies one RAM record to guest memory the way QEMU's destination does:
 * ZERO fills the page, PAGE copies it, XBZRLE patches the current content,
 * COMPRESS_PAGE copies the inflated page. Other records change nothing.
 *
 * @example Usage
 * ```ts
 * import { applyRamRecord } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const ram = new Uint8Array(4096);
 * const memory = { pageSize: 4096, pageView: () => ram };
 * applyRamRecord({ type: "ram-xbzrle", block: "pc.ram", offset: 0, delta: new Uint8Array([0x05, 0x01, 0x7f]) }, memory);
 * assert.equal(ram[5], 0x7f);
 * ```
 *
 * @param record The record.
 * @param memory Where pages live.
 * @throws {StreamFormatError} If an XBZRLE delta is invalid.
 * @throws {TypeError} If a compressed page was not inflated (`page` is
 *   unset): the caller should have inflated it first.
 */
export function applyRamRecord(record: RamRecord, memory: PageMemory): void {
  switch (record.type) {
    case "ram-page":
      memory.pageView(record.block, record.offset).set(record.data);
      return;
    case "ram-zero":
      memory.pageView(record.block, record.offset).fill(record.fill);
      return;
    case "ram-xbzrle":
      decodeXbzrle(record.delta, memory.pageView(record.block, record.offset));
      return;
    case "ram-compressed":
      if (record.page === undefined) {
        throw new TypeError(
          `Cannot apply compressed page of block "${record.block}" at ${record.offset}: it was not inflated`,
        );
      }
      memory.pageView(record.block, record.offset).set(record.page);
      return;
    default:
      return;
  }
}
