import assert from "node:assert/strict";
import {
  CACHED_PAGE_LIFETIME,
  XbzrleCache,
} from "../../lib/ram/xbzrle_cache.ts";

const PAGE = 4096;

function page(fill: number): Uint8Array {
  return new Uint8Array(PAGE).fill(fill);
}

for (const size of [0, 3000, 4097, 12288, 4096 * 3, -4096, 1.5, NaN]) {
  Deno.test(`XbzrleCache rejects cache size ${size}`, () => {
    assert.throws(
      () => new XbzrleCache(size, PAGE),
      (error) =>
        error instanceof RangeError &&
        error.message.startsWith("Cannot construct XbzrleCache") &&
        error.message.endsWith(`received ${size}`),
    );
  });
}

Deno.test("XbzrleCache rejects a cache smaller than one page", () => {
  assert.throws(() => new XbzrleCache(2048, PAGE), /received 2048$/);
});

Deno.test("XbzrleCache rejects a page size that is not a power of two", () => {
  assert.throws(
    () => new XbzrleCache(1 << 20, 3000),
    /^RangeError: Cannot construct XbzrleCache as pageSize must be a power of two: received 3000$/,
  );
});

Deno.test("XbzrleCache has one slot per page of its size", () => {
  const cache = new XbzrleCache(64 * 1024 * 1024, PAGE);
  assert.equal(cache.slotCount, 16384);
  assert.equal(cache.sizeBytes, 64 * 1024 * 1024);
  assert.equal(cache.pageSize, PAGE);
  assert.equal(cache.cachedPages, 0);
  assert.equal(new XbzrleCache(PAGE, PAGE).slotCount, 1);
});

Deno.test("XbzrleCache.lookup() misses on an empty cache", () => {
  const cache = new XbzrleCache(8 * PAGE, PAGE);
  for (let key = 0; key < 16 * PAGE; key += PAGE) {
    assert.equal(cache.lookup(key), undefined);
  }
});

Deno.test("XbzrleCache.insert() stores a copy that lookup() returns", () => {
  const cache = new XbzrleCache(8 * PAGE, PAGE);
  const source = page(3);
  const result = cache.insert(5 * PAGE, source);
  assert.ok(result.kind === "inserted");
  assert.notEqual(result.data, source);
  source.fill(4);
  assert.deepEqual(cache.lookup(5 * PAGE), page(3));
  assert.equal(cache.lookup(5 * PAGE), result.data);
  assert.equal(cache.cachedPages, 1);
});

Deno.test("XbzrleCache maps keys to slots by page number modulo the slot count", () => {
  const cache = new XbzrleCache(8 * PAGE, PAGE);
  cache.setGeneration(10);
  cache.insert(3 * PAGE, page(1));
  // Same slot: 3 + 8 = 11, 3 + 16 = 19, and a key inside page 3.
  assert.equal(cache.insert(11 * PAGE, page(2)).kind, "refused");
  assert.equal(cache.insert(19 * PAGE, page(2)).kind, "refused");
  assert.equal(cache.lookup(3 * PAGE + 100), undefined); // keys compare exactly
  // Other slots are free.
  assert.equal(cache.insert(4 * PAGE, page(2)).kind, "inserted");
  assert.equal(cache.insert(2 * PAGE, page(2)).kind, "inserted");
  assert.equal(cache.cachedPages, 3);
});

Deno.test("XbzrleCache handles keys beyond 2^32", () => {
  const cache = new XbzrleCache(8 * PAGE, PAGE);
  const high = 2 ** 40 + 3 * PAGE;
  cache.insert(high, page(9));
  assert.deepEqual(cache.lookup(high), page(9));
  // Page 2^28 + 3 shares slot 3 with page 3.
  assert.equal(cache.insert(3 * PAGE, page(1)).kind, "refused");
});

Deno.test(`XbzrleCache keeps a different page for ${CACHED_PAGE_LIFETIME} generations`, () => {
  const cache = new XbzrleCache(PAGE, PAGE);
  cache.setGeneration(5);
  cache.insert(0, page(1));
  cache.setGeneration(6); // age 5 + 2 > 6: still fresh
  assert.equal(cache.insert(PAGE, page(2)).kind, "refused");
  cache.setGeneration(7); // age 5 + 2 = 7: stale
  assert.equal(cache.insert(PAGE, page(2)).kind, "inserted");
  assert.equal(cache.lookup(0), undefined);
  assert.deepEqual(cache.lookup(PAGE), page(2));
});

Deno.test("XbzrleCache.lookup() refreshes the age of a hit", () => {
  const cache = new XbzrleCache(PAGE, PAGE);
  cache.setGeneration(1);
  cache.insert(0, page(1));
  cache.setGeneration(2);
  assert.ok(cache.lookup(0)); // age := 2
  cache.setGeneration(3);
  assert.equal(cache.insert(PAGE, page(2)).kind, "refused"); // 2 + 2 > 3
  cache.setGeneration(4);
  assert.equal(cache.insert(PAGE, page(2)).kind, "inserted");
});

Deno.test("XbzrleCache.lookup() of a miss does not refresh the slot", () => {
  const cache = new XbzrleCache(PAGE, PAGE);
  cache.setGeneration(1);
  cache.insert(0, page(1));
  cache.setGeneration(3);
  assert.equal(cache.lookup(PAGE), undefined);
  assert.equal(cache.insert(PAGE, page(2)).kind, "inserted");
});

Deno.test("XbzrleCache.insert() always replaces an entry for the same key", () => {
  const cache = new XbzrleCache(PAGE, PAGE);
  cache.setGeneration(8);
  cache.insert(0, page(1));
  const result = cache.insert(0, page(2));
  assert.equal(result.kind, "inserted");
  assert.deepEqual(cache.lookup(0), page(2));
  assert.equal(cache.cachedPages, 1);
});

Deno.test("XbzrleCache.insert() fills an empty slot whatever the generation", () => {
  const cache = new XbzrleCache(2 * PAGE, PAGE);
  assert.equal(cache.generation, 0);
  assert.equal(cache.insert(0, page(1)).kind, "inserted");
  assert.equal(cache.insert(PAGE, page(1)).kind, "inserted");
});

Deno.test("XbzrleCache.insert() rejects a page of the wrong length", () => {
  const cache = new XbzrleCache(PAGE, PAGE);
  assert.throws(
    () => cache.insert(0, new Uint8Array(PAGE - 1)),
    /^RangeError: Cannot insert page into XbzrleCache as it must be 4096 bytes: received 4095$/,
  );
  assert.equal(cache.cachedPages, 0);
});

for (const key of [-1, 1.5, NaN, 2 ** 53]) {
  Deno.test(`XbzrleCache rejects key ${key}`, () => {
    const cache = new XbzrleCache(PAGE, PAGE);
    assert.throws(() => cache.lookup(key), RangeError);
    assert.throws(() => cache.insert(key, page(0)), RangeError);
  });
}

Deno.test("XbzrleCache.setGeneration() rejects what is not a non-negative integer", () => {
  const cache = new XbzrleCache(PAGE, PAGE);
  assert.throws(() => cache.setGeneration(-1), RangeError);
  assert.throws(() => cache.setGeneration(0.5), RangeError);
  assert.equal(cache.generation, 0);
});

Deno.test("XbzrleCache allocates page copies lazily", () => {
  const cache = new XbzrleCache(64 * 1024 * 1024, PAGE);
  assert.equal(cache.allocatedBytes, 0);
  for (let i = 0; i < 3; i++) cache.insert(i * PAGE, page(i));
  assert.ok(cache.allocatedBytes <= 1024 * 1024, `${cache.allocatedBytes}`);
  for (let i = 3; i < 300; i++) cache.insert(i * PAGE, page(i));
  assert.equal(cache.allocatedBytes, 2 * 1024 * 1024);
  for (let i = 0; i < 300; i++) {
    assert.deepEqual(cache.lookup(i * PAGE), page(i));
  }
});

Deno.test("XbzrleCache never allocates more than its size", () => {
  const cache = new XbzrleCache(4 * PAGE, PAGE);
  for (let i = 0; i < 4; i++) cache.insert(i * PAGE, page(i));
  assert.equal(cache.allocatedBytes, 4 * PAGE);
  cache.setGeneration(10);
  for (let i = 4; i < 8; i++) cache.insert(i * PAGE, page(i)); // replaces
  assert.equal(cache.allocatedBytes, 4 * PAGE);
  assert.equal(cache.cachedPages, 4);
});

Deno.test("XbzrleCache page copies are 8-byte aligned for word-wise comparison", () => {
  const cache = new XbzrleCache(1 << 20, PAGE);
  for (let i = 0; i < 5; i++) {
    const result = cache.insert(i * PAGE, page(i));
    assert.ok(result.kind === "inserted" && result.data.byteOffset % 8 === 0);
  }
});

Deno.test("XbzrleCache.resize() to a new size empties the cache", () => {
  const cache = new XbzrleCache(4 * PAGE, PAGE);
  cache.setGeneration(3);
  cache.insert(0, page(1));
  cache.resize(8 * PAGE);
  assert.equal(cache.slotCount, 8);
  assert.equal(cache.sizeBytes, 8 * PAGE);
  assert.equal(cache.cachedPages, 0);
  assert.equal(cache.allocatedBytes, 0);
  assert.equal(cache.lookup(0), undefined);
  assert.equal(cache.generation, 3);
});

Deno.test("XbzrleCache.resize() to the same size keeps the cache", () => {
  const cache = new XbzrleCache(4 * PAGE, PAGE);
  cache.insert(0, page(1));
  cache.resize(4 * PAGE);
  assert.deepEqual(cache.lookup(0), page(1));
});

Deno.test("XbzrleCache.resize() rejects a bad size and keeps the cache", () => {
  const cache = new XbzrleCache(4 * PAGE, PAGE);
  cache.insert(0, page(1));
  assert.throws(
    () => cache.resize(5 * PAGE),
    /^RangeError: Cannot resize XbzrleCache as cacheSizeBytes must be a power of two of at least one page \(4096 bytes\): received 20480$/,
  );
  assert.deepEqual(cache.lookup(0), page(1));
  assert.equal(cache.slotCount, 4);
});
