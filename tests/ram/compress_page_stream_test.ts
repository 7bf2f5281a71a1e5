import assert from "node:assert/strict";
import {
  CompressPageStream,
  encodeMigrationRecords,
  MigrationDecoderStream,
  type MigrationRecord,
  type RamRecord,
} from "../../mod.ts";
import { createPrng } from "../_helpers/prng.ts";

const PAGE = 4096;

Deno.test("CompressPageStream makes COMPRESS_PAGE records that decode to the same pages", async () => {
  const prng = createPrng(4);
  const text = new TextEncoder().encode("livemig ".repeat(PAGE / 8));
  const pages: RamRecord[] = [
    { type: "ram-page", block: "pc.ram", offset: 0, data: text },
    { type: "ram-zero", block: "pc.ram", offset: PAGE, fill: 0 },
    {
      type: "ram-page",
      block: "pc.ram",
      offset: 2 * PAGE,
      data: prng.fill(new Uint8Array(PAGE)),
    },
  ];
  const [compressed] = await Array.fromAsync(
    ReadableStream.from([pages]).pipeThrough(
      new CompressPageStream({ concurrency: 2 }),
    ),
  );
  assert.deepEqual(compressed!.map((r) => r.type), [
    "ram-compressed",
    "ram-zero",
    "ram-page",
  ]);
  assert.ok((compressed![0] as { data: Uint8Array }).data.byteLength < 200);
  const records: MigrationRecord[] = [
    { type: "header", version: 3 },
    {
      type: "section-start",
      sectionId: 2,
      idstr: "ram",
      instanceId: 0,
      versionId: 4,
    },
    {
      type: "ram-mem-size",
      blocks: [{ idstr: "pc.ram", usedLength: 3 * PAGE }],
    },
    ...compressed!,
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "eof" },
  ];
  const decoded = (await Array.fromAsync(
    ReadableStream.from([encodeMigrationRecords(records)])
      .pipeThrough(new MigrationDecoderStream({ vmdesc: false })),
  )).flat();
  const page = decoded.find((r) => r.type === "ram-compressed");
  assert.ok(page?.type === "ram-compressed");
  assert.deepEqual(page.page, text);
});

Deno.test("CompressPageStream refuses a bad concurrency", () => {
  assert.throws(() => new CompressPageStream({ concurrency: 0 }), RangeError);
});
