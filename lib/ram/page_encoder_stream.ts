import { isZeroPage } from "../bytes/is_zero_page.ts";
import type { PageBatch } from "./dirty_page_scanner.ts";
import type { RamRecord } from "./ram_record.ts";
import type {
  XbzrlePageEncoder,
  XbzrlePageResult,
} from "./xbzrle_page_encoder.ts";

/** Page counts kept by {@linkcode PageEncoderStream}, named as QEMU's `ram` stats. */
export interface PageEncoderCounters {
  /** Zero pages sent (QEMU's `duplicate`). */
  duplicate: number;
  /** Whole pages sent (QEMU's `normal`). */
  normal: number;
  /** XBZRLE records sent. */
  xbzrle: number;
  /** Dirty pages found unchanged through the XBZRLE cache (nothing sent). */
  unchanged: number;
}

/** Options for {@linkcode PageEncoderStream}. */
export interface PageEncoderStreamOptions {
  /**
   * XBZRLE, when the capability is on. It is used for batches taken after
   * the first complete round over RAM, as QEMU does.
   */
  xbzrle?: XbzrlePageEncoder;
  /**
   * Whether all-zero pages go out as ZERO records.
   *
   * @default {true}
   */
  zeroPageDetection?: boolean;
  /**
   * Whether the guest is stopped (the final pass): the XBZRLE cache is then
   * left alone.
   *
   * @default {false}
   */
  finalPass?: boolean;
  /**
   * Whether to end with an EOS record, closing the RAM data of a section.
   *
   * @default {true}
   */
  eos?: boolean;
  /** Counters to add to; pass the same object to every section's stream. */
  counters?: PageEncoderCounters;
  /**
   * The block the previous record named, so XBZRLE byte counts know when
   * the wire will use CONTINUE. Updated as records go out.
   */
  lastBlock?: { name: string | undefined };
}

/**
 * Turns batches of dirty pages into RAM records: ZERO for all-zero pages
 * (QEMU's zero-page detection), XBZRLE deltas when enabled and the delta
 * fits, nothing for pages XBZRLE finds unchanged, PAGE otherwise; EOS at
 * the end. One output chunk per input batch.
 *
 * PAGE records carry views of guest memory (or of the XBZRLE cache), not
 * copies: the wire encoder copies them into its output. A page the guest
 * changes in between is dirty again and will be sent again.
 *
 * @example Usage
 * ```ts
 * import { DirtyPageScanner, GuestMemory, PageEncoderStream, PageSourceStream } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const memory = new GuestMemory([{ idstr: "pc.ram", size: 2 * 4096 }]);
 * memory.blocks[0]!.bytes[4096] = 1;
 * const records = (await Array.fromAsync(
 *   new PageSourceStream(new DirtyPageScanner(memory)).pipeThrough(new PageEncoderStream()),
 * )).flat();
 * assert.deepEqual(records.map((r) => r.type), ["ram-zero", "ram-page", "ram-eos"]);
 * ```
 */
export class PageEncoderStream extends TransformStream<PageBatch, RamRecord[]> {
  /**
   * Constructs a new instance.
   *
   * @param options XBZRLE, zero detection, final pass, counters.
   */
  constructor(options: PageEncoderStreamOptions = {}) {
    const {
      xbzrle,
      zeroPageDetection = true,
      finalPass = false,
      eos = true,
    } = options;
    const counters = options.counters ??
      { duplicate: 0, normal: 0, xbzrle: 0, unchanged: 0 };
    const last = options.lastBlock ?? { name: undefined };
    super({
      transform(batch, controller) {
        const { block, pages } = batch;
        const bytes = block.bytes;
        const idstr = block.idstr;
        const pageSize = bytes.byteLength / block.pageCount;
        const useXbzrle = xbzrle !== undefined && batch.round > 0;
        const nameBytes = 1 + ENCODER.encode(idstr).byteLength;
        // One word view per batch, not one per page, when the block allows.
        const words = zeroPageDetection ? wordView(bytes, pageSize) : undefined;
        const out: RamRecord[] = [];
        for (let i = 0; i < pages.length; i++) {
          const offset = pages[i]! * pageSize;
          const page = bytes.subarray(offset, offset + pageSize);
          if (
            zeroPageDetection &&
            (words !== undefined
              ? isZeroWords(words, offset >>> 2, (offset + pageSize) >>> 2)
              : isZeroPage(page))
          ) {
            out.push({ type: "ram-zero", block: idstr, offset, fill: 0 });
            counters.duplicate++;
            if (useXbzrle) xbzrle.zeroPage(block.base + offset);
            last.name = idstr;
            continue;
          }
          if (useXbzrle) {
            const result = xbzrle.encodePage(block.base + offset, page, {
              finalPass,
              blockNameBytes: last.name === idstr ? 0 : nameBytes,
            });
            if (result.kind === "skip") {
              counters.unchanged++;
              continue;
            }
            out.push(xbzrleRecord(result, idstr, offset, counters));
          } else {
            out.push({ type: "ram-page", block: idstr, offset, data: page });
            counters.normal++;
          }
          last.name = idstr;
        }
        if (out.length > 0) controller.enqueue(out);
      },
      flush(controller) {
        if (eos) controller.enqueue([{ type: "ram-eos" }]);
      },
    });
  }
}

/**
 * The record for a page XBZRLE did not skip: its delta, or the whole page
 * when the delta would not pay; counted as QEMU counts them.
 */
function xbzrleRecord(
  result: Exclude<XbzrlePageResult, { kind: "skip" }>,
  block: string,
  offset: number,
  counters: PageEncoderCounters,
): RamRecord {
  if (result.kind === "xbzrle") {
    counters.xbzrle++;
    return { type: "ram-xbzrle", block, offset, delta: result.delta };
  }
  counters.normal++;
  return { type: "ram-page", block, offset, data: result.data };
}

/**
 * `bytes` as 32-bit words, when whole pages of it can be checked eight
 * words at a time (aligned, page size a multiple of 32).
 */
function wordView(
  bytes: Uint8Array,
  pageSize: number,
): Int32Array | undefined {
  if ((bytes.byteOffset & 3) !== 0 || (pageSize & 31) !== 0) return undefined;
  return new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
}

/** Whether `words[start..end)` are all zero; `end - start` is a multiple of 8. */
function isZeroWords(words: Int32Array, start: number, end: number): boolean {
  if (words[start] !== 0 || words[end - 1] !== 0) return false;
  for (let i = start; i < end; i += 8) {
    if (
      (words[i]! | words[i + 1]! | words[i + 2]! | words[i + 3]! |
        words[i + 4]! | words[i + 5]! | words[i + 6]! | words[i + 7]!) !== 0
    ) {
      return false;
    }
  }
  return true;
}

const ENCODER = new TextEncoder();
