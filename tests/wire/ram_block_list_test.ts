import assert from "node:assert/strict";
import {
  ByteWriter,
  decodeRamBlockEntry,
  type DecodeRamBlockEntryOptions,
  decodeRamBlockListTotal,
  encodeRamBlockEntry,
  encodeRamBlockList,
  MAPPED_RAM_HEADER_SIZE,
  MAX_RAM_BLOCK_ENTRY_SIZE,
  ramBlockEntrySize,
  type RamBlockInfo,
  type RamBlockListFormat,
  StreamFormatError,
  UnexpectedEndOfStreamError,
} from "../../mod.ts";
import { CHUNKINGS, chunks } from "../_helpers/chunking.ts";

const PAGE = 4096;

function encodeList(blocks: readonly RamBlockInfo[]): Uint8Array {
  const writer = new ByteWriter();
  encodeRamBlockList(blocks, writer);
  return writer.takeBytes();
}

/**
 * Decodes a list the way a stream decoder does: the bytes arrive in
 * `pieces`, and each step either decodes an entry or asks for more.
 */
function decodeList(
  pieces: readonly Uint8Array[],
  format: RamBlockListFormat,
): { total: number; blocks: RamBlockInfo[]; steps: number } {
  let buffer = new Uint8Array(0);
  let start = 0; // stream offset of buffer[0]
  let next = 0;
  const more = (): boolean => {
    const piece = pieces[next++];
    if (piece === undefined) return false;
    const grown = new Uint8Array(buffer.byteLength + piece.byteLength);
    grown.set(buffer);
    grown.set(piece, buffer.byteLength);
    buffer = grown;
    return true;
  };
  while (buffer.byteLength < 8) assert.ok(more(), "the word");
  const total = decodeRamBlockListTotal(buffer, format);
  buffer = buffer.subarray(8);
  start = 8;
  const blocks: RamBlockInfo[] = [];
  let sum = 0;
  let steps = 0;
  let ended = false;
  while (sum < total) {
    steps++;
    const step = decodeRamBlockEntry(buffer, {
      ...format,
      total,
      previous: blocks,
      offset: start,
      ended,
    });
    if (step.type === "need") {
      assert.ok(step.bytes > buffer.byteLength, "asks for bytes it lacks");
      while (buffer.byteLength < step.bytes && !ended) ended = !more();
      continue;
    }
    blocks.push(step.block);
    sum += step.block.usedLength;
    buffer = buffer.subarray(step.size);
    start += step.size;
  }
  assert.equal(buffer.byteLength + pieces.slice(next).length, 0);
  return { total, blocks, steps };
}

const HEADER = {
  version: 1,
  pageSize: PAGE,
  bitmapOffset: 0x60,
  pagesOffset: 0x100000,
};

const LISTS: [string, RamBlockListFormat, RamBlockInfo[]][] = [
  ["a plain list", {}, [
    { idstr: "pc.ram", usedLength: 64 * PAGE },
    { idstr: "/rom@etc/acpi/tables", usedLength: 32 * PAGE },
  ]],
  ["x-ignore-shared guest addresses", { ignoreShared: true }, [
    { idstr: "pc.ram", usedLength: 64 * PAGE, gpa: 0n },
    { idstr: "pc.bios", usedLength: 32 * PAGE, gpa: 0xfffe0000n },
  ]],
  ["a huge-page block among small ones", {
    pageSizeSummary: PAGE | (2 << 20),
  }, [
    { idstr: "pc.ram", usedLength: 512 * PAGE, pageSize: 2 << 20 },
    { idstr: "pc.bios", usedLength: 32 * PAGE },
  ]],
  ["mapped-ram headers", { mappedRam: true }, [
    { idstr: "pc.ram", usedLength: 64 * PAGE, mappedRam: HEADER },
  ]],
  ["every extra at once", {
    ignoreShared: true,
    mappedRam: true,
    pageSizeSummary: PAGE | (2 << 20),
  }, [
    {
      idstr: "a".repeat(255),
      usedLength: 512 * PAGE,
      pageSize: 2 << 20,
      gpa: 2n ** 64n - 1n,
      mappedRam: { ...HEADER, bitmapOffset: 0x200 },
    },
  ]],
];

for (const [name, format, blocks] of LISTS) {
  for (const chunking of CHUNKINGS) {
    Deno.test(`decodeRamBlockEntry() round-trips ${name} (${chunking} chunks)`, () => {
      const bytes = encodeList(blocks);
      const decoded = decodeList(chunks(bytes, chunking, 3, 16), format);
      assert.deepEqual(decoded.blocks, blocks);
      assert.equal(
        decoded.total,
        blocks.reduce((sum, block) => sum + block.usedLength, 0),
      );
    });
  }
  Deno.test(`ramBlockEntrySize() measures ${name}`, () => {
    for (const block of blocks) {
      const writer = new ByteWriter();
      encodeRamBlockEntry(block, writer);
      assert.equal(ramBlockEntrySize(block), writer.length);
      assert.ok(writer.length <= MAX_RAM_BLOCK_ENTRY_SIZE);
    }
  });
}

Deno.test("encodeRamBlockList() writes the bytes QEMU writes", () => {
  // QEMU 7.2, one 32 MiB pc.ram and a 128 KiB pc.bios (ram.md §3).
  const bytes = encodeList([
    { idstr: "pc.ram", usedLength: 0x2000000 },
    { idstr: "pc.bios", usedLength: 0x20000 },
  ]);
  assert.deepEqual(
    [...bytes],
    [
      ...[0, 0, 0, 0, 0x02, 0x02, 0x00, 0x04],
      ...[6, 0x70, 0x63, 0x2e, 0x72, 0x61, 0x6d],
      ...[0, 0, 0, 0, 0x02, 0, 0, 0],
      ...[7, 0x70, 0x63, 0x2e, 0x62, 0x69, 0x6f, 0x73],
      ...[0, 0, 0, 0, 0, 0x02, 0, 0],
    ],
  );
});

Deno.test("decodeRamBlockEntry() reads a mapped-ram entry byte for byte", () => {
  const bytes = new Uint8Array([
    ...[1, 0x61], // "a"
    ...[0, 0, 0, 0, 0, 0, 0x10, 0], // 4096
    ...[0, 0, 0, 1], // version 1
    ...[0, 0, 0, 0, 0, 0, 0x10, 0], // page size 4096
    ...[0, 0, 0, 0, 0, 0, 0, 0x2a], // bitmap at 42 = right after the header
    ...[0, 0, 0, 0, 0, 0, 0x20, 0], // pages at 8192
  ]);
  assert.deepEqual(
    decodeRamBlockEntry(bytes, { total: PAGE, mappedRam: true, offset: 4 }),
    {
      type: "entry",
      block: {
        idstr: "a",
        usedLength: PAGE,
        mappedRam: {
          version: 1,
          pageSize: PAGE,
          bitmapOffset: 42,
          pagesOffset: 8192,
        },
      },
      size: 2 + 8 + MAPPED_RAM_HEADER_SIZE,
    },
  );
});

Deno.test("decodeRamBlockEntry() takes no page size where the be64 is not one", () => {
  // The summary says some block is on 2 MiB pages, but pc.ram is not: the
  // be64 after its length starts the next entry ("\x07pc.bios…").
  const bytes = encodeList([
    { idstr: "pc.ram", usedLength: 64 * PAGE },
    { idstr: "pc.bios", usedLength: 32 * PAGE },
  ]);
  const { blocks } = decodeList([bytes], {
    pageSizeSummary: PAGE | (2 << 20),
  });
  assert.deepEqual(blocks, [
    { idstr: "pc.ram", usedLength: 64 * PAGE },
    { idstr: "pc.bios", usedLength: 32 * PAGE },
  ]);
});

Deno.test("decodeRamBlockEntry() asks for the bytes of the next field only", () => {
  const bytes = encodeList([{ idstr: "pc.ram", usedLength: PAGE, gpa: 7n }])
    .subarray(8);
  const options = { total: PAGE, ignoreShared: true };
  const needs = [0, 1, 7, 15].map((size) =>
    decodeRamBlockEntry(bytes.subarray(0, size), options)
  );
  assert.deepEqual(needs, [
    { type: "need", bytes: 1 },
    { type: "need", bytes: 7 },
    { type: "need", bytes: 15 },
    { type: "need", bytes: 23 },
  ]);
});

const entry = (blocks: RamBlockInfo[]) => encodeList(blocks).subarray(8);

/** [name, entry bytes, options, error class, offset, message pattern] */
const BAD: [
  string,
  Uint8Array,
  DecodeRamBlockEntryOptions,
  abstract new (...args: never[]) => StreamFormatError,
  number,
  RegExp,
][] = [
  [
    "an empty name",
    entry([{ idstr: "", usedLength: PAGE }]),
    { total: PAGE },
    StreamFormatError,
    100,
    /^Cannot decode block list at offset 100: a block name is empty$/,
  ],
  [
    "a name listed twice",
    entry([{ idstr: "a", usedLength: PAGE }]),
    { total: 2 * PAGE, previous: [{ idstr: "a", usedLength: PAGE }] },
    StreamFormatError,
    100,
    /block "a" is listed twice/,
  ],
  [
    "a length that is not a multiple of the page size",
    entry([{ idstr: "a", usedLength: PAGE + 1 }]),
    { total: 2 * PAGE },
    StreamFormatError,
    102,
    /block "a" length 4097 is not a positive multiple of the page size 4096/,
  ],
  [
    "a zero length",
    entry([{ idstr: "a", usedLength: 0 }]),
    { total: PAGE },
    StreamFormatError,
    102,
    /not a positive multiple/,
  ],
  [
    "lengths past the total",
    entry([{ idstr: "b", usedLength: PAGE }]),
    { total: PAGE, previous: [{ idstr: "a", usedLength: PAGE }] },
    StreamFormatError,
    102,
    /brings the lengths to 8192, past the announced total 4096/,
  ],
  [
    "a length past 2^53",
    new Uint8Array([1, 0x61, 0x00, 0x20, 0, 0, 0, 0, 0, 0]),
    { total: PAGE },
    StreamFormatError,
    102,
    /the length of block "a" 0x20000000000000 exceeds 2\^53/,
  ],
  [
    "a name cut short",
    new Uint8Array([6, 0x70, 0x63]),
    { total: PAGE, ended: true },
    UnexpectedEndOfStreamError,
    100,
    /a RAM block name .* received 3 of 7 bytes/,
  ],
  [
    "a guest address cut short",
    entry([{ idstr: "a", usedLength: PAGE }]),
    { total: PAGE, ignoreShared: true, ended: true },
    UnexpectedEndOfStreamError,
    110,
    /the guest address of block "a"/,
  ],
  [
    "a mapped-ram header cut short",
    entry([{ idstr: "a", usedLength: PAGE }]),
    { total: PAGE, mappedRam: true, ended: true },
    UnexpectedEndOfStreamError,
    110,
    /the mapped-ram header of block "a"/,
  ],
  ...([
    [
      "a header version above 1",
      { version: 2 },
      0,
      /version 2 is newer than 1/,
    ],
    [
      "a header page size other than the target's",
      { pageSize: 8192 },
      4,
      /page size 8192 differs from the stream's target page size 4096/,
    ],
    [
      "a bitmap offset pointing back into the stream",
      { bitmapOffset: 100 },
      12,
      /bitmap offset 100 points back into the stream, before 138/,
    ],
    [
      "a pages offset that is not page aligned",
      { pagesOffset: 0x100000 + 512 },
      20,
      /pages offset 1049088 is not a multiple of the page size 4096/,
    ],
    [
      "a pages offset inside the bitmap",
      { bitmapOffset: 0x100000 - 4 },
      20,
      /pages offset 1048576 lies inside the 8-byte bitmap at 1048572/,
    ],
  ] as const).map(([name, change, field, message]) =>
    [
      name,
      entry([{
        idstr: "a",
        usedLength: PAGE,
        mappedRam: { ...HEADER, bitmapOffset: 138, ...change },
      }]),
      { total: PAGE, mappedRam: true },
      StreamFormatError,
      110 + field,
      message,
    ] satisfies typeof BAD[number]
  ),
];

for (const [name, bytes, options, kind, offset, message] of BAD) {
  Deno.test(`decodeRamBlockEntry() rejects ${name} at its offset`, () => {
    assert.throws(
      () => decodeRamBlockEntry(bytes, { offset: 100, ...options }),
      (error) => {
        assert.ok(error instanceof kind, `${error}`);
        assert.equal(error.offset, offset);
        assert.match(error.message, message);
        return true;
      },
    );
  });
}

Deno.test("decodeRamBlockEntry() accepts a header version below 1, as QEMU does", () => {
  const bytes = entry([{
    idstr: "a",
    usedLength: PAGE,
    mappedRam: { ...HEADER, version: 0, bitmapOffset: 38 },
  }]);
  const step = decodeRamBlockEntry(bytes, { total: PAGE, mappedRam: true });
  assert.ok(step.type === "entry");
  assert.equal(step.block.mappedRam?.version, 0);
});

Deno.test("decodeRamBlockListTotal() reads the MEM_SIZE word", () => {
  assert.equal(
    decodeRamBlockListTotal(new Uint8Array([0, 0, 0, 1, 0, 0, 0x10, 0x04])),
    2 ** 32 + PAGE,
  );
  assert.throws(
    () =>
      decodeRamBlockListTotal(new Uint8Array([0, 0, 0, 0, 0, 0, 0, 8]), {
        offset: 40,
      }),
    (error) =>
      error instanceof StreamFormatError && error.offset === 40 &&
      /flags 0x8 are not MEM_SIZE \(0x4\)/.test(error.message),
  );
  assert.throws(
    () => decodeRamBlockListTotal(new Uint8Array([0, 0x20, 0, 0, 0, 0, 0, 4])),
    /exceeds 2\^53/,
  );
  assert.throws(
    () => decodeRamBlockListTotal(new Uint8Array(5), { offset: 9 }),
    (error) =>
      error instanceof UnexpectedEndOfStreamError && error.offset === 9,
  );
});
