import assert from "node:assert/strict";
import {
  decodeXbzrle,
  type MigrationRecord,
  ReencodeStream,
  type ReencodeStreamOptions,
} from "../../mod.ts";

const PAGE = 4096;

const BLOCKS: MigrationRecord = {
  type: "ram-mem-size",
  blocks: [
    { idstr: "pc.ram", usedLength: 4 * PAGE },
    { idstr: "pc.rom", usedLength: 2 * PAGE },
  ],
};

function page(fill: number, changes: Record<number, number> = {}): Uint8Array {
  const bytes = new Uint8Array(PAGE).fill(fill);
  for (const [at, value] of Object.entries(changes)) bytes[Number(at)] = value;
  return bytes;
}

function pageRecord(
  offset: number,
  data: Uint8Array,
  block = "pc.ram",
): MigrationRecord {
  return { type: "ram-page", block, offset, data };
}

async function reencode(
  records: MigrationRecord[],
  options: ReencodeStreamOptions = {},
): Promise<{ out: MigrationRecord[]; stage: ReencodeStream }> {
  const stage = new ReencodeStream(options);
  const out = (await Array.fromAsync(
    ReadableStream.from(records.map((record) => [record])).pipeThrough(stage),
  )).flat();
  return { out, stage };
}

function pages(out: MigrationRecord[]): string[] {
  return out.filter((r) =>
    r.type.startsWith("ram-") && r.type !== "ram-mem-size"
  )
    .map((r) => `${r.type}@${"offset" in r ? r.offset : ""}`);
}

Deno.test("ReencodeStream passes every other record through unchanged", async () => {
  const records: MigrationRecord[] = [
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
    BLOCKS,
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "device-tail", data: new Uint8Array([4, 0, 0, 0]) },
  ];
  const { out } = await reencode(records);
  assert.deepEqual(out, records);
});

Deno.test("ReencodeStream drops CONTINUE and sends zero pages as ZERO", async () => {
  const { out, stage } = await reencode([
    BLOCKS,
    {
      type: "ram-page",
      block: "pc.ram",
      offset: 0,
      data: page(0),
      continued: false,
    },
    {
      type: "ram-zero",
      block: "pc.ram",
      offset: PAGE,
      fill: 0,
      continued: true,
    },
    {
      type: "ram-zero",
      block: "pc.ram",
      offset: 2 * PAGE,
      fill: 5,
      continued: true,
    },
  ]);
  assert.deepEqual(out.slice(1), [
    { type: "ram-zero", block: "pc.ram", offset: 0, fill: 0 },
    { type: "ram-zero", block: "pc.ram", offset: PAGE, fill: 0 },
    { type: "ram-page", block: "pc.ram", offset: 2 * PAGE, data: page(5) },
  ]);
  assert.deepEqual(stage.stats().received, {
    duplicate: 2,
    normal: 1,
    xbzrle: 0,
    compressed: 0,
    unchanged: 0,
  });
  assert.deepEqual(stage.stats().sent, {
    duplicate: 2,
    normal: 1,
    xbzrle: 0,
    compressed: 0,
    unchanged: 0,
  });
});

Deno.test("ReencodeStream applies incoming XBZRLE deltas and sends the page whole", async () => {
  const { out } = await reencode([
    BLOCKS,
    pageRecord(PAGE, page(1)),
    // A source's delta: byte 10 becomes 0x77 (skip 10, 1 literal byte).
    {
      type: "ram-xbzrle",
      block: "pc.ram",
      offset: PAGE,
      delta: new Uint8Array([10, 1, 0x77]),
    },
  ]);
  assert.deepEqual(out[2], pageRecord(PAGE, page(1, { 10: 0x77 })));
});

Deno.test("ReencodeStream starts XBZRLE after the first complete round, as QEMU", async () => {
  const { out, stage } = await reencode([
    BLOCKS,
    pageRecord(0, page(1)),
    pageRecord(PAGE, page(2)),
    pageRecord(0, page(2, { 0: 9 }), "pc.rom"),
    // round 1: XBZRLE started, every page a cache miss
    pageRecord(0, page(1, { 5: 5 })),
    pageRecord(0, page(2, { 0: 9 }), "pc.rom"),
    // round 2: hits
    pageRecord(0, page(1, { 5: 6 })),
    pageRecord(0, page(2, { 0: 9 }), "pc.rom"),
  ], { xbzrle: true });
  assert.deepEqual(pages(out), [
    "ram-page@0",
    "ram-page@4096",
    "ram-page@0",
    "ram-page@0",
    "ram-page@0",
    "ram-xbzrle@0",
  ]);
  const stats = stage.stats();
  assert.equal(stats.rounds, 2);
  assert.equal(stats.sent.unchanged, 1, "the unchanged pc.rom page");
  assert.deepEqual(
    { ...stats["xbzrle-cache"], "encoding-rate": 0 },
    {
      "cache-size": 64 * 1024 * 1024,
      "cache-miss": 2,
      // closed at the end, over the last round: no miss among its pages
      "cache-miss-rate": 0,
      "encoding-rate": 0,
      // 1 + "pc.ram" name bytes (no CONTINUE after pc.rom) + 1 + 2 +
      // the delta (skip 5, 1 literal byte: 3 bytes)
      bytes: 7 + 1 + 2 + 3,
      overflow: 0,
      pages: 2,
    },
  );
  const delta = (out[6] as { delta: Uint8Array }).delta;
  const target = page(1, { 5: 5 });
  decodeXbzrle(delta, target);
  assert.deepEqual(target, page(1, { 5: 6 }));
});

Deno.test("ReencodeStream leaves the XBZRLE cache alone in the END section", async () => {
  const { out } = await reencode([
    BLOCKS,
    pageRecord(0, page(1)),
    pageRecord(0, page(1)), // round 1: cached
    { type: "section-end", sectionId: 2 },
    pageRecord(0, page(1, { 1: 7 })), // round 2, final pass: delta from the cache
    pageRecord(0, page(1, { 1: 7 })), // round 3: the cache still holds the old page
  ], { xbzrle: true });
  assert.deepEqual(pages(out), [
    "ram-page@0",
    "ram-page@0",
    "ram-xbzrle@0",
    "ram-xbzrle@0",
  ]);
});

Deno.test("ReencodeStream caches a zero page so later small changes go out as XBZRLE", async () => {
  const { out } = await reencode([
    BLOCKS,
    pageRecord(0, page(1)),
    { type: "ram-zero", block: "pc.ram", offset: 0, fill: 0 }, // round 1
    pageRecord(0, page(0, { 100: 1 })), // round 2
  ], { xbzrle: true });
  assert.deepEqual(pages(out), ["ram-page@0", "ram-zero@0", "ram-xbzrle@0"]);
});

Deno.test("ReencodeStream sends no XBZRLE once postcopy listens", async () => {
  const { out } = await reencode([
    BLOCKS,
    pageRecord(0, page(1)),
    pageRecord(0, page(1, { 1: 7 })), // round 1: cached
    { type: "command", command: "POSTCOPY_LISTEN" },
    pageRecord(0, page(1, { 1: 8 })), // round 2: would be XBZRLE
  ], { xbzrle: true });
  assert.deepEqual(pages(out), ["ram-page@0", "ram-page@0", "ram-page@0"]);
});

Deno.test("ReencodeStream sends an inflated compressed page whole", async () => {
  const { out, stage } = await reencode([
    BLOCKS,
    {
      type: "ram-compressed",
      block: "pc.ram",
      offset: 0,
      data: new Uint8Array([1]),
      page: page(3),
    },
  ]);
  assert.deepEqual(out[1], pageRecord(0, page(3)));
  assert.equal(stage.stats().received.compressed, 1);
});

Deno.test("ReencodeStream sends copies, not views of its image", async () => {
  const first = page(1);
  const { out, stage } = await reencode([
    BLOCKS,
    pageRecord(0, first),
    pageRecord(0, page(2)),
  ]);
  assert.deepEqual((out[1] as { data: Uint8Array }).data, page(1));
  assert.deepEqual(stage.image?.read("pc.ram").subarray(0, PAGE), page(2));
});

Deno.test("ReencodeStream refuses pages of an unannounced block", async () => {
  await assert.rejects(
    reencode([BLOCKS, pageRecord(0, page(1), "pc.bios")]),
    (error) =>
      error instanceof TypeError && /block "pc\.bios"/.test(error.message),
  );
});

Deno.test("ReencodeStream checks the cache size", () => {
  assert.throws(
    () => new ReencodeStream({ xbzrleCacheSize: 12288 }),
    RangeError,
  );
});
