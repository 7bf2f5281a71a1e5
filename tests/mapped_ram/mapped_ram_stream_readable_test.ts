import assert from "node:assert/strict";
import {
  concatBytes,
  createMappedRamStreamReadable,
  MappedRamReader,
  MappedRamWriter,
  type MappedRamWriterItem,
} from "../../mod.ts";
import { createMemoryFile } from "./_memory_file.ts";

async function concat(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return concatBytes(await Array.fromAsync(stream));
}

Deno.test("createMappedRamStreamReadable() serves regions as zeros without reading them", async () => {
  const file = createMemoryFile(new Uint8Array([7, 7, 7]));
  const items: MappedRamWriterItem[] = [
    { type: "stream-bytes", data: new Uint8Array([1, 2, 3]) },
    {
      type: "ram-mem-size",
      blocks: [
        { idstr: "a", usedLength: 3 * 4096 },
        { idstr: "b", usedLength: 4096 },
      ],
    },
    {
      type: "ram-page",
      block: "a",
      offset: 4096,
      data: new Uint8Array(4096).fill(5),
    },
    { type: "ram-eos" },
    { type: "stream-bytes", data: new Uint8Array([9, 9]) },
  ];
  await ReadableStream.from([items]).pipeTo(
    new MappedRamWriter(file, { offset: 3 }),
  );
  const reader = await MappedRamReader.open(file, 6);
  file.operations.length = 0;
  const bytes = await concat(
    createMappedRamStreamReadable(file, reader.blocks, { offset: 3 }),
  );
  const whole = file.bytes();
  assert.equal(bytes.byteLength, whole.byteLength - 3);
  // Same bytes outside the regions, zeros inside.
  const expected = whole.slice(3);
  for (const block of reader.blocks) {
    const { bitmapOffset, pagesOffset } = block.mappedRam!;
    expected.fill(0, bitmapOffset - 3, pagesOffset + block.usedLength - 3);
  }
  assert.deepEqual(bytes, expected);
  // Only the stream between the regions was read: no page, no bitmap.
  const read = file.operations.filter((op) => op.op === "read")
    .reduce((n, op) => n + (op.op === "read" ? op.size : 0), 0);
  assert.ok(read < 200, `read ${read} bytes`);
});

Deno.test("createMappedRamStreamReadable() reads a file without regions in chunks", async () => {
  const data = new Uint8Array(10_000).map((_, i) => i & 0xff);
  const file = createMemoryFile(data);
  const chunks = await Array.fromAsync(
    createMappedRamStreamReadable(file, [], { chunkBytes: 4096, offset: 100 }),
  );
  assert.deepEqual(chunks.map((c) => c.byteLength), [4096, 4096, 1708]);
  assert.deepEqual(
    await concat(ReadableStream.from(chunks)),
    data.subarray(100),
  );
});

Deno.test("createMappedRamStreamReadable() rejects bad options", () => {
  const file = createMemoryFile();
  assert.throws(
    () => createMappedRamStreamReadable(file, [], { offset: -1 }),
    RangeError,
  );
  assert.throws(
    () => createMappedRamStreamReadable(file, [], { chunkBytes: 0 }),
    RangeError,
  );
});
