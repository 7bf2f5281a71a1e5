/**
 * MappedRamWriter against a naive oracle (a Map of each page's latest
 * content), Firecracker's dump_dirty_oracle pattern: thousands of seeded
 * random sequences of page writes, zero pages and re-writes over a few
 * blocks, then the file is read back and compared page by page.
 */
import assert from "node:assert/strict";
import {
  layoutMappedRamBlock,
  MappedRamReader,
  MappedRamWriter,
  type MappedRamWriterItem,
  openRandomAccessFile,
  type RamBlockInfo,
} from "../../mod.ts";
import { createPrng, type Prng } from "../_helpers/prng.ts";
import { createMemoryFile, type MemoryFile } from "./_memory_file.ts";

const EOS = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0x10]);

interface Scenario {
  pageSize: number;
  alignment: number;
  offset: number;
  blocks: RamBlockInfo[];
  prefix: Uint8Array;
  /** Every stream byte after the block list, EOS records included. */
  tail: Uint8Array;
  batches: MappedRamWriterItem[][];
  /** Latest content per "block:pageIndex"; a zero page is `undefined`. */
  oracle: Map<string, Uint8Array | undefined>;
  pageWrites: number;
}

function randomScenario(prng: Prng): Scenario {
  const pageSize = [1024, 4096][prng.nextInt(2)]!;
  const alignment = prng.nextInt(4) === 0
    ? 0x100000
    : pageSize * (1 + prng.nextInt(4));
  const offset = prng.nextInt(3) === 0 ? prng.nextInt(5000) : 0;
  const blockCount = 1 + prng.nextInt(4);
  const blocks: RamBlockInfo[] = [];
  for (let b = 0; b < blockCount; b++) {
    blocks.push({
      idstr: `block-${b}`,
      usedLength: (1 + prng.nextInt(150)) * pageSize,
    });
  }
  const prefix = prng.fill(new Uint8Array(1 + prng.nextInt(40)));
  const suffix = prng.fill(new Uint8Array(prng.nextInt(60)));
  const tail: number[] = [...EOS];
  const oracle = new Map<string, Uint8Array | undefined>();
  const items: MappedRamWriterItem[] = [
    { type: "stream-bytes", data: prefix },
    { type: "ram-mem-size", blocks },
    { type: "ram-eos" },
  ];
  let pageWrites = 0;
  const steps = prng.nextInt(200);
  for (let step = 0; step < steps; step++) {
    const block = blocks[prng.nextInt(blocks.length)]!;
    const pages = block.usedLength / pageSize;
    const choice = prng.nextInt(20);
    if (choice === 0) {
      const data = prng.fill(new Uint8Array(5));
      items.push({ type: "ram-eos" }, { type: "stream-bytes", data });
      tail.push(...EOS, ...data);
      continue;
    }
    if (choice === 1) {
      items.push({ type: "bitmap-flush" });
      continue;
    }
    if (choice === 2) {
      // A long run whose pages are views of one buffer, back to back, as
      // pages read from guest memory are: written without a copy.
      const first = prng.nextInt(pages);
      const length = 1 + prng.nextInt(pages - first);
      const memory = new Uint8Array(length * pageSize);
      for (let i = 0; i < length; i++) {
        const data = memory.subarray(i * pageSize, (i + 1) * pageSize);
        data.fill(1 + ((pageWrites + i) % 255));
        new DataView(data.buffer, data.byteOffset).setUint32(0, pageWrites + i);
        items.push({
          type: "ram-page",
          block: block.idstr,
          offset: (first + i) * pageSize,
          data,
        });
        oracle.set(`${block.idstr}:${first + i}`, data);
      }
      pageWrites += length;
      continue;
    }
    // A run of consecutive pages, as a dirty-page scan sends them.
    const first = prng.nextInt(pages);
    const length = 1 + prng.nextInt(Math.min(8, pages - first));
    for (let index = first; index < first + length; index++) {
      const key = `${block.idstr}:${index}`;
      const offsetInBlock = index * pageSize;
      if (choice < 7) {
        items.push({
          type: "ram-zero",
          block: block.idstr,
          offset: offsetInBlock,
          fill: 0,
        });
        oracle.set(key, undefined);
      } else {
        // Some pages are stored zeros: PAGE records whose content is zero.
        // Others get content unique to this write (cheaper than random
        // bytes, and a stale page can never pass for the latest one).
        const data = new Uint8Array(pageSize);
        if (choice !== 7) {
          const view = new DataView(data.buffer);
          data.fill(1 + (pageWrites % 255));
          view.setUint32(prng.nextInt(pageSize / 4) * 4, prng.nextUint32());
          view.setUint32(0, pageWrites + 1);
        }
        items.push({
          type: "ram-page",
          block: block.idstr,
          offset: offsetInBlock,
          data,
        });
        oracle.set(key, data);
        pageWrites++;
      }
    }
  }
  items.push({ type: "bitmap-flush" }, { type: "ram-eos" }, {
    type: "stream-bytes",
    data: suffix,
  });
  tail.push(...EOS, ...suffix);
  const batches: MappedRamWriterItem[][] = [];
  for (let at = 0; at < items.length;) {
    const size = 1 + prng.nextInt(prng.nextInt(4) === 0 ? 400 : 30);
    batches.push(items.slice(at, at + size));
    at += size;
  }
  return {
    pageSize,
    alignment,
    offset,
    blocks,
    prefix,
    tail: new Uint8Array(tail),
    batches,
    oracle,
    pageWrites,
  };
}

/** Where the block list starts and where the stream ends, from the layout alone. */
function expectedLayout(s: Scenario): { memSize: number; size: number } {
  const memSize = s.offset + s.prefix.byteLength;
  let at = memSize + 8;
  for (const block of s.blocks) {
    at += 1 + block.idstr.length + 8;
    at = layoutMappedRamBlock(at, block.usedLength, {
      pageSize: s.pageSize,
      alignment: s.alignment,
    }).end;
  }
  return { memSize, size: at + s.tail.byteLength };
}

async function writeScenario(
  s: Scenario,
  file: MemoryFile,
): Promise<MappedRamWriter> {
  const writer = new MappedRamWriter(file, {
    pageSize: s.pageSize,
    alignment: s.alignment,
    offset: s.offset,
    writeBytes: s.pageSize * 5,
  });
  await ReadableStream.from(s.batches).pipeTo(writer);
  return writer;
}

async function checkAgainstOracle(
  s: Scenario,
  file: MemoryFile,
  writer: MappedRamWriter,
): Promise<void> {
  const { memSize, size } = expectedLayout(s);
  // The file size depends on the layout only, never on how often pages
  // were re-sent.
  assert.equal(file.length, size, "file size");
  assert.equal(writer.position, size);
  assert.deepEqual(
    await file.readAt(s.offset, s.prefix.byteLength),
    s.prefix,
    "prefix",
  );
  assert.deepEqual(
    await file.readAt(size - s.tail.byteLength, s.tail.byteLength),
    s.tail,
    "the stream after the last block",
  );
  const reader = await MappedRamReader.open(file, memSize, {
    pageSize: s.pageSize,
  });
  assert.equal(reader.end, size - s.tail.byteLength);
  assert.deepEqual(
    reader.blocks.map((block) => block.mappedRam),
    writer.blocks.map((block) => block.mappedRam),
  );
  const seen = new Map<string, Uint8Array>();
  for await (const batch of reader.records()) {
    for (const record of batch) {
      assert.equal(record.type, "ram-page");
      if (record.type === "ram-page") {
        seen.set(
          `${record.block}:${record.offset / s.pageSize}`,
          record.data,
        );
      }
    }
  }
  for (const block of s.blocks) {
    for (let index = 0; index < block.usedLength / s.pageSize; index++) {
      const key = `${block.idstr}:${index}`;
      const expected = s.oracle.get(key);
      const actual = seen.get(key);
      if (expected === undefined) {
        assert.equal(actual, undefined, `${key} must read as zero (bit clear)`);
      } else {
        assert.deepEqual(actual, expected, `${key} content`);
      }
    }
  }
}

Deno.test("MappedRamWriter matches a naive oracle on 2000 random sequences", async () => {
  const prng = createPrng(0x6d61_7070);
  for (let round = 0; round < 2000; round++) {
    const scenario = randomScenario(prng);
    const file = createMemoryFile(prng.fill(new Uint8Array(scenario.offset)));
    const writer = await writeScenario(scenario, file);
    try {
      await checkAgainstOracle(scenario, file, writer);
    } catch (error) {
      throw new Error(`round ${round} failed`, { cause: error });
    }
    assert.equal(writer.pagesWritten, scenario.pageWrites);
  }
});

Deno.test("MappedRamWriter keeps the bytes before its offset", async () => {
  const prefix = new Uint8Array([1, 2, 3, 4, 5]);
  const file = createMemoryFile(new Uint8Array([...prefix, 9, 9, 9, 9, 9, 9]));
  await ReadableStream.from([[
    { type: "ram-mem-size", blocks: [{ idstr: "a", usedLength: 4096 }] },
  ] as MappedRamWriterItem[]]).pipeTo(new MappedRamWriter(file, { offset: 5 }));
  const bytes = file.bytes();
  assert.deepEqual(bytes.subarray(0, 5), prefix);
  assert.deepEqual(
    bytes.subarray(5, 13),
    new Uint8Array([0, 0, 0, 0, 0, 0, 0x10, 0x04]),
  );
  const reader = await MappedRamReader.open(file, 5);
  assert.equal(reader.blocks[0]!.mappedRam!.bitmapOffset, 5 + 8 + 10 + 28);
  // The file reaches the end of the last block even with nothing after it.
  assert.equal(file.length, 0x100000 + 4096);
});

Deno.test("MappedRamWriter gathers file-contiguous pages into large writes", async () => {
  const file = createMemoryFile();
  const pages: MappedRamWriterItem[] = [];
  for (let index = 0; index < 3000; index++) {
    pages.push({
      type: "ram-page",
      block: "pc.ram",
      offset: index * 4096,
      data: new Uint8Array(4096).fill(index & 0xff),
    });
  }
  const batches: MappedRamWriterItem[][] = [[
    {
      type: "ram-mem-size",
      blocks: [{ idstr: "pc.ram", usedLength: 3000 * 4096 }],
    },
  ]];
  for (let at = 0; at < pages.length; at += 100) {
    batches.push(pages.slice(at, at + 100));
  }
  await ReadableStream.from(batches).pipeTo(new MappedRamWriter(file));
  const pageWrites = file.operations.filter((op) =>
    op.op === "write" && op.offset >= 0x100000
  );
  // 3000 pages of 4 KiB = 11.7 MiB in 4 MiB writes: 3 writes.
  assert.deepEqual(pageWrites.map((op) => op.size), [
    4 << 20,
    4 << 20,
    3000 * 4096 - (8 << 20),
  ]);
});

Deno.test("MappedRamWriter writes long runs straight from the caller's memory", async () => {
  const file = createMemoryFile();
  const memory = new Uint8Array(512 * 4096).map((_, i) => i >> 12);
  const batch = (first: number): MappedRamWriterItem[] =>
    Array.from({ length: 256 }, (_, i) => ({
      type: "ram-page",
      block: "pc.ram",
      offset: (first + i) * 4096,
      data: memory.subarray((first + i) * 4096, (first + i + 1) * 4096),
    }));
  const writer = new MappedRamWriter(file);
  const sink = writer.getWriter();
  await sink.write([
    {
      type: "ram-mem-size",
      blocks: [{ idstr: "pc.ram", usedLength: 512 * 4096 }],
    },
  ]);
  await sink.write(batch(0));
  // Once write() resolved, the caller may reuse its memory.
  memory.subarray(0, 256 * 4096).fill(0xee);
  await sink.write(batch(256));
  await sink.close();
  const pageWrites = file.operations.filter((op) =>
    op.op === "write" && op.offset >= 0x100000
  );
  assert.deepEqual(pageWrites.map((op) => op.size), [1 << 20, 1 << 20]);
  const bytes = await file.readAt(0x100000, 512 * 4096);
  assert.equal(bytes[0], 0);
  assert.equal(bytes[255 * 4096], 255);
  assert.equal(bytes[300 * 4096], 300 & 0xff);
  assert.equal((await MappedRamReader.open(file, 0)).storedPages(), 512);
});

Deno.test("MappedRamWriter fills short gaps of never-written pages with zeros", async () => {
  const file = createMemoryFile();
  const page = (index: number): MappedRamWriterItem => ({
    type: "ram-page",
    block: "pc.ram",
    offset: index * 4096,
    data: new Uint8Array(4096).fill(index + 1),
  });
  await ReadableStream.from<MappedRamWriterItem[]>([[
    {
      type: "ram-mem-size",
      blocks: [{ idstr: "pc.ram", usedLength: 64 * 4096 }],
    },
    page(0),
    page(1),
    { type: "ram-zero", block: "pc.ram", offset: 2 * 4096, fill: 0 },
    page(3),
    page(40), // 36 pages = 144 KiB further: too far, a new write
  ]]).pipeTo(new MappedRamWriter(file));
  const pageWrites = file.operations.flatMap((op) =>
    op.op === "write" && op.offset >= 0x100000
      ? [[op.offset - 0x100000, op.size]]
      : []
  );
  assert.deepEqual(pageWrites, [
    [0, 4 * 4096],
    [40 * 4096, 4096],
  ]);
  const reader = await MappedRamReader.open(file, 0);
  assert.deepEqual([...reader.summaries[0]!.bitmap.runs()], [[0, 2], [3, 4], [
    40,
    41,
  ]]);
});

Deno.test("MappedRamWriter never fills a gap over a page that holds data", async () => {
  const file = createMemoryFile();
  const page = (index: number, fill: number): MappedRamWriterItem => ({
    type: "ram-page",
    block: "pc.ram",
    offset: index * 4096,
    data: new Uint8Array(4096).fill(fill),
  });
  await ReadableStream.from<MappedRamWriterItem[]>([[
    {
      type: "ram-mem-size",
      blocks: [{ idstr: "pc.ram", usedLength: 8 * 4096 }],
    },
    page(2, 0xaa),
    page(0, 1),
    page(1, 1),
    { type: "ram-zero", block: "pc.ram", offset: 2 * 4096, fill: 0 },
    page(3, 1),
    page(2, 0xbb),
  ]]).pipeTo(new MappedRamWriter(file));
  const pageWrites = file.operations.flatMap((op) =>
    op.op === "write" && op.offset >= 0x100000
      ? [[op.offset - 0x100000, op.size]]
      : []
  );
  assert.deepEqual(pageWrites, [
    [2 * 4096, 4096],
    [0, 2 * 4096],
    [3 * 4096, 4096],
    [2 * 4096, 4096],
  ]);
  assert.equal((await file.readAt(0x100000 + 2 * 4096, 1))[0], 0xbb);
});

Deno.test("MappedRamWriter writes a page sent twice at the same offset", async () => {
  const file = createMemoryFile();
  const page = (fill: number) => ({
    type: "ram-page" as const,
    block: "pc.ram",
    offset: 4096,
    data: new Uint8Array(4096).fill(fill),
  });
  await ReadableStream.from([[
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 8192 }] },
    page(1),
    page(2),
  ], [page(3)]] as MappedRamWriterItem[][]).pipeTo(new MappedRamWriter(file));
  const writes = file.operations.filter((op) =>
    op.op === "write" && op.offset === 0x100000 + 4096
  );
  assert.equal(writes.length, 3);
  assert.equal(file.bytes()[0x100000 + 4096], 3);
});

Deno.test("MappedRamWriter clears the bit of a page that became zero", async () => {
  const file = createMemoryFile();
  await ReadableStream.from([[
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 8192 }] },
    {
      type: "ram-page",
      block: "pc.ram",
      offset: 0,
      data: new Uint8Array(4096).fill(5),
    },
    { type: "bitmap-flush" },
    { type: "ram-zero", block: "pc.ram", offset: 0, fill: 0 },
    { type: "ram-eos" },
  ]] as MappedRamWriterItem[][]).pipeTo(new MappedRamWriter(file));
  const reader = await MappedRamReader.open(file, 0);
  // The stale bytes stay in the pages region, but the bit says "zero".
  assert.equal(file.bytes()[0x100000], 5);
  assert.equal(reader.storedPages(), 0);
  assert.deepEqual((await Array.fromAsync(reader.records())).flat(), []);
});

Deno.test("MappedRamWriter stores a ZERO record with a non-zero fill as a page", async () => {
  const file = createMemoryFile();
  await ReadableStream.from([[
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 4096 }] },
    { type: "ram-zero", block: "pc.ram", offset: 0, fill: 0xaa },
  ]] as MappedRamWriterItem[][]).pipeTo(new MappedRamWriter(file));
  const records =
    (await Array.fromAsync((await MappedRamReader.open(file, 0)).records()))
      .flat();
  const [record] = records;
  assert.equal(records.length, 1);
  assert.ok(record?.type === "ram-page");
  assert.deepEqual(record.data, new Uint8Array(4096).fill(0xaa));
});

Deno.test("MappedRamWriter writes the bitmaps on bitmap-flush, before what follows", async () => {
  const file = createMemoryFile();
  await ReadableStream.from([[
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 8192 }] },
    {
      type: "ram-page",
      block: "pc.ram",
      offset: 4096,
      data: new Uint8Array(4096).fill(1),
    },
    { type: "bitmap-flush" },
    { type: "ram-eos" },
  ]] as MappedRamWriterItem[][]).pipeTo(new MappedRamWriter(file));
  const bitmapOffset = 8 + 1 + 6 + 8 + 28;
  const bitmapWrites = file.operations.filter((op) =>
    op.op === "write" && op.offset === bitmapOffset
  );
  // Once on the flush; nothing changed afterwards, so not again at close.
  assert.equal(bitmapWrites.length, 1);
  assert.equal(file.bytes()[bitmapOffset], 0b10);
});

Deno.test("MappedRamWriter writes a guest address per block with x-ignore-shared", async () => {
  const file = createMemoryFile();
  await ReadableStream.from([[
    {
      type: "ram-mem-size",
      blocks: [{ idstr: "pc.ram", usedLength: 4096, gpa: 0x1234n }],
    },
  ]] as MappedRamWriterItem[][]).pipeTo(new MappedRamWriter(file));
  const reader = await MappedRamReader.open(file, 0, { ignoreShared: true });
  assert.equal(reader.blocks[0]!.gpa, 0x1234n);
  assert.equal(reader.summaries[0]!.headerOffset, 8 + 1 + 6 + 16);
});

const REFUSED: [string, MappedRamWriterItem[], RegExp][] = [
  ["an XBZRLE record", [
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 4096 }] },
    {
      type: "ram-xbzrle",
      block: "pc.ram",
      offset: 0,
      delta: new Uint8Array([0, 1, 1]),
    },
  ], /xbzrle/],
  ["a MULTIFD_FLUSH record", [{ type: "ram-multifd-flush" }], /MULTIFD_FLUSH/],
  ["a page before the block list", [
    {
      type: "ram-page",
      block: "pc.ram",
      offset: 0,
      data: new Uint8Array(4096),
    },
  ], /block list/],
  ["a page of an unknown block", [
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 4096 }] },
    { type: "ram-zero", block: "pc.rom", offset: 0, fill: 0 },
  ], /not in the block list/],
  ["a page past the block's end", [
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 4096 }] },
    {
      type: "ram-page",
      block: "pc.ram",
      offset: 4096,
      data: new Uint8Array(4096),
    },
  ], /offset must be/],
  ["a short page", [
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 4096 }] },
    { type: "ram-page", block: "pc.ram", offset: 0, data: new Uint8Array(100) },
  ], /100 bytes/],
  ["a second block list", [
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 4096 }] },
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 4096 }] },
  ], /second block list/],
  ["a postcopy page size", [
    {
      type: "ram-mem-size",
      blocks: [{ idstr: "pc.ram", usedLength: 4096, pageSize: 2 << 20 }],
    },
  ], /postcopy/],
  ["guest addresses on some blocks only", [
    {
      type: "ram-mem-size",
      blocks: [{ idstr: "a", usedLength: 4096, gpa: 0n }, {
        idstr: "b",
        usedLength: 4096,
      }],
    },
  ], /x-ignore-shared/],
];

for (const [name, items, message] of REFUSED) {
  Deno.test(`MappedRamWriter refuses ${name}`, async () => {
    await assert.rejects(
      ReadableStream.from([items]).pipeTo(
        new MappedRamWriter(createMemoryFile()),
      ),
      (error) =>
        (error instanceof TypeError || error instanceof RangeError) &&
        message.test(error.message),
    );
  });
}

Deno.test("MappedRamWriter passes a failed write on to the pipe", async () => {
  const file = createMemoryFile();
  const failing = {
    ...file,
    writeAt: (offset: number, bytes: Uint8Array) =>
      offset >= 0x100000
        ? Promise.reject(new Error("disk full"))
        : file.writeAt(offset, bytes),
  };
  await assert.rejects(
    ReadableStream.from([[
      { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 4096 }] },
      {
        type: "ram-page",
        block: "pc.ram",
        offset: 0,
        data: new Uint8Array(4096),
      },
    ] as MappedRamWriterItem[]]).pipeTo(new MappedRamWriter(failing)),
    /disk full/,
  );
});

Deno.test("MappedRamWriter rejects bad options", () => {
  assert.throws(
    () => new MappedRamWriter(createMemoryFile(), { offset: -1 }),
    RangeError,
  );
  assert.throws(
    () => new MappedRamWriter(createMemoryFile(), { pageSize: 1000 }),
    RangeError,
  );
  assert.throws(
    () => new MappedRamWriter(createMemoryFile(), { alignment: 5000 }),
    RangeError,
  );
  assert.throws(
    () => new MappedRamWriter(createMemoryFile(), { writeBytes: 100 }),
    RangeError,
  );
});

Deno.test("MappedRamWriter matches the oracle on a real file", async () => {
  const prng = createPrng(99);
  const path = await Deno.makeTempFile({ prefix: "livemig-mapped-ram-" });
  try {
    for (let round = 0; round < 20; round++) {
      const scenario = randomScenario(prng);
      const file = await openRandomAccessFile(path, { truncate: true });
      try {
        await file.writeAt(0, prng.fill(new Uint8Array(scenario.offset)));
        const writer = new MappedRamWriter(file, {
          pageSize: scenario.pageSize,
          alignment: scenario.alignment,
          offset: scenario.offset,
        });
        await ReadableStream.from(scenario.batches).pipeTo(writer);
        const copy = createMemoryFile(await Deno.readFile(path));
        await checkAgainstOracle(scenario, copy, writer);
      } finally {
        await file.close();
      }
    }
  } finally {
    await Deno.remove(path);
  }
});
