/**
 * Loading a 256 MiB mapped-ram file into guest memory, two ways:
 *
 * - "convert, then decode": convertMappedRamToStream() re-encodes every
 *   page into a stream, which MigrationDecoderStream decodes again (how
 *   DestinationMigration.incomingMappedRam() loaded files so far);
 * - "readMappedRamRecords": the pages come straight from their fixed
 *   offsets as records.
 *
 * Both apply every record to the same RAM image (allocated once, so first
 * touch stays out of the numbers). The file: one block, random pages, one
 * page in eight zero (bit clear), written once by MappedRamWriter.
 *
 * Run: deno bench --allow-read --allow-write tests/bench/mapped_ram_load_bench.ts
 */
import {
  convertMappedRamToStream,
  isPageCarrier,
  MappedRamEncoderStream,
  MappedRamWriter,
  MigrationDecoderStream,
  type MigrationRecord,
  openRandomAccessFile,
  RamImage,
  readMappedRamRecords,
} from "../../mod.ts";
import { createPrng } from "../_helpers/prng.ts";

const PAGE = 4096;
const RAM = 256 << 20;

const path = await Deno.makeTempFile({ prefix: "livemig-load-bench-" });
const file = await openRandomAccessFile(path);
{
  const ram = createPrng(1).fill(new Uint8Array(RAM));
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
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: RAM }] },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "section-part", sectionId: 2 },
  ];
  for (let offset = 0; offset < RAM; offset += PAGE) {
    if ((offset / PAGE) % 8 === 7) {
      records.push({ type: "ram-zero", block: "pc.ram", offset, fill: 0 });
    } else {
      const data = ram.subarray(offset, offset + PAGE);
      records.push({ type: "ram-page", block: "pc.ram", offset, data });
    }
  }
  records.push(
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "section-end", sectionId: 2 },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "eof" },
  );
  await ReadableStream.from([records])
    .pipeThrough(new MappedRamEncoderStream())
    .pipeTo(new MappedRamWriter(file));
}

const IMAGE = new RamImage();

async function apply(batches: AsyncIterable<MigrationRecord[]>) {
  for await (const batch of batches) {
    for (const record of batch) {
      if (record.type === "ram-mem-size" || isPageCarrier(record)) {
        IMAGE.apply(record);
      }
    }
  }
}

Deno.bench({
  name: "convert, then decode (256 MiB)",
  group: "load",
  baseline: true,
  async fn() {
    const { readable, writable } = new TransformStream<
      Uint8Array,
      Uint8Array
    >();
    await Promise.all([
      convertMappedRamToStream(file, writable, { decoder: { vmdesc: false } }),
      apply(readable.pipeThrough(
        new MigrationDecoderStream({ kind: "file", vmdesc: false }),
      )),
    ]);
  },
});

Deno.bench({
  name: "readMappedRamRecords (256 MiB)",
  group: "load",
  async fn() {
    await apply(readMappedRamRecords(file, { decoder: { vmdesc: false } }));
  },
});

globalThis.addEventListener("unload", () => {
  file.close().then(() => Deno.remove(path)).catch(() => {});
});
