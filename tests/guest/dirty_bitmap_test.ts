import assert from "node:assert/strict";
import { DirtyBitmap } from "../../mod.ts";
import { createPrng } from "../_helpers/prng.ts";

/** A naive oracle: a Set of indices. */
function check(bitmap: DirtyBitmap, oracle: Set<number>): void {
  assert.equal(bitmap.count(), oracle.size);
  const found: number[] = [];
  for (let i = bitmap.nextSet(0); i !== undefined; i = bitmap.nextSet(i + 1)) {
    found.push(i);
  }
  assert.deepEqual(found, [...oracle].sort((a, b) => a - b));
}

Deno.test("DirtyBitmap agrees with a naive set on random operations", () => {
  const prng = createPrng(17);
  for (const size of [1, 31, 32, 33, 100, 1000]) {
    const bitmap = new DirtyBitmap(size);
    const oracle = new Set<number>();
    for (let step = 0; step < 2000; step++) {
      const i = prng.nextInt(size);
      switch (prng.nextInt(5)) {
        case 0:
          bitmap.set(i);
          oracle.add(i);
          break;
        case 1:
          bitmap.clear(i);
          oracle.delete(i);
          break;
        case 2:
          assert.equal(bitmap.testAndClear(i), oracle.delete(i));
          break;
        case 3: {
          const count = prng.nextInt(size - i + 1);
          bitmap.setRange(i, count);
          for (let j = i; j < i + count; j++) oracle.add(j);
          break;
        }
        default: {
          const count = prng.nextInt(size - i + 1);
          bitmap.clearRange(i, count);
          for (let j = i; j < i + count; j++) oracle.delete(j);
        }
      }
      assert.equal(bitmap.test(i), oracle.has(i));
    }
    check(bitmap, oracle);
  }
});

Deno.test("DirtyBitmap setAll() sets exactly size bits", () => {
  for (const size of [0, 5, 32, 70]) {
    const bitmap = new DirtyBitmap(size);
    bitmap.setAll();
    assert.equal(bitmap.count(), size);
    assert.equal(bitmap.nextSet(size), undefined);
  }
});

Deno.test("DirtyBitmap take() hands over the bits and clears", () => {
  const bitmap = new DirtyBitmap(64);
  bitmap.set(3);
  bitmap.set(63);
  const taken = bitmap.take();
  assert.equal(bitmap.count(), 0);
  assert.deepEqual([taken.nextSet(0), taken.nextSet(4)], [3, 63]);
});

Deno.test("DirtyBitmap or() and andNot() combine bitmaps of one size", () => {
  const a = new DirtyBitmap(40);
  const b = new DirtyBitmap(40);
  a.set(1);
  b.set(2);
  b.set(1);
  a.or(b);
  assert.equal(a.count(), 2);
  a.andNot(b);
  assert.equal(a.count(), 0);
  assert.throws(() => a.or(new DirtyBitmap(41)), RangeError);
});
