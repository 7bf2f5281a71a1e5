/**
 * readMappedRamRecords() against the path it replaces, converting the file
 * into a stream and decoding that: applied to fresh memory, both give the
 * same RAM and device state, for files written by MappedRamWriter and for
 * the QEMU 7.2 fixtures converted to mapped-ram.
 */
import assert from "node:assert/strict";
import {
  convertMappedRamToStream,
  convertStreamToMappedRam,
  encodeMigrationRecords,
  isPageCarrier,
  MappedRamEncoderStream,
  MappedRamWriter,
  type MappedRamWriterItem,
  type MigrationDecoderOptions,
  MigrationDecoderStream,
  type MigrationRecord,
  RamImage,
  type RandomAccessFile,
  readMappedRamRecords,
  StreamFormatError,
} from "../../mod.ts";
import { firstDifference } from "../_helpers/golden.ts";
import { createMemoryFile, type MemoryFile } from "./_memory_file.ts";

const PAGE = 4096;
const FIXTURES = new URL("../../fixtures/qemu/", import.meta.url);

/** What loading a file gave: the RAM and the device sections. */
interface Loaded {
  ram: RamImage;
  devices: { idstr: string; instanceId: number; data: Uint8Array }[];
  types: string[][];
}

/** Applies record batches the way a destination does, to fresh memory. */
async function load(
  batches: AsyncIterable<MigrationRecord[]>,
): Promise<Loaded> {
  const loaded: Loaded = { ram: new RamImage(), devices: [], types: [] };
  for await (const batch of batches) {
    loaded.types.push(batch.map((record) => record.type));
    for (const record of batch) {
      if (record.type === "ram-mem-size" || isPageCarrier(record)) {
        loaded.ram.apply(record);
      } else if (record.type === "device-state") {
        const { idstr, instanceId } = record;
        loaded.devices.push({ idstr, instanceId, data: record.data.slice() });
      }
    }
  }
  return loaded;
}

/** The path readMappedRamRecords() replaces: file → stream → decoder. */
async function loadConverted(
  file: RandomAccessFile,
  decoder: MigrationDecoderOptions = {},
): Promise<Loaded> {
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const [, loaded] = await Promise.all([
    convertMappedRamToStream(file, writable, { decoder }),
    load(readable.pipeThrough(
      new MigrationDecoderStream({ kind: "file", ...decoder }),
    )),
  ]);
  return loaded;
}

function assertSameLoad(actual: Loaded, expected: Loaded): void {
  assert.deepEqual(
    actual.ram.blocks.map(({ idstr, usedLength }) => ({ idstr, usedLength })),
    expected.ram.blocks.map(({ idstr, usedLength }) => ({ idstr, usedLength })),
  );
  for (const { idstr } of expected.ram.blocks) {
    assert.equal(
      firstDifference(actual.ram.read(idstr), expected.ram.read(idstr)),
      -1,
      `block ${idstr}`,
    );
  }
  assert.deepEqual(actual.devices, expected.devices);
}

const DEVICE = {
  name: "livemig-test",
  "instance_id": 0,
  "vmsd_name": "livemig-test",
  version: 1,
  fields: [{ name: "counter", type: "uint32", size: 4 }],
};
const VMDESC = new TextEncoder().encode(
  JSON.stringify({ "page_size": PAGE, devices: [DEVICE] }),
);

const page = (fill: number) => new Uint8Array(PAGE).fill(fill);

/** A stream with two blocks, pages re-sent, and a page that became zero. */
function writerStream(): MigrationRecord[] {
  const part = (...records: MigrationRecord[]): MigrationRecord[] => [
    { type: "section-part", sectionId: 2 },
    ...records,
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
  ];
  const pages: MigrationRecord[] = [];
  for (let i = 0; i < 600; i++) {
    pages.push({
      type: "ram-page",
      block: "pc.ram",
      offset: i * PAGE,
      data: page(i % 251 + 1),
    });
  }
  return [
    { type: "header", version: 3 },
    { type: "configuration", machine: "pc-i440fx-7.2" },
    { type: "command", command: "OPEN_RETURN_PATH" },
    {
      type: "section-start",
      sectionId: 2,
      idstr: "ram",
      instanceId: 0,
      versionId: 4,
    },
    {
      type: "ram-mem-size",
      blocks: [
        { idstr: "pc.ram", usedLength: 1024 * PAGE },
        { idstr: "pc.bios", usedLength: 32 * PAGE },
      ],
    },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    ...part(...pages),
    ...part(
      { type: "ram-page", block: "pc.ram", offset: 3 * PAGE, data: page(0xee) },
      { type: "ram-zero", block: "pc.ram", offset: 4 * PAGE, fill: 0 },
      { type: "ram-zero", block: "pc.bios", offset: 0, fill: 7 },
      { type: "ram-page", block: "pc.bios", offset: 31 * PAGE, data: page(9) },
    ),
    { type: "command", command: "PING", value: 1 },
    { type: "section-end", sectionId: 2 },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    {
      type: "section-full",
      sectionId: 3,
      idstr: "livemig-test",
      instanceId: 0,
      versionId: 1,
    },
    {
      type: "device-state",
      sectionId: 3,
      idstr: "livemig-test",
      instanceId: 0,
      data: new Uint8Array([0, 0, 0, 42]),
    },
    { type: "section-footer", sectionId: 3 },
    { type: "eof" },
    {
      type: "vmdesc",
      data: VMDESC,
      document: JSON.parse(new TextDecoder().decode(VMDESC)),
    },
  ];
}

async function writeFile(
  records: MigrationRecord[],
  offset = 0,
): Promise<MemoryFile> {
  const file = createMemoryFile(new Uint8Array(offset).fill(0x5a));
  await ReadableStream.from([records])
    .pipeThrough(new MappedRamEncoderStream())
    .pipeTo(new MappedRamWriter(file, { offset }));
  return file;
}

Deno.test("readMappedRamRecords() loads a MappedRamWriter file as its conversion does", async () => {
  const file = await writeFile(writerStream());
  const loaded = await load(readMappedRamRecords(file));
  assertSameLoad(loaded, await loadConverted(file));
  // The last page content wins; the page that became zero is zero.
  const ram = loaded.ram.read("pc.ram");
  assert.equal(ram[3 * PAGE], 0xee);
  assert.equal(ram[4 * PAGE + 100], 0);
  assert.equal(ram[5 * PAGE], 6);
  assert.equal(loaded.ram.read("pc.bios")[0], 7);
  assert.deepEqual(loaded.devices.map((d) => [...d.data]), [[0, 0, 0, 42]]);
});

Deno.test("readMappedRamRecords() yields records in the order a stream loader expects", async () => {
  const file = await writeFile(writerStream());
  const { types } = await load(readMappedRamRecords(file));
  assert.deepEqual(types[0], [
    "header",
    "configuration",
    "section-start",
    "ram-mem-size",
  ]);
  const pages = types.slice(1).filter((batch) => batch[0] === "ram-page");
  // Stored pages only (601 of 1056: page 4 of pc.ram became zero), run by
  // run, in chunks of at most 256 pages (1 MiB).
  assert.deepEqual(pages.map((batch) => batch.length), [4, 256, 256, 83, 1, 1]);
  assert.ok(pages.flat().every((type) => type === "ram-page"));
  assert.deepEqual(types.slice(1 + pages.length).flat(), [
    "ram-eos",
    "section-footer",
    "section-part",
    "ram-eos",
    "section-footer",
    "section-part",
    "ram-eos",
    "section-footer",
    "section-end",
    "ram-eos",
    "section-footer",
    "section-full",
    "device-state",
    "section-footer",
    "eof",
    "vmdesc",
  ]); // the commands are left out
});

Deno.test("readMappedRamRecords() reads the stored pages and the metadata, nothing else", async () => {
  const file = await writeFile(writerStream());
  file.operations.length = 0;
  const regions: [number, number][] = [];
  for await (
    const batch of readMappedRamRecords(file, { readBytes: 64 * PAGE })
  ) {
    for (const record of batch) {
      if (record.type !== "ram-mem-size") continue;
      for (const { usedLength, mappedRam } of record.blocks) {
        regions.push([
          mappedRam!.pagesOffset,
          mappedRam!.pagesOffset + usedLength,
        ]);
      }
    }
  }
  const reads = file.operations.filter((op) => op.op === "read");
  const pageReads = reads.filter((op) =>
    regions.some(([start, end]) => op.offset >= start && op.offset < end)
  );
  assert.ok(
    pageReads.every((op) =>
      regions.some(([start, end]) =>
        op.offset + op.size <= end && op.offset >= start
      )
    ),
  );
  assert.ok(pageReads.every((op) => op.size <= 64 * PAGE));
  const pageBytes = pageReads.reduce((sum, op) => sum + op.size, 0);
  assert.equal(pageBytes, 601 * PAGE);
  const total = reads.reduce((sum, op) => sum + op.size, 0);
  assert.ok(total - pageBytes < 64 * 1024, `${total - pageBytes} other bytes`);
});

Deno.test("readMappedRamRecords() reads a stream that starts at a file offset", async () => {
  const offset = 12345;
  const file = await writeFile(writerStream(), offset);
  assertSameLoad(
    await load(readMappedRamRecords(file, { offset })),
    await load(readMappedRamRecords(await writeFile(writerStream()))),
  );
});

Deno.test("readMappedRamRecords() refuses page records in the file's stream", async () => {
  const file = createMemoryFile();
  const writer = new MappedRamWriter(file);
  const head = (await Array.fromAsync(
    ReadableStream.from<MigrationRecord[]>([[
      { type: "header", version: 3 },
      { type: "configuration", machine: "pc-i440fx-7.2" },
      {
        type: "section-start",
        sectionId: 2,
        idstr: "ram",
        instanceId: 0,
        versionId: 4,
      },
      { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: PAGE }] },
      { type: "ram-eos" },
      { type: "section-footer", sectionId: 2 },
    ]]).pipeThrough(new MappedRamEncoderStream()),
  )).flat();
  const part = encodeMigrationRecords([
    { type: "section-part", sectionId: 2 },
    { type: "ram-zero", block: "pc.ram", offset: 0, fill: 0 },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "eof" },
  ]);
  await ReadableStream.from<MappedRamWriterItem[]>([
    head,
    [{ type: "stream-bytes", data: part }],
  ]).pipeTo(writer);
  const partAt = writer.position - part.byteLength;
  await assert.rejects(
    load(readMappedRamRecords(file, { decoder: { vmdesc: false } })),
    (error) =>
      error instanceof StreamFormatError && error.offset === partAt + 5 &&
      /"ram-zero" record lies between offsets/.test(error.message),
  );
});

Deno.test("readMappedRamRecords() refuses a plain stream", async () => {
  const stream = await Deno.readFile(new URL("idle/stream.bin", FIXTURES));
  await assert.rejects(
    load(readMappedRamRecords(createMemoryFile(stream))),
    (error) =>
      error instanceof StreamFormatError && error.offset === 8 &&
      /does not list the "mapped-ram" capability/.test(error.message),
  );
});

Deno.test("readMappedRamRecords() rejects bad options", () => {
  const file = createMemoryFile();
  assert.throws(() => readMappedRamRecords(file, { offset: -1 }), RangeError);
  assert.throws(() => readMappedRamRecords(file, { readBytes: 0 }), RangeError);
});

for (const name of ["idle", "dirty", "xbzrle", "return-path"]) {
  Deno.test(`readMappedRamRecords() loads QEMU fixture "${name}" as its conversion does`, async () => {
    const stream = await Deno.readFile(new URL(`${name}/stream.bin`, FIXTURES));
    const file = createMemoryFile();
    await convertStreamToMappedRam(ReadableStream.from([stream]), file);
    const loaded = await load(readMappedRamRecords(file));
    assertSameLoad(loaded, await loadConverted(file));
    assert.equal(loaded.devices.length, 27);
    // And both are what the stream itself loads to.
    const direct = await load(
      ReadableStream.from([stream]).pipeThrough(
        new MigrationDecoderStream({ kind: "file" }),
      ),
    );
    assertSameLoad(loaded, direct);
  });
}
