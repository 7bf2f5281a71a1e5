import assert from "node:assert/strict";
import {
  layoutMappedRamBlock,
  MAPPED_RAM_FILE_OFFSET_ALIGNMENT,
  MAPPED_RAM_HEADER_SIZE,
  mappedRamBitmapSize,
} from "../../mod.ts";

Deno.test("layoutMappedRamBlock() places the spec's 32 MiB example block", () => {
  const layout = layoutMappedRamBlock(0x50, 32 << 20);
  assert.deepEqual(layout, {
    header: {
      version: 1,
      pageSize: 4096,
      bitmapOffset: 0x6c,
      pagesOffset: 0x100000,
    },
    headerOffset: 0x50,
    pageCount: 8192,
    bitmapSize: 1024,
    end: 0x2100000,
  });
});

const LAYOUT_CASES: [string, number, number, number, number, number][] = [
  // name, headerOffset, usedLength, pageSize, expected pagesOffset, expected bitmapSize
  ["one page", 0, 4096, 4096, 0x100000, 8],
  ["64 pages fill one word", 0, 64 * 4096, 4096, 0x100000, 8],
  ["65 pages need two words", 0, 65 * 4096, 4096, 0x100000, 16],
  [
    "bitmap ending exactly on 1 MiB",
    0x100000 - 28 - 8,
    4096,
    4096,
    0x100000,
    8,
  ],
  [
    "bitmap ending one byte past 1 MiB",
    0x100000 - 28 - 7,
    4096,
    4096,
    0x200000,
    8,
  ],
  [
    "header of a second block at 0x2100000",
    0x2100000 + 10,
    128 << 10,
    4096,
    0x2200000,
    8,
  ],
  ["a 16 GiB block", 0x60, 16 * 2 ** 30, 4096, 0x100000, 512 * 1024],
  [
    "8 MiB bitmap (256 GiB) spans 1 MiB boundaries",
    0x60,
    256 * 2 ** 30,
    4096,
    0x900000,
    8 * 1024 * 1024,
  ],
  ["64 KiB pages", 0x40, 1 << 20, 65536, 0x100000, 8],
];

for (
  const [name, headerOffset, usedLength, pageSize, pagesOffset, bitmapSize]
    of LAYOUT_CASES
) {
  Deno.test(`layoutMappedRamBlock() for ${name}`, () => {
    const layout = layoutMappedRamBlock(headerOffset, usedLength, { pageSize });
    assert.equal(
      layout.header.bitmapOffset,
      headerOffset + MAPPED_RAM_HEADER_SIZE,
    );
    assert.equal(layout.bitmapSize, bitmapSize);
    assert.equal(layout.header.pagesOffset, pagesOffset);
    assert.equal(layout.end, pagesOffset + usedLength);
    assert.equal(
      layout.header.pagesOffset % MAPPED_RAM_FILE_OFFSET_ALIGNMENT,
      0,
    );
  });
}

Deno.test("layoutMappedRamBlock() honours a smaller alignment", () => {
  const layout = layoutMappedRamBlock(100, 8192, { alignment: 4096 });
  assert.equal(layout.header.pagesOffset, 4096);
  assert.equal(layout.end, 4096 + 8192);
});

Deno.test("layoutMappedRamBlock() rejects bad arguments", () => {
  assert.throws(() => layoutMappedRamBlock(0, 4095), RangeError);
  assert.throws(() => layoutMappedRamBlock(0, 0), RangeError);
  assert.throws(() => layoutMappedRamBlock(-1, 4096), RangeError);
  assert.throws(
    () => layoutMappedRamBlock(0, 4096, { pageSize: 3000 }),
    RangeError,
  );
  assert.throws(
    () => layoutMappedRamBlock(0, 4096, { alignment: 6000 }),
    RangeError,
  );
  assert.throws(() => layoutMappedRamBlock(0, 2 ** 53 - 4096), RangeError);
});

Deno.test("mappedRamBitmapSize() rounds up to 8-byte words", () => {
  assert.deepEqual(
    [0, 1, 63, 64, 65, 128, 129, 8192].map(mappedRamBitmapSize),
    [0, 8, 8, 8, 16, 16, 24, 1024],
  );
  assert.throws(() => mappedRamBitmapSize(-1), RangeError);
  assert.throws(() => mappedRamBitmapSize(1.5), RangeError);
});
