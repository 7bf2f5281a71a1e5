/**
 * Conversions between QEMU's stream format and the mapped-ram layout, over
 * every stream recorded from QEMU 7.2 (fixtures/qemu/<case>/stream.bin):
 * stream → mapped-ram → stream keeps the RAM and the device state, and a
 * real QEMU 7.2 loads the result.
 */
import assert from "node:assert/strict";
import {
  analyzeMappedRamFile,
  analyzeMigrationStream,
  concatBytes,
  convertMappedRamToStream,
  convertStreamToMappedRam,
  encodeMigrationRecords,
  isMappedRamFile,
  MappedRamEncoderStream,
  MappedRamWriter,
  type MappedRamWriterItem,
  MigrationDecoderStream,
  type MigrationRecord,
  NotSupportedError,
  openRandomAccessFile,
  type RandomAccessFile,
  StreamFormatError,
} from "../../mod.ts";
import { firstDifference } from "../_helpers/golden.ts";
import {
  buildFirmware,
  pmemsave,
  qemuSkipReason,
  sha256Hex,
  startQemu,
  waitForStatus,
  zeroLegacyWindow,
} from "../_helpers/qemu.ts";

const FIXTURES = new URL("../../fixtures/qemu/", import.meta.url);
const CASES = ["idle", "dirty", "xbzrle", "return-path"];
const SKIP_REASON = qemuSkipReason();

/** Decodes a whole stream; returns its records and where its device tail starts. */
async function decode(
  bytes: Uint8Array,
): Promise<{ records: MigrationRecord[]; tailOffset: number }> {
  const stage = new MigrationDecoderStream({ kind: "file" });
  const records = (await Array.fromAsync(
    ReadableStream.from([bytes]).pipeThrough(stage),
  )).flat();
  return { records, tailOffset: stage.decoder.deviceTail!.offset };
}

async function toMappedRam(
  stream: Uint8Array,
  file: RandomAccessFile,
): ReturnType<typeof convertStreamToMappedRam> {
  return await convertStreamToMappedRam(ReadableStream.from([stream]), file);
}

async function toStream(
  file: RandomAccessFile,
  options: Parameters<typeof convertMappedRamToStream>[2] = {},
): Promise<
  {
    bytes: Uint8Array<ArrayBuffer>;
    result: Awaited<ReturnType<typeof convertMappedRamToStream>>;
  }
> {
  const chunks: Uint8Array[] = [];
  const result = await convertMappedRamToStream(
    file,
    new WritableStream({ write: (chunk) => void chunks.push(chunk.slice()) }),
    options,
  );
  return { bytes: concatBytes(chunks), result };
}

async function withTempFile<T>(
  run: (file: RandomAccessFile, path: string) => Promise<T>,
): Promise<T> {
  const path = await Deno.makeTempFile({ prefix: "livemig-convert-" });
  const file = await openRandomAccessFile(path);
  try {
    return await run(file, path);
  } finally {
    await file.close();
    await Deno.remove(path);
  }
}

for (const name of CASES) {
  const dir = new URL(`${name}/`, FIXTURES);
  const stream = await Deno.readFile(new URL("stream.bin", dir));
  const ramSha256 = Deno.readTextFileSync(new URL("ram.sha256", dir)).trim()
    .split(/\s+/)[0];

  Deno.test(`convert "${name}": stream → mapped-ram → stream keeps RAM and device state`, async () => {
    const original = await analyzeMigrationStream(
      ReadableStream.from([stream]),
      {
        keepRam: true,
      },
    );
    const source = await decode(stream);
    const sourceTail = stream.subarray(source.tailOffset);
    await withTempFile(async (file, path) => {
      const written = await toMappedRam(stream, file);
      assert.deepEqual(
        written.droppedCommands,
        name === "return-path" ? ["OPEN_RETURN_PATH", "PING"] : [],
      );
      assert.equal(
        written.storedPages + written.zeroPages,
        original.analysis.ram.total / 4096,
      );
      assert.equal(await file.size(), written.size);
      assert.ok(await isMappedRamFile(file));

      // The mapped-ram file ends with the original device state, EOF and
      // vmdesc, byte for byte.
      const fileBytes = await Deno.readFile(path);
      assert.equal(
        firstDifference(
          fileBytes.subarray(fileBytes.byteLength - sourceTail.byteLength),
          sourceTail,
        ),
        -1,
      );

      // Its own analysis sees the same machine, blocks, RAM and devices.
      const mapped = await analyzeMappedRamFile(file, { keepRam: true });
      assert.equal(mapped.analysis.format, "mapped-ram");
      assert.equal(mapped.analysis.bytes, written.size);
      assert.equal(mapped.analysis.machine, original.analysis.machine);
      assert.deepEqual(mapped.analysis.capabilities, ["mapped-ram"]);
      assert.deepEqual(mapped.analysis.devices, original.analysis.devices);
      assert.deepEqual(mapped.analysis.vmdesc, original.analysis.vmdesc);
      assert.deepEqual(
        mapped.analysis.sections,
        { start: 1, part: 1, end: 1, full: 27, footer: 30 },
      );
      assert.deepEqual(
        mapped.analysis["mapped-ram"].blocks.map((b) => b["pages-stored"]),
        mapped.analysis.ram.blocks.map((b) => b.normal),
      );
      for (const block of original.ram!.blocks) {
        assert.equal(
          firstDifference(
            mapped.ram!.read(block.idstr),
            original.ram!.read(block.idstr),
          ),
          -1,
          `mapped-ram block ${block.idstr}`,
        );
      }

      // And back to a stream.
      const { bytes, result } = await toStream(file);
      assert.equal(result.bytes, bytes.byteLength);
      assert.equal(result.pages, written.storedPages);
      assert.equal(result.zeroPages, written.zeroPages);
      const back = await analyzeMigrationStream(ReadableStream.from([bytes]), {
        keepRam: true,
      });
      assert.deepEqual(back.analysis.capabilities, []);
      assert.deepEqual(back.analysis.commands, {});
      assert.equal(back.analysis.machine, original.analysis.machine);
      assert.deepEqual(
        back.analysis.ram.blocks.map(({ name, size }) => ({ name, size })),
        original.analysis.ram.blocks.map(({ name, size }) => ({ name, size })),
      );
      assert.equal(back.analysis.ram.xbzrle, 0);
      assert.equal(back.analysis.ram.normal + back.analysis.ram.zero, 4144);
      for (const block of original.ram!.blocks) {
        assert.equal(
          firstDifference(
            back.ram!.read(block.idstr),
            original.ram!.read(block.idstr),
          ),
          -1,
          `block ${block.idstr}`,
        );
      }
      const pcRam = zeroLegacyWindow(
        back.ram!.read("pc.ram") as Uint8Array<ArrayBuffer>,
      );
      assert.equal(await sha256Hex(pcRam), ramSha256);

      const final = await decode(bytes);
      assert.equal(
        firstDifference(bytes.subarray(final.tailOffset), sourceTail),
        -1,
        "device state, EOF and vmdesc are byte-identical",
      );
      const states = (records: MigrationRecord[]) =>
        records.filter((r) => r.type === "device-state");
      assert.deepEqual(states(final.records), states(source.records));
    });
  });
}

Deno.test("convert: a second round trip writes the identical mapped-ram file", async () => {
  const stream = await Deno.readFile(new URL("dirty/stream.bin", FIXTURES));
  await withTempFile(async (first, firstPath) => {
    await toMappedRam(stream, first);
    const { bytes } = await toStream(first);
    await withTempFile(async (second, secondPath) => {
      await toMappedRam(bytes, second);
      const a = await Deno.readFile(firstPath);
      const b = await Deno.readFile(secondPath);
      assert.equal(firstDifference(a, b), -1);
    });
  });
});

Deno.test("convert: a mapped-ram stream may start at a file offset", async () => {
  const stream = await Deno.readFile(new URL("idle/stream.bin", FIXTURES));
  await withTempFile(async (file) => {
    const prefix = new Uint8Array(1000).fill(0xab);
    await file.writeAt(0, prefix);
    const written = await convertStreamToMappedRam(
      ReadableStream.from([stream]),
      file,
      { writer: { offset: 1000 } },
    );
    assert.deepEqual(await file.readAt(0, 1000), prefix);
    assert.equal(written.blocks[0]!.mappedRam!.pagesOffset, 0x100000);
    assert.equal(await isMappedRamFile(file), false);
    assert.ok(await isMappedRamFile(file, { offset: 1000 }));
    const mapped = await analyzeMappedRamFile(file, { offset: 1000 });
    assert.equal(mapped.analysis.bytes, written.size - 1000);
    const { bytes } = await toStream(file, { offset: 1000 });
    assert.equal(bytes.byteLength, stream.byteLength); // same records as idle
    assert.equal(firstDifference(bytes, stream), -1);
  });
});

Deno.test("convertStreamToMappedRam() refuses what mapped-ram cannot hold", async () => {
  const head: MigrationRecord[] = [
    { type: "header", version: 3 },
    { type: "configuration", machine: "pc-i440fx-7.2" },
  ];
  const ram: MigrationRecord[] = [
    {
      type: "section-start",
      sectionId: 2,
      idstr: "ram",
      instanceId: 0,
      versionId: 4,
    },
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 4096 }] },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "eof" },
  ];
  const cases: [string, MigrationRecord[], RegExp][] = [
    ["no CONFIGURATION", [head[0]!, ...ram], /no CONFIGURATION/],
    ["a postcopy stream", [
      ...head,
      { type: "command", command: "POSTCOPY_ADVISE" },
      ...ram,
    ], /POSTCOPY_ADVISE belongs to postcopy/],
    ["a mapped-ram stream", [
      head[0]!,
      {
        type: "configuration",
        machine: "pc-i440fx-7.2",
        capabilities: ["mapped-ram"],
      },
    ], /already a mapped-ram stream/],
    ["a stream without RAM", [...head, { type: "eof" }], /no RAM START/],
  ];
  for (const [what, records, message] of cases) {
    await withTempFile(async (file) => {
      await assert.rejects(
        convertStreamToMappedRam(
          ReadableStream.from([encodeMigrationRecords(records)]),
          file,
          { decoder: { kind: "prefix", vmdesc: false } },
        ),
        (error) =>
          error instanceof NotSupportedError && message.test(error.message),
        what,
      );
    });
  }
});

Deno.test("convertMappedRamToStream() refuses a plain stream", async () => {
  const stream = await Deno.readFile(new URL("idle/stream.bin", FIXTURES));
  await withTempFile(async (file) => {
    await file.writeAt(0, stream);
    assert.equal(await isMappedRamFile(file), false);
    await assert.rejects(
      toStream(file),
      (error) =>
        error instanceof StreamFormatError && error.offset === 8 &&
        /does not list the "mapped-ram" capability/.test(error.message),
    );
  });
});

Deno.test("convertMappedRamToStream() refuses page records in a mapped-ram file's stream", async () => {
  await withTempFile(async (file) => {
    const part = encodeMigrationRecords([
      { type: "section-part", sectionId: 2 },
      {
        type: "ram-page",
        block: "pc.ram",
        offset: 0,
        data: new Uint8Array(4096),
      },
      { type: "ram-eos" },
      { type: "section-footer", sectionId: 2 },
    ]);
    const writer = new MappedRamWriter(file);
    const records: MigrationRecord[] = [
      { type: "header", version: 3 },
      { type: "configuration", machine: "pc-i440fx-7.2" },
      {
        type: "section-start",
        sectionId: 2,
        idstr: "ram",
        instanceId: 0,
        versionId: 4,
      },
      { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 4096 }] },
      { type: "ram-eos" },
      { type: "section-footer", sectionId: 2 },
    ];
    const items = (await Array.fromAsync(
      ReadableStream.from([records]).pipeThrough(new MappedRamEncoderStream()),
    )).flat();
    const end = encodeMigrationRecords([{ type: "eof" }]);
    await ReadableStream.from<MappedRamWriterItem[]>([
      items,
      [{ type: "stream-bytes", data: part }, {
        type: "stream-bytes",
        data: end,
      }],
    ]).pipeTo(writer);
    const partAt = writer.position - end.byteLength - part.byteLength;
    await assert.rejects(
      toStream(file, { decoder: { vmdesc: false } }),
      (error) =>
        error instanceof StreamFormatError && error.offset === partAt + 5 &&
        /"ram-page" record/.test(error.message),
    );
  });
});

Deno.test("isMappedRamFile() says no to anything but a mapped-ram stream", async () => {
  await withTempFile(async (file) => {
    assert.equal(await isMappedRamFile(file), false);
    await file.writeAt(0, new TextEncoder().encode("QEVM but not really"));
    assert.equal(await isMappedRamFile(file), false);
    await file.truncate(0);
    await file.writeAt(
      0,
      encodeMigrationRecords([{ type: "header", version: 3 }, { type: "eof" }]),
    );
    assert.equal(await isMappedRamFile(file), false);
  });
});

Deno.test("MappedRamEncoderStream announces mapped-ram and flushes bitmaps at END", async () => {
  const batches = await Array.fromAsync(
    ReadableStream.from<MigrationRecord[]>([[
      { type: "header", version: 3 },
      {
        type: "configuration",
        machine: "m",
        capabilities: ["x-ignore-shared"],
      },
      { type: "section-part", sectionId: 2 },
      { type: "ram-eos" },
      { type: "section-footer", sectionId: 2 },
    ], [
      { type: "section-end", sectionId: 2 },
      { type: "ram-eos" },
      { type: "section-footer", sectionId: 2 },
    ]]).pipeThrough(new MappedRamEncoderStream()),
  );
  const items = batches.flat();
  assert.deepEqual(batches.map((batch) => batch.map((item) => item.type)), [
    ["stream-bytes", "ram-eos", "stream-bytes"],
    ["stream-bytes", "bitmap-flush", "ram-eos", "stream-bytes"],
  ]);
  const [head] = items;
  assert.ok(head?.type === "stream-bytes");
  assert.deepEqual(
    head.data,
    encodeMigrationRecords([
      { type: "header", version: 3 },
      {
        type: "configuration",
        machine: "m",
        capabilities: ["x-ignore-shared", "mapped-ram"],
      },
      { type: "section-part", sectionId: 2 },
    ]),
  );
});

Deno.test("analyzeMappedRamFile() counts stored pages from the bitmaps", async () => {
  const stream = await Deno.readFile(new URL("dirty/stream.bin", FIXTURES));
  await withTempFile(async (file) => {
    const written = await toMappedRam(stream, file);
    const { analysis } = await analyzeMappedRamFile(file);
    assert.equal(analysis.ram.normal, written.storedPages);
    assert.equal(analysis.ram.zero, written.zeroPages);
    assert.equal(analysis.ram.eos, 3);
    assert.deepEqual(
      analysis["mapped-ram"].blocks.map((b) => [
        b.name,
        b["header-offset"] + 28,
        b["bitmap-offset"],
        b["pages-offset"],
      ]),
      written.blocks.map((b) => [
        b.idstr,
        b.mappedRam!.bitmapOffset,
        b.mappedRam!.bitmapOffset,
        b.mappedRam!.pagesOffset,
      ]),
    );
  });
});

Deno.test({
  name: `QEMU 7.2 loads every fixture converted to mapped-ram and back${
    SKIP_REASON ? ` (skipped: ${SKIP_REASON})` : ""
  }`,
  ignore: SKIP_REASON !== undefined,
  async fn() {
    const work = await Deno.makeTempDir({ prefix: "livemig-convert-qemu-" });
    try {
      for (const name of CASES) {
        const dir = new URL(`${name}/`, FIXTURES);
        const scenario = JSON.parse(
          await Deno.readTextFile(new URL("scenario.json", dir)),
        );
        const expected = (await Deno.readTextFile(new URL("ram.sha256", dir)))
          .trim().split(/\s+/)[0];
        const firmware = await buildFirmware(
          scenario.firmware.defines,
          await Deno.makeTempDir({ dir: work }),
        );
        const path = `${work}/${name}.bin`;
        await withTempFile(async (file) => {
          await toMappedRam(
            await Deno.readFile(new URL("stream.bin", dir)),
            file,
          );
          await Deno.writeFile(path, (await toStream(file)).bytes);
        });
        await using destination = await startQemu({
          firmware,
          ramMiB: scenario.ramMiB,
          machine: scenario.machine,
          incoming: `exec:cat '${path}'`,
        });
        const info = await waitForStatus(destination.qmp, "completed", 60_000);
        assert.equal(info.status, "completed", name);
        const ram = zeroLegacyWindow(
          await pmemsave(
            destination.qmp,
            `${destination.tempDir}/ram.bin`,
            scenario.ramBytes,
          ),
        );
        assert.equal(await sha256Hex(ram), expected, `${name}: RAM after load`);
      }
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  },
});
