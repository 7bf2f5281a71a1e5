import assert from "node:assert/strict";
import { decodeXbzrle } from "../../lib/ram/xbzrle.ts";
import { XbzrleCache } from "../../lib/ram/xbzrle_cache.ts";
import { XbzrlePageEncoder } from "../../lib/ram/xbzrle_page_encoder.ts";

const PAGE = 4096;

function setup(cacheBytes = 16 * PAGE) {
  const cache = new XbzrleCache(cacheBytes, PAGE);
  const encoder = new XbzrlePageEncoder({ cache, pageSize: PAGE });
  encoder.setGeneration(2);
  return { cache, encoder };
}

function filled(value: number): Uint8Array {
  return new Uint8Array(PAGE).fill(value);
}

/** Every other byte changed: always overflows. */
function scrambled(base: Uint8Array): Uint8Array {
  const next = base.slice();
  for (let i = 0; i < PAGE; i += 2) next[i] = base[i]! ^ 0xff;
  return next;
}

function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

Deno.test("XbzrlePageEncoder on a miss caches the page and sends it from the cache copy", () => {
  const { cache, encoder } = setup();
  const current = filled(1);
  const result = encoder.encodePage(PAGE, current);
  assert.ok(result.kind === "page");
  assert.equal(result.reason, "cache-miss");
  assert.notEqual(result.data, current);
  assert.equal(result.data, cache.lookup(PAGE));
  assert.deepEqual(result.data, current);
  assert.equal(encoder.stats()["cache-miss"], 1);
  assert.equal(encoder.stats().pages, 0);
});

Deno.test("XbzrlePageEncoder on a refused miss sends the page from current", () => {
  const { cache, encoder } = setup(PAGE); // one slot
  encoder.encodePage(0, filled(1)); // fills the slot at generation 2
  const current = filled(2);
  const result = encoder.encodePage(PAGE, current); // same slot, still fresh
  assert.deepEqual(result, {
    kind: "page",
    data: current,
    reason: "cache-miss",
  });
  assert.equal(result.kind === "page" && result.data, current);
  assert.deepEqual(cache.lookup(0), filled(1));
  assert.equal(encoder.stats()["cache-miss"], 2);
});

Deno.test("XbzrlePageEncoder on an unchanged hit skips the page and counts it", () => {
  const { cache, encoder } = setup();
  encoder.encodePage(0, filled(1));
  const before = cache.lookup(0)!.slice();
  assert.deepEqual(encoder.encodePage(0, filled(1)), { kind: "skip" });
  assert.deepEqual(cache.lookup(0), before);
  const stats = encoder.stats();
  assert.equal(stats.pages, 1);
  assert.equal(stats.bytes, 0);
  assert.equal(stats["cache-miss"], 1);
});

Deno.test("XbzrlePageEncoder on a changed hit sends a delta and updates the cache", () => {
  const { cache, encoder } = setup();
  const old = filled(1);
  encoder.encodePage(0, old);
  const current = old.slice();
  current[0x10] = 0xaa;
  current[0x20] = 0xbb;
  current[0x21] = 0xcc;
  const result = encoder.encodePage(0, current, { blockNameBytes: 7 });
  assert.deepEqual(result, {
    kind: "xbzrle",
    delta: new Uint8Array([0x10, 0x01, 0xaa, 0x0f, 0x02, 0xbb, 0xcc]),
  });
  assert.deepEqual(cache.lookup(0), current);
  // record size - 8 = name bytes (7) + encoding byte + be16 len + 7 delta bytes
  assert.equal(encoder.stats().bytes, 7 + 1 + 2 + 7);
  assert.equal(encoder.stats().pages, 1);
});

Deno.test("XbzrlePageEncoder returns deltas the caller owns", () => {
  const { encoder } = setup();
  const page = filled(0x10);
  encoder.encodePage(0, page);
  page[7] = 0x11;
  const first = encoder.encodePage(0, page);
  page[7] = 0x12;
  const second = encoder.encodePage(0, page);
  assert.ok(first.kind === "xbzrle" && second.kind === "xbzrle");
  assert.notEqual(first.delta.buffer, second.delta.buffer);
  assert.deepEqual(first.delta, new Uint8Array([0x07, 0x01, 0x11]));
  assert.deepEqual(second.delta, new Uint8Array([0x07, 0x01, 0x12]));
});

Deno.test("XbzrlePageEncoder on an overflowing hit sends the page from the updated cache copy", () => {
  const { cache, encoder } = setup();
  const old = filled(1);
  encoder.encodePage(0, old);
  const current = scrambled(old);
  const result = encoder.encodePage(0, current);
  assert.ok(result.kind === "page");
  assert.equal(result.reason, "overflow");
  assert.equal(result.data, cache.lookup(0));
  assert.deepEqual(result.data, current);
  const stats = encoder.stats();
  assert.equal(stats.overflow, 1);
  assert.equal(stats.bytes, PAGE);
  assert.equal(stats.pages, 1);
});

Deno.test("XbzrlePageEncoder in the final pass does not cache a miss", () => {
  const { cache, encoder } = setup();
  const current = filled(4);
  const result = encoder.encodePage(0, current, { finalPass: true });
  assert.deepEqual(result, {
    kind: "page",
    data: current,
    reason: "cache-miss",
  });
  assert.equal(result.kind === "page" && result.data, current);
  assert.equal(cache.lookup(0), undefined);
  assert.equal(cache.cachedPages, 0);
  assert.equal(encoder.stats()["cache-miss"], 1);
});

Deno.test("XbzrlePageEncoder in the final pass does not update the cache on a delta", () => {
  const { cache, encoder } = setup();
  encoder.encodePage(0, filled(1));
  const current = filled(1);
  current[5] = 9;
  const result = encoder.encodePage(0, current, { finalPass: true });
  assert.equal(result.kind, "xbzrle");
  assert.deepEqual(cache.lookup(0), filled(1));
});

Deno.test("XbzrlePageEncoder in the final pass sends an overflow from current", () => {
  const { cache, encoder } = setup();
  encoder.encodePage(0, filled(1));
  const current = scrambled(filled(1));
  const result = encoder.encodePage(0, current, { finalPass: true });
  assert.deepEqual(result, { kind: "page", data: current, reason: "overflow" });
  assert.equal(result.kind === "page" && result.data, current);
  assert.deepEqual(cache.lookup(0), filled(1));
  assert.equal(encoder.stats().overflow, 1);
});

Deno.test("XbzrlePageEncoder.zeroPage() replaces the entry with zeros", () => {
  const { cache, encoder } = setup();
  encoder.encodePage(0, filled(5));
  encoder.zeroPage(0);
  assert.deepEqual(cache.lookup(0), new Uint8Array(PAGE));
  // A small write to the zeroed page now goes out as a delta against zeros.
  const current = new Uint8Array(PAGE);
  current[0xfff] = 0x5a;
  assert.deepEqual(encoder.encodePage(0, current), {
    kind: "xbzrle",
    delta: new Uint8Array([0xff, 0x1f, 0x01, 0x5a]),
  });
});

Deno.test("XbzrlePageEncoder.zeroPage() caches a page that was not cached", () => {
  const { cache, encoder } = setup();
  encoder.zeroPage(3 * PAGE);
  assert.deepEqual(cache.lookup(3 * PAGE), new Uint8Array(PAGE));
  assert.equal(encoder.stats()["cache-miss"], 0);
});

Deno.test("XbzrlePageEncoder.zeroPage() leaves a fresh entry for another page", () => {
  const { cache, encoder } = setup(PAGE);
  encoder.encodePage(0, filled(5));
  encoder.zeroPage(PAGE);
  assert.deepEqual(cache.lookup(0), filled(5));
  assert.equal(cache.lookup(PAGE), undefined);
});

Deno.test("XbzrlePageEncoder.setGeneration() ages the cache", () => {
  const { cache, encoder } = setup(PAGE);
  encoder.encodePage(0, filled(1)); // generation 2
  encoder.setGeneration(4);
  assert.equal(cache.generation, 4);
  const result = encoder.encodePage(PAGE, filled(2));
  assert.ok(result.kind === "page" && result.data === cache.lookup(PAGE));
});

Deno.test("XbzrlePageEncoder misses after the cache is resized", () => {
  const { cache, encoder } = setup();
  encoder.encodePage(0, filled(1));
  cache.resize(32 * PAGE);
  assert.equal(encoder.encodePage(0, filled(1)).kind, "page");
  assert.equal(encoder.stats()["cache-miss"], 2);
  assert.equal(encoder.stats()["cache-size"], 32 * PAGE);
});

Deno.test("XbzrlePageEncoder.stats() has exactly QEMU's xbzrle-cache keys", () => {
  const { encoder } = setup();
  assert.deepEqual(Object.keys(encoder.stats()).sort(), [
    "bytes",
    "cache-miss",
    "cache-miss-rate",
    "cache-size",
    "encoding-rate",
    "overflow",
    "pages",
  ]);
  assert.deepEqual(encoder.stats(), {
    "cache-size": 16 * PAGE,
    bytes: 0,
    pages: 0,
    "cache-miss": 0,
    "cache-miss-rate": 0,
    "encoding-rate": 0,
    overflow: 0,
  });
});

Deno.test("XbzrlePageEncoder.closeRatePeriod() computes the rates over the period", () => {
  const { encoder } = setup();
  for (let i = 0; i < 4; i++) encoder.encodePage(i * PAGE, filled(i + 1)); // 4 misses
  const next = filled(1);
  next[0x123] = 0x8a;
  encoder.encodePage(0, next); // hit: 4-byte delta, 7 bytes
  encoder.encodePage(PAGE, filled(2)); // hit, unchanged
  encoder.closeRatePeriod(5); // 4 pages + 1 xbzrle sent; the skip is not sent
  assert.equal(encoder.stats()["cache-miss-rate"], 4 / 5);
  assert.equal(encoder.stats()["encoding-rate"], 2 * PAGE / 7);

  // Next period: one hit that overflows, one miss.
  encoder.encodePage(2 * PAGE, scrambled(filled(3)));
  encoder.encodePage(9 * PAGE, filled(9));
  encoder.closeRatePeriod(2);
  assert.equal(encoder.stats()["cache-miss-rate"], 1 / 2);
  assert.equal(encoder.stats()["encoding-rate"], 1);
});

Deno.test("XbzrlePageEncoder.closeRatePeriod() gives an encoding rate of 0 without hits", () => {
  const { encoder } = setup();
  encoder.encodePage(0, filled(1));
  encoder.closeRatePeriod(1);
  assert.equal(encoder.stats()["encoding-rate"], 0);
  assert.equal(encoder.stats()["cache-miss-rate"], 1);
});

Deno.test("XbzrlePageEncoder.closeRatePeriod() gives an encoding rate of 0 when hits sent no byte", () => {
  const { encoder } = setup();
  encoder.encodePage(0, filled(1));
  encoder.closeRatePeriod(1);
  encoder.encodePage(0, filled(1)); // unchanged hit
  encoder.encodePage(PAGE, filled(1)); // miss
  encoder.closeRatePeriod(1);
  assert.equal(encoder.stats()["encoding-rate"], 0);
});

Deno.test("XbzrlePageEncoder.closeRatePeriod(0) keeps the rates and extends the period", () => {
  const { encoder } = setup();
  encoder.encodePage(0, filled(1));
  encoder.closeRatePeriod(2);
  assert.equal(encoder.stats()["cache-miss-rate"], 0.5);
  encoder.encodePage(PAGE, filled(1));
  encoder.closeRatePeriod(0);
  assert.equal(encoder.stats()["cache-miss-rate"], 0.5);
  encoder.encodePage(2 * PAGE, filled(1));
  encoder.closeRatePeriod(4); // two misses since the last real close
  assert.equal(encoder.stats()["cache-miss-rate"], 0.5);
});

Deno.test("XbzrlePageEncoder.closeRatePeriod() rejects a bad page count", () => {
  const { encoder } = setup();
  assert.throws(() => encoder.closeRatePeriod(-1), RangeError);
  assert.throws(() => encoder.closeRatePeriod(1.5), RangeError);
});

Deno.test("XbzrlePageEncoder rejects a page size other than the cache's", () => {
  assert.throws(
    () =>
      new XbzrlePageEncoder({
        cache: new XbzrleCache(1 << 20, PAGE),
        pageSize: 8192,
      }),
    /^RangeError: Cannot construct XbzrlePageEncoder as pageSize must equal the cache's \(4096\): received 8192$/,
  );
});

Deno.test("XbzrlePageEncoder rejects a page of the wrong length", () => {
  const { encoder } = setup();
  assert.throws(() => encoder.encodePage(0, new Uint8Array(100)), RangeError);
  assert.equal(encoder.stats()["cache-miss"], 0);
});

Deno.test("XbzrlePageEncoder keeps the destination equal to the source over random passes", () => {
  // A source guest, a destination that applies what the encoder says, and
  // a cache smaller than RAM so that inserts are refused and slots recycled.
  const random = mulberry32(42);
  const pages = 24;
  const source = Array.from({ length: pages }, () => new Uint8Array(PAGE));
  const destination = Array.from({ length: pages }, () => new Uint8Array(PAGE));
  const { encoder } = setup(8 * PAGE);
  const counts = { skip: 0, xbzrle: 0, page: 0, zero: 0 };

  for (let pass = 0; pass < 40; pass++) {
    encoder.setGeneration(pass + 1);
    const finalPass = pass === 39;
    const dirty = new Set<number>();
    for (let w = 0; w < 30; w++) {
      const index = random() % pages;
      const page = source[index]!;
      dirty.add(index);
      switch (random() % 4) {
        case 0: // a few bytes
          for (let b = 0; b < 1 + random() % 8; b++) {
            page[random() % PAGE] = random() & 0xff;
          }
          break;
        case 1: // a range
          page.fill(random() & 0xff, random() % PAGE, random() % PAGE);
          break;
        case 2: // rewrite with the same bytes
          break;
        default: // everything (overflow) or nothing (zero page)
          if (random() % 2) {
            for (let b = 0; b < PAGE; b++) page[b] = random() & 0xff;
          } else page.fill(0);
      }
    }
    for (const index of dirty) {
      const snapshot = source[index]!.slice();
      const key = index * PAGE;
      if (snapshot.every((byte) => byte === 0)) {
        destination[index]!.fill(0);
        encoder.zeroPage(key);
        counts.zero++;
        continue;
      }
      const result = encoder.encodePage(key, snapshot, { finalPass });
      counts[result.kind]++;
      if (result.kind === "page") destination[index]!.set(result.data);
      else if (result.kind === "xbzrle") {
        decodeXbzrle(result.delta, destination[index]!);
      }
    }
    for (let index = 0; index < pages; index++) {
      assert.deepEqual(
        destination[index],
        source[index],
        `pass ${pass}, page ${index}`,
      );
    }
  }
  assert.ok(
    counts.skip > 0 && counts.xbzrle > 0 && counts.page > 0 && counts.zero > 0,
    JSON.stringify(counts),
  );
  const stats = encoder.stats();
  assert.ok(
    stats.overflow > 0 && stats["cache-miss"] > 0,
    JSON.stringify(stats),
  );
});
