import assert from "node:assert/strict";
import {
  applyRamRecord,
  DirtyPageScanner,
  GuestMemory,
  PageEncoderStream,
  PageSourceStream,
  type RamRecord,
  XbzrleCache,
  XbzrlePageEncoder,
} from "../../mod.ts";
import { createPrng } from "../_helpers/prng.ts";

const PAGE = 4096;

async function section(
  scanner: DirtyPageScanner,
  options: ConstructorParameters<typeof PageEncoderStream>[0] = {},
  batchPages = 7,
): Promise<RamRecord[]> {
  return (await Array.fromAsync(
    new PageSourceStream(scanner, { batchPages }).pipeThrough(
      new PageEncoderStream(options),
    ),
  )).flat();
}

Deno.test("DirtyPageScanner sends every page once, then only what was dirtied", () => {
  const memory = new GuestMemory([
    { idstr: "pc.ram", size: 10 * PAGE },
    { idstr: "pc.bios", size: 2 * PAGE },
  ]);
  const scanner = new DirtyPageScanner(memory);
  assert.ok(memory.dirtyLogging);
  const seen: string[] = [];
  for (let batch = scanner.next(4); batch; batch = scanner.next(4)) {
    for (const page of batch.pages) seen.push(`${batch.block.idstr}:${page}`);
  }
  assert.equal(seen.length, 12);
  assert.equal(scanner.remainingPages, 0);
  memory.write("pc.ram", 3 * PAGE, new Uint8Array([1]));
  memory.write("pc.bios", PAGE, new Uint8Array([1]));
  assert.equal(scanner.sync(), 2);
  assert.equal(scanner.syncCount, 2);
  const batches = [scanner.next(4)!, scanner.next(4)!];
  // The scan continues where it stopped (after pc.bios) and wraps.
  assert.deepEqual(batches.map((b) => [b.block.idstr, [...b.pages], b.round]), [
    ["pc.ram", [3], 1],
    ["pc.bios", [1], 1],
  ]);
  assert.equal(scanner.next(4), undefined);
  scanner.stop();
  assert.ok(!memory.dirtyLogging);
});

Deno.test("DirtyPageScanner counts rounds when the scan wraps", () => {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: 4 * PAGE }]);
  const scanner = new DirtyPageScanner(memory);
  assert.equal(scanner.next(4)!.round, 0);
  memory.write("pc.ram", 0, new Uint8Array([1]));
  scanner.sync();
  const batch = scanner.next(4)!;
  assert.equal(batch.round, 1);
  assert.equal(scanner.rounds, 1);
});

Deno.test("PageSourceStream stops when asked and the scanner keeps its place", async () => {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: 20 * PAGE }]);
  const scanner = new DirtyPageScanner(memory);
  let pulls = 0;
  const first = await Array.fromAsync(
    new PageSourceStream(scanner, {
      batchPages: 3,
      shouldStop: () => pulls++ >= 2,
    }),
  );
  assert.deepEqual(first.map((b) => [...b.pages]), [[0, 1, 2], [3, 4, 5]]);
  const rest = await Array.fromAsync(
    new PageSourceStream(scanner, { batchPages: 100 }),
  );
  assert.deepEqual([...rest[0]!.pages].slice(0, 2), [6, 7]);
  assert.equal(scanner.remainingPages, 0);
});

Deno.test("PageSourceStream reads pages only as fast as they are pulled", async () => {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: 64 * PAGE }]);
  const scanner = new DirtyPageScanner(memory);
  const reader = new PageSourceStream(scanner, { batchPages: 8 }).getReader();
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(
    scanner.remainingPages,
    64,
    "nothing is taken before the first read",
  );
  await reader.read();
  assert.equal(scanner.remainingPages, 56);
  await reader.cancel();
});

Deno.test("PageEncoderStream sends zero pages as ZERO and others as PAGE, then EOS", async () => {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: 4 * PAGE }]);
  memory.blocks[0]!.bytes[2 * PAGE + 5] = 7;
  const counters = { duplicate: 0, normal: 0, xbzrle: 0, unchanged: 0 };
  const records = await section(new DirtyPageScanner(memory), { counters });
  assert.deepEqual(records.map((r) => r.type), [
    "ram-zero",
    "ram-zero",
    "ram-page",
    "ram-zero",
    "ram-eos",
  ]);
  assert.deepEqual(counters, {
    duplicate: 3,
    normal: 1,
    xbzrle: 0,
    unchanged: 0,
  });
  const page = records[2]!;
  assert.ok(
    page.type === "ram-page" && page.offset === 2 * PAGE && page.data[5] === 7,
  );
});

Deno.test("PageEncoderStream uses XBZRLE only after the first round, as QEMU does", async () => {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: 8 * PAGE }]);
  const bytes = memory.blocks[0]!.bytes;
  createPrng(3).fill(bytes);
  const scanner = new DirtyPageScanner(memory);
  const xbzrle = new XbzrlePageEncoder({
    cache: new XbzrleCache(1 << 20, PAGE),
  });
  const counters = { duplicate: 0, normal: 0, xbzrle: 0, unchanged: 0 };
  const destination = new Uint8Array(bytes.byteLength);
  const dest = {
    pageSize: PAGE,
    pageView: (_: string, o: number) => destination.subarray(o, o + PAGE),
  };
  const pass = async () => {
    xbzrle.setGeneration(scanner.syncCount);
    for (const record of await section(scanner, { xbzrle, counters })) {
      applyRamRecord(record, dest);
    }
  };
  await pass(); // round 0: everything as PAGE, nothing cached
  assert.deepEqual(counters, {
    duplicate: 0,
    normal: 8,
    xbzrle: 0,
    unchanged: 0,
  });
  const flip = (at: number) => {
    bytes[at]! ^= 0xff;
    memory.markDirty("pc.ram", at, 1);
  };
  flip(PAGE + 10);
  scanner.sync();
  await pass(); // round 1: a cache miss, sent whole and cached
  assert.equal(counters.normal, 9);
  flip(PAGE + 20);
  flip(3 * PAGE);
  scanner.sync();
  await pass(); // page 1 hits the cache; page 3 misses
  assert.equal(counters.xbzrle, 1);
  assert.equal(counters.normal, 10);
  memory.write("pc.ram", PAGE + 20, new Uint8Array([bytes[PAGE + 20]!])); // same value
  scanner.sync();
  await pass();
  assert.equal(counters.unchanged, 1);
  assert.deepEqual(destination, bytes);
});

Deno.test("applyRamRecord() refuses a compressed page that was not inflated with a TypeError", () => {
  const ram = new Uint8Array(4096);
  const memory = { pageSize: 4096, pageView: () => ram };
  assert.throws(
    () =>
      applyRamRecord({
        type: "ram-compressed",
        block: "pc.ram",
        offset: 8192,
        data: new Uint8Array([0x78, 0x9c]),
      }, memory),
    new TypeError(
      'Cannot apply compressed page of block "pc.ram" at 8192: it was not inflated',
    ),
  );
});
