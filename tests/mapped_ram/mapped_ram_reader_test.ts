import assert from "node:assert/strict";
import {
  MappedRamReader,
  MappedRamWriter,
  type MappedRamWriterItem,
  RamImage,
  StreamFormatError,
  UnexpectedEndOfStreamError,
} from "../../mod.ts";
import { createMemoryFile, type MemoryFile } from "./_memory_file.ts";

// The file every check starts from, laid out by the writer:
//   0x000000  MEM_SIZE word
//   0x000008  "pc.ram" entry (15 bytes), header at 0x17, bitmap at 0x33 (8 bytes)
//   0x100000  pc.ram pages (64 pages) … 0x140000
//   0x140000  "pc.rom" entry, header at 0x14000f, bitmap at 0x14002b
//   0x200000  pc.rom pages (16 pages) … 0x210000
//   0x210000  EOS
const RAM_HEADER = 0x17;
const ROM_ENTRY = 0x140000;
const ROM_HEADER = 0x14000f;
const ROM_BITMAP = 0x14002b;
const FILE_END = 0x210008;

function page(fill: number): Uint8Array {
  return new Uint8Array(4096).fill(fill);
}

async function validFile(): Promise<MemoryFile> {
  const file = createMemoryFile();
  const items: MappedRamWriterItem[] = [{
    type: "ram-mem-size",
    blocks: [
      { idstr: "pc.ram", usedLength: 64 * 4096 },
      { idstr: "pc.rom", usedLength: 16 * 4096 },
    ],
  }];
  for (let index = 0; index < 10; index++) {
    items.push({
      type: "ram-page",
      block: "pc.ram",
      offset: index * 4096,
      data: page(index + 1),
    });
  }
  items.push(
    { type: "ram-page", block: "pc.ram", offset: 20 * 4096, data: page(21) },
    { type: "ram-page", block: "pc.rom", offset: 3 * 4096, data: page(0xee) },
    { type: "ram-eos" },
  );
  await ReadableStream.from([items]).pipeTo(new MappedRamWriter(file));
  return file;
}

async function changed(
  change: (bytes: Uint8Array, view: DataView) => Uint8Array | void,
): Promise<MemoryFile> {
  const bytes = (await validFile()).bytes();
  const view = new DataView(bytes.buffer);
  return createMemoryFile(change(bytes, view) ?? bytes);
}

Deno.test("MappedRamReader reads the block list, headers and bitmaps", async () => {
  const file = await validFile();
  assert.equal(file.length, FILE_END);
  const reader = await MappedRamReader.open(file, 0);
  assert.deepEqual(reader.blocks, [
    {
      idstr: "pc.ram",
      usedLength: 64 * 4096,
      mappedRam: {
        version: 1,
        pageSize: 4096,
        bitmapOffset: RAM_HEADER + 28,
        pagesOffset: 0x100000,
      },
    },
    {
      idstr: "pc.rom",
      usedLength: 16 * 4096,
      mappedRam: {
        version: 1,
        pageSize: 4096,
        bitmapOffset: ROM_BITMAP,
        pagesOffset: 0x200000,
      },
    },
  ]);
  assert.deepEqual(reader.summaries.map((s) => s.headerOffset), [
    RAM_HEADER,
    ROM_HEADER,
  ]);
  assert.equal(reader.end, 0x210000);
  assert.equal(reader.storedPages(), 12);
});

Deno.test("MappedRamReader records() yields runs of set bits as PAGE batches", async () => {
  const reader = await MappedRamReader.open(await validFile(), 0);
  const batches = await Array.fromAsync(reader.records());
  assert.deepEqual(
    batches.map((batch) => batch.map((r) => `${r.block}@${r.offset / 4096}`)),
    [
      Array.from({ length: 10 }, (_, i) => `pc.ram@${i}`),
      ["pc.ram@20"],
      ["pc.rom@3"],
    ],
  );
  for (const record of batches.flat()) {
    assert.ok(record.type === "ram-page");
    const expected = record.block === "pc.rom"
      ? 0xee
      : record.offset / 4096 + 1;
    assert.deepEqual(record.data, page(expected));
  }
});

Deno.test("MappedRamReader records() with zeroRecords covers every page in order", async () => {
  const reader = await MappedRamReader.open(await validFile(), 0);
  const records = (await Array.fromAsync(reader.records({ zeroRecords: true })))
    .flat();
  assert.equal(records.length, 80);
  assert.deepEqual(
    records.map((r) => `${r.block}@${r.offset / 4096}`),
    [
      ...Array.from({ length: 64 }, (_, i) => `pc.ram@${i}`),
      ...Array.from({ length: 16 }, (_, i) => `pc.rom@${i}`),
    ],
  );
  assert.deepEqual(
    records.filter((r) => r.type === "ram-page").map((r) =>
      `${r.block}@${r.offset / 4096}`
    ),
    [
      ...Array.from({ length: 10 }, (_, i) => `pc.ram@${i}`),
      "pc.ram@20",
      "pc.rom@3",
    ],
  );
});

Deno.test("MappedRamReader reads runs in chunks of at most 1 MiB", async () => {
  const file = createMemoryFile();
  const items: MappedRamWriterItem[] = [{
    type: "ram-mem-size",
    blocks: [{ idstr: "pc.ram", usedLength: 700 * 4096 }],
  }];
  for (let index = 0; index < 700; index++) {
    if (index === 650) continue; // splits the run
    items.push({
      type: "ram-page",
      block: "pc.ram",
      offset: index * 4096,
      data: page(1),
    });
  }
  await ReadableStream.from([items]).pipeTo(new MappedRamWriter(file));
  const reader = await MappedRamReader.open(file, 0);
  file.operations.length = 0;
  const batches = await Array.fromAsync(reader.records());
  const reads = file.operations.filter((op) => op.op === "read");
  assert.deepEqual(reads.map((op) => op.size / 4096), [256, 256, 138, 49]);
  assert.deepEqual(reads.map((op) => (op.offset - 0x100000) / 4096), [
    0,
    256,
    512,
    651,
  ]);
  assert.deepEqual(batches.map((batch) => batch.length), [256, 256, 138, 49]);
});

Deno.test("MappedRamReader applyTo() copies stored pages into guest memory", async () => {
  const reader = await MappedRamReader.open(await validFile(), 0);
  const image = new RamImage();
  image.addBlocks(reader.blocks);
  assert.equal(await reader.applyTo(image), 12);
  const ram = image.read("pc.ram");
  assert.equal(ram[0], 1);
  assert.equal(ram[9 * 4096], 10);
  assert.equal(ram[10 * 4096], 0);
  assert.equal(ram[20 * 4096], 21);
  assert.equal(image.read("pc.rom")[3 * 4096 + 4095], 0xee);
});

/** [name, change to the valid file, error class, offset, message pattern] */
const CHECKS: [
  string,
  (bytes: Uint8Array, view: DataView) => Uint8Array | void,
  abstract new (...args: never[]) => StreamFormatError,
  number,
  RegExp,
][] = [
  [
    "a header version above 1",
    (_, view) => view.setUint32(RAM_HEADER, 2),
    StreamFormatError,
    RAM_HEADER,
    /version 2 is newer than 1/,
  ],
  [
    "a header page size other than the stream's",
    (_, view) => view.setBigUint64(ROM_HEADER + 4, 8192n),
    StreamFormatError,
    ROM_HEADER + 4,
    /page size 8192 differs from the stream's target page size 4096/,
  ],
  [
    "a pages offset that is not page aligned",
    (_, view) => view.setBigUint64(RAM_HEADER + 20, 0x100000n + 512n),
    StreamFormatError,
    RAM_HEADER + 20,
    /not a multiple of the page size/,
  ],
  [
    "a pages offset inside the bitmap",
    (_, view) => view.setBigUint64(RAM_HEADER + 20, 0n),
    StreamFormatError,
    RAM_HEADER + 20,
    /lies inside the 8-byte bitmap/,
  ],
  [
    "a bitmap offset pointing back into the stream",
    (_, view) => view.setBigUint64(ROM_HEADER + 12, 0x1000n),
    StreamFormatError,
    ROM_HEADER + 12,
    /points back into the stream/,
  ],
  [
    "a header offset past 2^53",
    (_, view) => view.setBigUint64(ROM_HEADER + 12, 1n << 60n),
    StreamFormatError,
    ROM_HEADER + 12,
    /exceeds 2\^53/,
  ],
  [
    "a bitmap cut short by the end of the file",
    (bytes) => bytes.slice(0, ROM_BITMAP + 5),
    UnexpectedEndOfStreamError,
    ROM_BITMAP,
    /bitmap of block "pc.rom".*received 5 of 8 bytes/,
  ],
  [
    "pages past the end of the file",
    (bytes) => bytes.slice(0, 0x200000 + 100),
    UnexpectedEndOfStreamError,
    0x200000,
    /pages of block "pc.rom"/,
  ],
  [
    "a header cut short by the end of the file",
    (bytes) => bytes.slice(0, ROM_HEADER + 10),
    UnexpectedEndOfStreamError,
    ROM_HEADER,
    /mapped-ram header of block "pc.rom"/,
  ],
  [
    "a bitmap bit past the block's last page",
    (bytes) => {
      bytes[ROM_BITMAP + 2] = 0x10; // bit 20 of a 16-page block
    },
    StreamFormatError,
    ROM_BITMAP + 2,
    /bit 20 is set, but the block has only 16 pages/,
  ],
  [
    "a block list without MEM_SIZE",
    (bytes) => {
      bytes[7] = 0x08;
    },
    StreamFormatError,
    0,
    /flags 0x8 are not MEM_SIZE/,
  ],
  [
    "an empty block name",
    (bytes) => {
      bytes[8] = 0;
    },
    StreamFormatError,
    8,
    /block name is empty/,
  ],
  [
    "a block length that is not a multiple of the page size",
    (_, view) => view.setBigUint64(15, 64n * 4096n + 1n),
    StreamFormatError,
    15,
    /not a positive multiple of the page size/,
  ],
  [
    "block lengths past the announced total",
    (_, view) => view.setBigUint64(0, (70n * 4096n) | 4n),
    StreamFormatError,
    ROM_ENTRY + 7,
    /past the announced total/,
  ],
  [
    "a block listed twice",
    (bytes) => {
      bytes.set(new TextEncoder().encode("pc.ram"), ROM_ENTRY + 1);
    },
    StreamFormatError,
    ROM_ENTRY,
    /"pc.ram" is listed twice/,
  ],
];

for (const [name, change, kind, offset, message] of CHECKS) {
  Deno.test(`MappedRamReader rejects ${name} at its file offset`, async () => {
    const file = await changed(change);
    await assert.rejects(
      MappedRamReader.open(file, 0),
      (error) => {
        assert.ok(error instanceof kind, `${error}`);
        assert.equal((error as StreamFormatError).offset, offset);
        assert.match((error as Error).message, message);
        return true;
      },
    );
  });
}

Deno.test("MappedRamReader accepts a header version below 1, as QEMU does", async () => {
  const file = await changed((_, view) => view.setUint32(RAM_HEADER, 0));
  const reader = await MappedRamReader.open(file, 0);
  assert.equal(reader.blocks[0]!.mappedRam!.version, 0);
});

Deno.test("MappedRamReader honours the stream's page size", async () => {
  // A file written with 4 KiB pages does not open as an 8 KiB-page stream.
  await assert.rejects(
    MappedRamReader.open(await validFile(), 0, { pageSize: 8192 }),
    (error) =>
      error instanceof StreamFormatError && error.offset === RAM_HEADER + 4,
  );
});

Deno.test("MappedRamReader rejects bad arguments", async () => {
  const file = await validFile();
  await assert.rejects(MappedRamReader.open(file, -1), RangeError);
  await assert.rejects(
    MappedRamReader.open(file, 0, { pageSize: 3000 }),
    RangeError,
  );
  await assert.rejects(
    MappedRamReader.open(file, 0, { readBytes: 100 }),
    RangeError,
  );
});
