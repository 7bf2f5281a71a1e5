/**
 * Re-encodes the RAM records of a migration stream with livemig's own
 * choices, whatever the source chose: every page record is applied to an
 * image of the guest RAM (what the destination holds once it loaded the
 * records sent so far) and sent again as ZERO, PAGE or XBZRLE.
 *
 * ```
 * records in ──► ZERO | PAGE | XBZRLE | COMPRESS_PAGE ──► apply to the RAM image
 *                                                          │ the page now
 *                          all zero? ──► ZERO (XBZRLE cache gets a zero page)
 *                          XBZRLE started (after the first round)?
 *                              cache: unchanged → nothing, delta → XBZRLE,
 *                                     miss/overflow → PAGE
 *                          else ──► PAGE
 * every other record ──► unchanged (header, commands, sections, device tail)
 * ```
 *
 * Page records go out without `continued`, so the encoder sets CONTINUE
 * by itself.
 *
 * @module
 */

import { isZeroPage } from "../bytes/is_zero_page.ts";
import { RamImage } from "../ram/ram_image.ts";
import type {
  RamMemSizeRecord,
  RamPageCarrier,
  RamRecord,
} from "../ram/ram_record.ts";
import { XbzrleCache } from "../ram/xbzrle_cache.ts";
import {
  type XbzrleCacheStats,
  XbzrlePageEncoder,
} from "../ram/xbzrle_page_encoder.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";

/** Options for {@linkcode ReencodeStream}. */
export interface ReencodeStreamOptions {
  /**
   * Whether pages re-sent after the first complete round go out as XBZRLE
   * deltas (QEMU's `xbzrle` capability), whether or not the source used
   * XBZRLE.
   *
   * @default {false}
   */
  xbzrle?: boolean;
  /**
   * Bytes of the XBZRLE page cache (QEMU's `xbzrle-cache-size`): a power of
   * two of at least one page.
   *
   * @default {64 * 1024 * 1024}
   */
  xbzrleCacheSize?: number;
}

/** Page records counted by kind, on one side of a {@linkcode ReencodeStream}. */
export interface ReencodedPages {
  /** ZERO records (QEMU's `duplicate`). */
  duplicate: number;
  /** PAGE records (QEMU's `normal`). */
  normal: number;
  /** XBZRLE records. */
  xbzrle: number;
  /** COMPRESS_PAGE records (received only; never sent). */
  compressed: number;
  /**
   * Pages received that the XBZRLE cache found equal to what the
   * destination holds, so nothing was sent (sent side only).
   */
  unchanged: number;
}

/** What a {@linkcode ReencodeStream} counted. */
export interface ReencodeStats {
  /** Page records as they came in. */
  received: ReencodedPages;
  /** Page records as they went out. */
  sent: ReencodedPages;
  /**
   * Complete rounds over RAM seen so far: a page at or below the previous
   * page's address starts a new one (QEMU scans RAM in address order).
   */
  rounds: number;
  /** The XBZRLE cache counters, when XBZRLE is on. */
  "xbzrle-cache"?: XbzrleCacheStats;
}

/**
 * A stream stage that re-encodes every RAM page record of a decoded
 * migration stream (batches of {@linkcode MigrationRecord}s in, batches
 * out), keeping an image of the RAM the destination holds so that XBZRLE
 * deltas are computed against exactly what was sent.
 *
 * XBZRLE follows QEMU's sender: it starts after the first complete round
 * over RAM (until then pages are neither looked up nor cached), the round
 * count is the cache generation, all-zero pages go out as ZERO first,
 * and inside the final (END) section the cache is left alone. After
 * POSTCOPY_LISTEN (or the PACKAGED command that carries it) no XBZRLE
 * record is sent: a postcopy destination refuses them. Rounds are not
 * counted in postcopy, where requested pages come out of address order.
 *
 * @example Usage
 * ```ts
 * import { type MigrationRecord, ReencodeStream } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const page = new Uint8Array(4096).fill(7);
 * const changed = page.slice();
 * changed[100] = 8;
 * const records: MigrationRecord[] = [
 *   { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 8192 }] },
 *   { type: "ram-page", block: "pc.ram", offset: 0, data: page, continued: false },
 *   { type: "ram-zero", block: "pc.ram", offset: 4096, fill: 0, continued: true },
 *   { type: "ram-page", block: "pc.ram", offset: 0, data: page, continued: true }, // round 2: cached
 *   { type: "ram-page", block: "pc.ram", offset: 0, data: changed, continued: true }, // round 3
 * ];
 * const stage = new ReencodeStream({ xbzrle: true, xbzrleCacheSize: 1 << 20 });
 * const out = (await Array.fromAsync(ReadableStream.from([records]).pipeThrough(stage))).flat();
 * assert.deepEqual(out.map((r) => r.type), ["ram-mem-size", "ram-page", "ram-zero", "ram-page", "ram-xbzrle"]);
 * assert.equal(stage.stats().sent.xbzrle, 1);
 * assert.equal(stage.stats().rounds, 2);
 * ```
 */
export class ReencodeStream
  extends TransformStream<readonly MigrationRecord[], MigrationRecord[]> {
  readonly #xbzrle: boolean;
  readonly #cacheSize: number;
  #pageSize = 4096;
  #image: RamImage | undefined;
  #bases = new Map<string, number>();
  #encoder: XbzrlePageEncoder | undefined;
  #xbzrleStarted = false;
  #finalPass = false;
  #postcopy = false;
  #lastKey = -1;
  #rounds = 0;
  #lastBlock: string | undefined;
  #pagesInPeriod = 0;
  readonly #received: ReencodedPages = emptyCounts();
  readonly #sent: ReencodedPages = emptyCounts();

  /**
   * Constructs a new instance.
   *
   * @param options Whether to use XBZRLE, and its cache size.
   * @throws {RangeError} If `xbzrleCacheSize` is not a power of two.
   */
  constructor(options: ReencodeStreamOptions = {}) {
    const { xbzrle = false, xbzrleCacheSize = 64 * 1024 * 1024 } = options;
    if (
      !Number.isSafeInteger(xbzrleCacheSize) || xbzrleCacheSize <= 0 ||
      !Number.isInteger(Math.log2(xbzrleCacheSize))
    ) {
      throw new RangeError(
        `Cannot construct ReencodeStream as xbzrleCacheSize must be a power of two: received ${xbzrleCacheSize}`,
      );
    }
    // deno-lint-ignore prefer-const
    let self: ReencodeStream;
    super({
      transform(batch, controller) {
        const out = self.#reencode(batch);
        if (out.length > 0) controller.enqueue(out);
      },
      flush() {
        self.#encoder?.closeRatePeriod(self.#pagesInPeriod);
        self.#pagesInPeriod = 0;
      },
    });
    self = this;
    this.#xbzrle = xbzrle;
    this.#cacheSize = xbzrleCacheSize;
  }

  /**
   * The RAM the destination holds once it loaded what was sent so far
   * (undefined before the block list).
   */
  get image(): RamImage | undefined {
    return this.#image;
  }

  /**
   * What was counted so far.
   *
   * @returns A fresh snapshot.
   */
  stats(): ReencodeStats {
    const stats: ReencodeStats = {
      received: { ...this.#received },
      sent: { ...this.#sent },
      rounds: this.#rounds,
    };
    if (this.#encoder) stats["xbzrle-cache"] = this.#encoder.stats();
    return stats;
  }

  #reencode(batch: readonly MigrationRecord[]): MigrationRecord[] {
    const out: MigrationRecord[] = [];
    for (const record of batch) {
      switch (record.type) {
        case "configuration":
          if (record.targetPageBits !== undefined) {
            this.#pageSize = 2 ** record.targetPageBits;
          }
          out.push(record);
          break;
        case "ram-mem-size":
          this.#addBlocks(record);
          out.push(record);
          break;
        case "section-start":
        case "section-part":
          this.#finalPass = false;
          out.push(record);
          break;
        case "section-end":
          this.#finalPass = true;
          out.push(record);
          break;
        case "command":
          if (
            record.command === "POSTCOPY_LISTEN" ||
            record.command === "PACKAGED"
          ) {
            this.#postcopy = true;
          }
          if (
            record.command === "POSTCOPY_RAM_DISCARD" ||
            record.command === "PACKAGED"
          ) {
            // The source forgets its current block at the switch.
            this.#lastBlock = undefined;
          }
          out.push(record);
          break;
        case "ram-zero":
        case "ram-page":
        case "ram-xbzrle":
        case "ram-compressed": {
          const sent = this.#page(record);
          if (sent !== undefined) out.push(sent);
          break;
        }
        default:
          out.push(record);
      }
    }
    return out;
  }

  #addBlocks(record: RamMemSizeRecord): void {
    this.#image ??= new RamImage({ pageSize: this.#pageSize });
    this.#image.addBlocks(record.blocks);
    let base = 0;
    for (const block of this.#image.blocks) {
      this.#bases.set(block.idstr, base);
      base += block.usedLength;
    }
    if (this.#xbzrle && this.#encoder === undefined) {
      this.#encoder = new XbzrlePageEncoder({
        cache: new XbzrleCache(this.#cacheSize, this.#pageSize),
      });
    }
  }

  #page(record: RamPageCarrier): RamRecord | undefined {
    const image = this.#image;
    const base = this.#bases.get(record.block);
    if (image === undefined || base === undefined) {
      throw new TypeError(
        `Cannot re-encode a page of block "${record.block}": the block list did not announce it`,
      );
    }
    this.#received[RECEIVED_KIND[record.type]]++;
    const key = base + record.offset;
    // In postcopy requested pages jump ahead of the background scan, so an
    // address going back starts no round there.
    if (key <= this.#lastKey && !this.#postcopy) this.#newRound();
    this.#lastKey = key;
    image.apply(record);
    const { block, offset } = record;
    const page = image.pageView(block, offset);
    const encoder = this.#xbzrleStarted && !this.#postcopy
      ? this.#encoder
      : undefined;
    let sent: RamRecord;
    if (isZeroPage(page)) {
      if (this.#xbzrleStarted) this.#encoder?.zeroPage(key);
      sent = { type: "ram-zero", block, offset, fill: 0 };
      this.#sent.duplicate++;
    } else if (encoder !== undefined) {
      const result = encoder.encodePage(key, page, {
        finalPass: this.#finalPass,
        blockNameBytes: block === this.#lastBlock ? 0 : 1 + utf8Length(block),
      });
      if (result.kind === "skip") {
        this.#sent.unchanged++;
        return undefined;
      }
      if (result.kind === "xbzrle") {
        sent = { type: "ram-xbzrle", block, offset, delta: result.delta };
        this.#sent.xbzrle++;
      } else {
        sent = { type: "ram-page", block, offset, data: result.data.slice() };
        this.#sent.normal++;
      }
    } else {
      sent = { type: "ram-page", block, offset, data: page.slice() };
      this.#sent.normal++;
    }
    this.#lastBlock = block;
    this.#pagesInPeriod++;
    return sent;
  }

  #newRound(): void {
    this.#rounds++;
    if (this.#encoder === undefined) return;
    this.#xbzrleStarted = true;
    this.#encoder.setGeneration(this.#rounds);
    this.#encoder.closeRatePeriod(this.#pagesInPeriod);
    this.#pagesInPeriod = 0;
  }
}

const RECEIVED_KIND = {
  "ram-zero": "duplicate",
  "ram-page": "normal",
  "ram-xbzrle": "xbzrle",
  "ram-compressed": "compressed",
} as const;

function emptyCounts(): ReencodedPages {
  return { duplicate: 0, normal: 0, xbzrle: 0, compressed: 0, unchanged: 0 };
}

function utf8Length(text: string): number {
  return new TextEncoder().encode(text).byteLength;
}
