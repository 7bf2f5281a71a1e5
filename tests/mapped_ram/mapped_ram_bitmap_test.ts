import assert from "node:assert/strict";
import { MappedRamBitmap } from "../../mod.ts";
import { createPrng } from "../_helpers/prng.ts";

Deno.test("MappedRamBitmap puts bit i at bit i % 8 of byte i / 8", () => {
  const bitmap = new MappedRamBitmap(130);
  for (const index of [0, 7, 8, 63, 64, 129]) bitmap.set(index);
  // Byte order of little-endian 64-bit words, written raw.
  assert.deepEqual(
    bitmap.bytes,
    new Uint8Array([
      0x81,
      0x01,
      0,
      0,
      0,
      0,
      0,
      0x80,
      0x01,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0x02,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
    ]),
  );
});

Deno.test("MappedRamBitmap reads a stored bitmap in place", () => {
  const bytes = new Uint8Array(8);
  const bitmap = new MappedRamBitmap(10, bytes);
  bitmap.set(9);
  assert.equal(bytes[1], 0b10);
  assert.ok(bitmap.has(9));
  assert.ok(!bitmap.has(8));
  assert.throws(() => new MappedRamBitmap(65, new Uint8Array(8)), RangeError);
});

Deno.test("MappedRamBitmap rejects indices outside its pages", () => {
  const bitmap = new MappedRamBitmap(10);
  assert.throws(() => bitmap.set(10), RangeError);
  assert.throws(() => bitmap.has(-1), RangeError);
  assert.throws(() => bitmap.clear(1.5), RangeError);
});

Deno.test("MappedRamBitmap runs() and count() ignore padding bits", () => {
  const bytes = new Uint8Array(8).fill(0xff);
  const bitmap = new MappedRamBitmap(10, bytes);
  assert.deepEqual([...bitmap.runs()], [[0, 10]]);
  assert.equal(bitmap.count(), 10);
  assert.equal(bitmap.firstPaddingBit(), 10);
  bytes.fill(0);
  bytes[7] = 0x80;
  assert.deepEqual([...bitmap.runs()], []);
  assert.equal(bitmap.firstPaddingBit(), 63);
  bytes[7] = 0;
  assert.equal(bitmap.firstPaddingBit(), undefined);
});

Deno.test("MappedRamBitmap runs() agree with a bit-by-bit scan", () => {
  const prng = createPrng(7);
  for (let round = 0; round < 300; round++) {
    const pages = 1 + prng.nextInt(300);
    const bitmap = new MappedRamBitmap(pages);
    const density = prng.nextInt(4);
    const expected: boolean[] = [];
    for (let i = 0; i < pages; i++) {
      const set = density === 0
        ? prng.nextInt(10) === 0
        : density === 3
        ? prng.nextInt(10) !== 0
        : prng.nextInt(2) === 0;
      expected.push(set);
      if (set) bitmap.set(i);
    }
    const fromRuns = new Array<boolean>(pages).fill(false);
    let previousEnd = -1;
    for (const [start, end] of bitmap.runs()) {
      assert.ok(start > previousEnd, "runs are ascending and separated");
      assert.ok(end > start && end <= pages);
      for (let i = start; i < end; i++) fromRuns[i] = true;
      previousEnd = end;
    }
    assert.deepEqual(fromRuns, expected);
    assert.equal(bitmap.count(), expected.filter(Boolean).length);
  }
});
