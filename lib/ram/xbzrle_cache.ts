/**
 * The XBZRLE sender's page cache: the last bytes sent for recently sent
 * pages, so the next change to one of them can go out as a delta.
 *
 * ```
 * slots = cacheSizeBytes / pageSize                 (a power of two)
 * slot  = floor(key / pageSize) & (slots - 1)       direct-mapped
 * slot content: key ("none" at first), age, one page copy (allocated on first use)
 * ```
 *
 * Keys are page addresses in one flat RAM address space (QEMU uses the
 * block's base plus the page offset); they never appear on the wire, so a
 * different keying changes only hits and misses. Ages are dirty-sync
 * generations ({@linkcode XbzrleCache.setGeneration}): a slot holding
 * another key resists replacement while `age + 2 > generation`
 * (QEMU's `CACHED_PAGE_LIFETIME` of 2).
 *
 * Source: QEMU `migration/page_cache.c`, `migration/ram.c`
 * (`xbzrle_cache_resize`).
 *
 * @module
 */

/**
 * Generations a cached page resists replacement by another page: 2.
 *
 * @example Usage
 * ```ts
 * import { CACHED_PAGE_LIFETIME, XbzrleCache } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const cache = new XbzrleCache(4096, 4096); // one slot
 * cache.insert(0, new Uint8Array(4096));
 * cache.setGeneration(CACHED_PAGE_LIFETIME - 1);
 * assert.equal(cache.insert(4096, new Uint8Array(4096)).kind, "refused");
 * cache.setGeneration(CACHED_PAGE_LIFETIME);
 * assert.equal(cache.insert(4096, new Uint8Array(4096)).kind, "inserted");
 * ```
 */
export const CACHED_PAGE_LIFETIME = 2;

/** What {@linkcode XbzrleCache.insert} did. */
export type XbzrleCacheInsertResult =
  | {
    /** Discriminant: the page is now cached. */
    kind: "inserted";
    /**
     * The cache's copy of the page (a view into the cache; it changes when
     * the slot is next written).
     */
    data: Uint8Array;
  }
  | {
    /** Discriminant: the slot holds another page that is still fresh. */
    kind: "refused";
  };

/**
 * A direct-mapped cache of page copies, QEMU's XBZRLE page cache.
 *
 * Memory is taken lazily: page copies come from slabs of up to 1 MiB
 * allocated when a slot is first filled, so a 64 MiB cache that holds a
 * few pages uses about 1 MiB.
 *
 * @example Usage
 * ```ts
 * import { XbzrleCache } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const cache = new XbzrleCache(64 * 1024, 4096); // 16 slots
 * cache.setGeneration(1);
 * const page = new Uint8Array(4096).fill(7);
 * assert.equal(cache.insert(0x10000, page).kind, "inserted");
 * assert.deepEqual(cache.lookup(0x10000), page);
 * // 0x20000 maps to the same slot (page 32 & 15 = page 16 & 15 = 0) and the entry is fresh:
 * assert.equal(cache.insert(0x20000, page).kind, "refused");
 * cache.setGeneration(3);
 * assert.equal(cache.insert(0x20000, page).kind, "inserted");
 * assert.equal(cache.lookup(0x10000), undefined);
 * ```
 */
export class XbzrleCache {
  readonly #pageSize: number;
  #sizeBytes = 0;
  #slotMask = 0;
  #keys = new Float64Array(0);
  #ages = new Float64Array(0);
  #pages: (Uint8Array | undefined)[] = [];
  #cachedPages = 0;
  #slab: Uint8Array | undefined;
  #slabUsed = 0;
  #allocatedBytes = 0;
  #generation = 0;

  /**
   * Constructs a new, empty cache.
   *
   * @param cacheSizeBytes Total bytes for page copies (QEMU's
   * `xbzrle-cache-size`, default 64 MiB): a power of two, at least one page.
   * @param pageSize Bytes in one target page: a power of two.
   * @throws {RangeError} If either size is not a power of two, or the cache
   * is smaller than one page.
   */
  constructor(cacheSizeBytes: number, pageSize: number) {
    if (!isPowerOfTwo(pageSize)) {
      throw new RangeError(
        `Cannot construct XbzrleCache as pageSize must be a power of two: received ${pageSize}`,
      );
    }
    this.#pageSize = pageSize;
    this.#reset(cacheSizeBytes, "construct XbzrleCache");
  }

  /** Bytes in one page. */
  get pageSize(): number {
    return this.#pageSize;
  }

  /** The configured cache size in bytes. */
  get sizeBytes(): number {
    return this.#sizeBytes;
  }

  /** How many slots (pages) the cache can hold. */
  get slotCount(): number {
    return this.#slotMask + 1;
  }

  /** How many slots hold a page. */
  get cachedPages(): number {
    return this.#cachedPages;
  }

  /** Bytes allocated for page copies so far (grows in slabs of up to 1 MiB). */
  get allocatedBytes(): number {
    return this.#allocatedBytes;
  }

  /** The current generation, the age given to pages looked up or inserted. */
  get generation(): number {
    return this.#generation;
  }

  /**
   * Sets the current generation; call it on every dirty sync with QEMU's
   * `dirty-sync-count`.
   *
   * @example Usage
   * ```ts
   * import { XbzrleCache } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const cache = new XbzrleCache(4096, 4096);
   * cache.setGeneration(5);
   * assert.equal(cache.generation, 5);
   * ```
   *
   * @param generation A non-negative integer.
   * @throws {RangeError} If `generation` is not a non-negative integer.
   */
  setGeneration(generation: number): void {
    if (!Number.isSafeInteger(generation) || generation < 0) {
      throw new RangeError(
        `Cannot set XbzrleCache generation as it must be a non-negative integer: received ${generation}`,
      );
    }
    this.#generation = generation;
  }

  /**
   * Looks a page up. A hit refreshes the slot's age to the current
   * generation.
   *
   * @example Usage
   * ```ts
   * import { XbzrleCache } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const cache = new XbzrleCache(8192, 4096);
   * assert.equal(cache.lookup(0), undefined);
   * cache.insert(0, new Uint8Array(4096));
   * assert.equal(cache.lookup(0)?.length, 4096);
   * ```
   *
   * @param key The page's address.
   * @returns The cache's copy of the page (a view into the cache: writes to
   * it change the cached page), or `undefined` on a miss.
   * @throws {RangeError} If `key` is not a non-negative integer.
   */
  lookup(key: number): Uint8Array | undefined {
    const slot = this.#slot(key, "look up");
    if (this.#keys[slot] !== key) return undefined;
    this.#ages[slot] = this.#generation;
    return this.#pages[slot];
  }

  /**
   * Copies `page` into the slot of `key`, unless that slot holds a different
   * page whose age + {@linkcode CACHED_PAGE_LIFETIME} is still greater than
   * the current generation. An entry for the same key is always replaced.
   *
   * @example Usage
   * ```ts
   * import { XbzrleCache } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const cache = new XbzrleCache(4096, 4096);
   * const result = cache.insert(0x5000, new Uint8Array(4096).fill(1));
   * assert.ok(result.kind === "inserted" && result.data[0] === 1);
   * ```
   *
   * @param key The page's address.
   * @param page The page bytes, `pageSize` long (copied).
   * @returns The cache's copy, or `"refused"`.
   * @throws {RangeError} If `key` is not a non-negative integer or `page`
   * has the wrong length.
   */
  insert(key: number, page: Uint8Array): XbzrleCacheInsertResult {
    const slot = this.#slot(key, "insert");
    if (page.length !== this.#pageSize) {
      throw new RangeError(
        `Cannot insert page into XbzrleCache as it must be ${this.#pageSize} bytes: received ${page.length}`,
      );
    }
    let data = this.#pages[slot];
    if (
      data !== undefined && this.#keys[slot] !== key &&
      this.#ages[slot]! + CACHED_PAGE_LIFETIME > this.#generation
    ) {
      return REFUSED;
    }
    if (data === undefined) {
      data = this.#allocatePage();
      this.#pages[slot] = data;
      this.#cachedPages++;
    }
    data.set(page);
    this.#ages[slot] = this.#generation;
    this.#keys[slot] = key;
    return { kind: "inserted", data };
  }

  /**
   * Changes the cache size, as setting `xbzrle-cache-size` during a
   * migration does: a different size replaces the cache with a new empty
   * one; the same size keeps it as it is. The generation is kept.
   *
   * @example Usage
   * ```ts
   * import { XbzrleCache } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const cache = new XbzrleCache(4096, 4096);
   * cache.insert(0, new Uint8Array(4096));
   * cache.resize(4096);
   * assert.equal(cache.cachedPages, 1);
   * cache.resize(8192);
   * assert.equal(cache.cachedPages, 0);
   * assert.equal(cache.slotCount, 2);
   * ```
   *
   * @param cacheSizeBytes The new size: a power of two, at least one page.
   * @throws {RangeError} If the size is not a power of two or smaller than
   * one page; the cache is then unchanged.
   */
  resize(cacheSizeBytes: number): void {
    if (cacheSizeBytes === this.#sizeBytes) return;
    this.#reset(cacheSizeBytes, "resize XbzrleCache");
  }

  #reset(cacheSizeBytes: number, action: string): void {
    if (!isPowerOfTwo(cacheSizeBytes) || cacheSizeBytes < this.#pageSize) {
      throw new RangeError(
        `Cannot ${action} as cacheSizeBytes must be a power of two of at least one page (${this.#pageSize} bytes): received ${cacheSizeBytes}`,
      );
    }
    const slots = cacheSizeBytes / this.#pageSize;
    this.#sizeBytes = cacheSizeBytes;
    this.#slotMask = slots - 1;
    this.#keys = new Float64Array(slots).fill(-1);
    this.#ages = new Float64Array(slots);
    this.#pages = new Array(slots);
    this.#cachedPages = 0;
    this.#slab = undefined;
    this.#slabUsed = 0;
    this.#allocatedBytes = 0;
  }

  #slot(key: number, action: string): number {
    if (!Number.isSafeInteger(key) || key < 0) {
      throw new RangeError(
        `Cannot ${action} page in XbzrleCache as key must be a non-negative integer: received ${key}`,
      );
    }
    // Math.floor(key / pageSize) is exact below 2^53; `&` keeps its low
    // 32 bits, enough for any slot count.
    return Math.floor(key / this.#pageSize) & this.#slotMask;
  }

  #allocatePage(): Uint8Array {
    const pageSize = this.#pageSize;
    if (this.#slab === undefined || this.#slabUsed === this.#slab.length) {
      const slabBytes = Math.min(
        this.#sizeBytes - this.#allocatedBytes,
        Math.max(pageSize, SLAB_BYTES),
      );
      this.#slab = new Uint8Array(slabBytes);
      this.#slabUsed = 0;
      this.#allocatedBytes += slabBytes;
    }
    const page = this.#slab.subarray(this.#slabUsed, this.#slabUsed + pageSize);
    this.#slabUsed += pageSize;
    return page;
  }
}

const SLAB_BYTES = 1024 * 1024;
const REFUSED: XbzrleCacheInsertResult = Object.freeze({ kind: "refused" });

function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 &&
    2 ** Math.round(Math.log2(value)) === value;
}
