/**
 * The sender's per-page XBZRLE decision (QEMU `save_xbzrle_page()` and
 * `xbzrle_cache_zero_page()` in `migration/ram.c`), with QEMU's
 * `xbzrle-cache` counters.
 *
 * For a dirty, non-zero page, once XBZRLE has started (after the first
 * complete round over RAM):
 *
 * ```
 * cache miss (cache-miss += 1)
 *   outside the final pass: insert the page
 *     inserted → PAGE from the cache copy       refused → PAGE from `current`
 *   final pass: cache untouched                 → PAGE from `current`
 * cache hit (pages += 1): encode(cache copy → current, limit = page size)
 *   unchanged → skip (nothing sent)
 *   overflow  → overflow += 1, bytes += page size; PAGE (from the cache copy
 *               outside the final pass)
 *   encoded   → XBZRLE record; bytes += record size − 8
 *   outside the final pass, unless unchanged, the cache copy becomes `current`
 * ```
 *
 * A page found all zero is sent as ZERO by the caller, which then calls
 * {@linkcode XbzrlePageEncoder.zeroPage} so the cache forgets the old
 * contents.
 *
 * @module
 */

import { encodeXbzrle } from "./xbzrle.ts";
import type { XbzrleCache } from "./xbzrle_cache.ts";

/** What to send for one page. */
export type XbzrlePageResult =
  | {
    /** Discriminant: the page equals what the destination holds; send nothing. */
    kind: "skip";
  }
  | {
    /** Discriminant: send an XBZRLE record. */
    kind: "xbzrle";
    /** The delta; a fresh array the caller owns. */
    delta: Uint8Array;
  }
  | {
    /** Discriminant: send a whole PAGE record. */
    kind: "page";
    /**
     * The bytes to send: the cache's copy of the page when QEMU sends from
     * the cache (outside the final pass, when the page was cached or its
     * delta overflowed), else `current`. The cache copy is a view into the
     * cache, unchanged until the next `encodePage()` or `zeroPage()` for
     * the same key, or the next `setGeneration()`; copy it to keep it
     * longer.
     */
    data: Uint8Array;
    /** Why the page goes out whole. */
    reason: "cache-miss" | "overflow";
  };

/**
 * QEMU's `xbzrle-cache` statistics, under `query-migrate`'s names.
 */
export interface XbzrleCacheStats {
  /** The configured cache size in bytes. */
  "cache-size": number;
  /**
   * XBZRLE bytes sent, excluding each record's 8-byte address word, plus one
   * page size per overflow.
   */
  bytes: number;
  /** Cache hits, including pages found unchanged. */
  pages: number;
  /** Cache misses. */
  "cache-miss": number;
  /** Misses ÷ target pages sent, over the last closed rate period. */
  "cache-miss-rate": number;
  /**
   * Hit pages × page size ÷ XBZRLE bytes, over the last closed rate period
   * (0 if there was no hit or no byte).
   */
  "encoding-rate": number;
  /** Hits whose delta did not fit and went out as a PAGE. */
  overflow: number;
}

/** Options for {@linkcode XbzrlePageEncoder}. */
export interface XbzrlePageEncoderOptions {
  /** The cache; the encoder owns its contents from now on. */
  cache: XbzrleCache;
  /**
   * Bytes in one target page; must equal the cache's.
   *
   * @default {cache.pageSize}
   */
  pageSize?: number;
}

/** Options for {@linkcode XbzrlePageEncoder.encodePage}. */
export interface XbzrleEncodePageOptions {
  /**
   * Whether this is the final pass with the guest stopped; then the cache is
   * neither filled nor updated.
   *
   * @default {false}
   */
  finalPass?: boolean;
  /**
   * Bytes the record will spend on the block name (1 + name length), or 0
   * when it carries RAM_SAVE_FLAG_CONTINUE. Only the `bytes` counter uses
   * it, as QEMU counts everything after the 8-byte address word.
   *
   * @default {0}
   */
  blockNameBytes?: number;
}

/**
 * Decides, page by page, whether to send nothing, an XBZRLE delta or the
 * whole page, keeping the cache equal to what the destination holds.
 *
 * Use it only once XBZRLE has started (QEMU starts after the first complete
 * round over RAM, during which pages are neither looked up nor cached), and
 * not in postcopy.
 *
 * @example Usage
 * ```ts
 * import { XbzrleCache, XbzrlePageEncoder } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const encoder = new XbzrlePageEncoder({ cache: new XbzrleCache(1 << 20, 4096) });
 * encoder.setGeneration(2);
 * const page = new Uint8Array(4096).fill(1);
 * assert.equal(encoder.encodePage(0x3000, page).kind, "page"); // miss: now cached
 * page[0x123] = 0x8a;
 * const result = encoder.encodePage(0x3000, page);
 * assert.deepEqual(result, { kind: "xbzrle", delta: new Uint8Array([0xa3, 0x02, 0x01, 0x8a]) });
 * assert.deepEqual(encoder.stats(), {
 *   "cache-size": 1 << 20, bytes: 7, pages: 1, "cache-miss": 1,
 *   "cache-miss-rate": 0, "encoding-rate": 0, overflow: 0,
 * });
 * ```
 */
export class XbzrlePageEncoder {
  readonly #cache: XbzrleCache;
  readonly #pageSize: number;
  readonly #output: Uint8Array;
  readonly #zeroPage: Uint8Array;
  #bytes = 0;
  #pages = 0;
  #cacheMiss = 0;
  #overflow = 0;
  #cacheMissRate = 0;
  #encodingRate = 0;
  #cacheMissPrevious = 0;
  #pagesPrevious = 0;
  #bytesPrevious = 0;

  /**
   * Constructs a new instance.
   *
   * @param options The cache and the page size.
   * @throws {RangeError} If `pageSize` differs from the cache's.
   */
  constructor(options: XbzrlePageEncoderOptions) {
    const { cache, pageSize = cache.pageSize } = options;
    if (pageSize !== cache.pageSize) {
      throw new RangeError(
        `Cannot construct XbzrlePageEncoder as pageSize must equal the cache's (${cache.pageSize}): received ${pageSize}`,
      );
    }
    this.#cache = cache;
    this.#pageSize = pageSize;
    this.#output = new Uint8Array(pageSize);
    this.#zeroPage = new Uint8Array(pageSize);
  }

  /**
   * Sets the cache generation; call it on every dirty sync with the sync
   * count.
   *
   * @example Usage
   * ```ts
   * import { XbzrleCache, XbzrlePageEncoder } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const cache = new XbzrleCache(4096, 4096);
   * new XbzrlePageEncoder({ cache }).setGeneration(3);
   * assert.equal(cache.generation, 3);
   * ```
   *
   * @param generation The dirty-sync count, a non-negative integer.
   * @throws {RangeError} If `generation` is not a non-negative integer.
   */
  setGeneration(generation: number): void {
    this.#cache.setGeneration(generation);
  }

  /**
   * Decides what to send for a dirty page that is not all zero.
   *
   * @example Usage
   * ```ts
   * import { XbzrleCache, XbzrlePageEncoder } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const encoder = new XbzrlePageEncoder({ cache: new XbzrleCache(4096, 4096) });
   * const page = new Uint8Array(4096).fill(9);
   * assert.equal(encoder.encodePage(0, page).kind, "page");
   * assert.deepEqual(encoder.encodePage(0, page), { kind: "skip" });
   * ```
   *
   * @param key The page's address in the flat RAM address space.
   * @param current A snapshot of the page, `pageSize` bytes.
   * @param options Whether this is the final pass; block-name bytes.
   * @returns What to send.
   * @throws {RangeError} If `key` or `current` is invalid.
   */
  encodePage(
    key: number,
    current: Uint8Array,
    options: XbzrleEncodePageOptions = {},
  ): XbzrlePageResult {
    const { finalPass = false, blockNameBytes = 0 } = options;
    if (current.length !== this.#pageSize) {
      throw new RangeError(
        `Cannot encode page as it must be ${this.#pageSize} bytes: received ${current.length}`,
      );
    }
    const cached = this.#cache.lookup(key);
    if (cached === undefined) {
      this.#cacheMiss++;
      if (!finalPass) {
        const inserted = this.#cache.insert(key, current);
        if (inserted.kind === "inserted") {
          return { kind: "page", data: inserted.data, reason: "cache-miss" };
        }
      }
      return { kind: "page", data: current, reason: "cache-miss" };
    }
    this.#pages++;
    const result = encodeXbzrle(cached, current, {
      limit: this.#pageSize,
      output: this.#output,
    });
    if (result.kind === "unchanged") return SKIP;
    if (!finalPass) cached.set(current);
    if (result.kind === "overflow") {
      this.#overflow++;
      this.#bytes += this.#pageSize;
      return {
        kind: "page",
        data: finalPass ? current : cached,
        reason: "overflow",
      };
    }
    this.#bytes += blockNameBytes + 1 + 2 + result.delta.length;
    return { kind: "xbzrle", delta: result.delta.slice() };
  }

  /**
   * Records that the page at `key` was sent as ZERO: its cache slot gets an
   * all-zero page (the usual insert rules apply; an entry for the same key
   * is always replaced), so a stale copy is never used as a base and small
   * writes to the page can later go out as XBZRLE. QEMU does this in every
   * pass, the final one included.
   *
   * @example Usage
   * ```ts
   * import { XbzrleCache, XbzrlePageEncoder } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const cache = new XbzrleCache(4096, 4096);
   * const encoder = new XbzrlePageEncoder({ cache });
   * encoder.encodePage(0, new Uint8Array(4096).fill(5));
   * encoder.zeroPage(0);
   * assert.deepEqual(cache.lookup(0), new Uint8Array(4096));
   * ```
   *
   * @param key The page's address in the flat RAM address space.
   * @throws {RangeError} If `key` is not a non-negative integer.
   */
  zeroPage(key: number): void {
    this.#cache.insert(key, this.#zeroPage);
  }

  /**
   * Closes a rate period and computes `cache-miss-rate` and `encoding-rate`
   * over it, as QEMU does at a dirty sync at least one second after the
   * previous period closed. When no target page was sent in the period
   * the rates stay as they were and the period goes on (its misses, hits
   * and bytes count towards the next one).
   *
   * @example Usage
   * ```ts
   * import { XbzrleCache, XbzrlePageEncoder } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const encoder = new XbzrlePageEncoder({ cache: new XbzrleCache(8192, 4096) });
   * const page = new Uint8Array(4096).fill(1);
   * encoder.encodePage(0, page);
   * page[0x123] = 0x8a;
   * encoder.encodePage(0, page); // hit: 4 delta bytes + 3 = 7 bytes
   * encoder.encodePage(4096, page); // miss
   * encoder.closeRatePeriod(4); // 2 misses in 4 pages sent
   * assert.equal(encoder.stats()["cache-miss-rate"], 0.5);
   * assert.equal(encoder.stats()["encoding-rate"], 4096 / 7);
   * ```
   *
   * @param targetPagesSent Target pages sent during the period, in any
   * record that carries one (ZERO, PAGE, XBZRLE); pages skipped as
   * unchanged do not count.
   * @throws {RangeError} If `targetPagesSent` is not a non-negative integer.
   */
  closeRatePeriod(targetPagesSent: number): void {
    if (!Number.isSafeInteger(targetPagesSent) || targetPagesSent < 0) {
      throw new RangeError(
        `Cannot close XBZRLE rate period as targetPagesSent must be a non-negative integer: received ${targetPagesSent}`,
      );
    }
    if (targetPagesSent === 0) return;
    this.#cacheMissRate = (this.#cacheMiss - this.#cacheMissPrevious) /
      targetPagesSent;
    this.#cacheMissPrevious = this.#cacheMiss;
    const encodedBytes = this.#bytes - this.#bytesPrevious;
    const hitPages = this.#pages - this.#pagesPrevious;
    this.#encodingRate = hitPages === 0 || encodedBytes === 0
      ? 0
      : hitPages * this.#pageSize / encodedBytes;
    this.#pagesPrevious = this.#pages;
    this.#bytesPrevious = this.#bytes;
  }

  /**
   * The counters, with the names and meanings of QEMU's `query-migrate`
   * `xbzrle-cache` object.
   *
   * @example Usage
   * ```ts
   * import { XbzrleCache, XbzrlePageEncoder } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const encoder = new XbzrlePageEncoder({ cache: new XbzrleCache(1 << 26, 4096) });
   * assert.equal(encoder.stats()["cache-size"], 67108864);
   * ```
   *
   * @returns A fresh snapshot of the counters.
   */
  stats(): XbzrleCacheStats {
    return {
      "cache-size": this.#cache.sizeBytes,
      bytes: this.#bytes,
      pages: this.#pages,
      "cache-miss": this.#cacheMiss,
      "cache-miss-rate": this.#cacheMissRate,
      "encoding-rate": this.#encodingRate,
      overflow: this.#overflow,
    };
  }
}

const SKIP: XbzrlePageResult = Object.freeze({ kind: "skip" });
