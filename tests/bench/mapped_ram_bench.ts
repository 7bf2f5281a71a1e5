/**
 * MappedRamWriter throughput against a plain sequential write of the same
 * bytes to the same kind of file: the writer should be limited by the disk,
 * not by the stage. Each benchmark writes 256 MiB of 4 KiB pages (random
 * content) per iteration and times only the writing, from the first byte
 * until the writer closed (every positioned write and the bitmap done), so
 * MB/s = 268.4 / (time per iteration in s).
 *
 * - "plain sequential write": `writeAt` in 4 MiB (or 1 MiB) chunks, one
 *   after the other, from the caller's buffer.
 * - "MappedRamWriter, pages in order": one block, 256-page batches as a
 *   first pass sends them; the writer gathers them into 4 MiB writes.
 * - "MappedRamWriter, a random half of the pages zero": a first pass over
 *   memory where every other page (at random) is a zero page, which writes
 *   nothing; the short gaps between stored pages are holes the writer fills
 *   with zeros to keep its writes large. 128 MiB of page data.
 * - "MappedRamWriter, pages in two interleaved passes": even pages, then
 *   odd pages; the second pass cannot fill its gaps (they hold data), so
 *   each page is one 4 KiB write — the worst case for batching, bounded by
 *   the cost of one positioned write.
 *
 * Run: deno bench --allow-read --allow-write tests/bench/mapped_ram_bench.ts
 */
import {
  MappedRamWriter,
  type MappedRamWriterItem,
  openRandomAccessFile,
  type RandomAccessFile,
} from "../../mod.ts";
import { createPrng } from "../_helpers/prng.ts";

const MIB = 1 << 20;
const PAGE = 4096;
const RAM = 256 * MIB;
const PAGES = RAM / PAGE;
const BATCH = 256;

const RAM_BYTES = createPrng(1).fill(new Uint8Array(RAM));

function pageBatches(
  order: "in order" | "half zero" | "interleaved",
): MappedRamWriterItem[][] {
  const indices: number[] = [];
  const zero = new Set<number>();
  if (order === "interleaved") {
    for (let i = 0; i < PAGES; i += 2) indices.push(i);
    for (let i = 1; i < PAGES; i += 2) indices.push(i);
  } else {
    const prng = createPrng(2);
    for (let i = 0; i < PAGES; i++) {
      indices.push(i);
      if (order === "half zero" && prng.nextInt(2) === 0) zero.add(i);
    }
  }
  const batches: MappedRamWriterItem[][] = [[
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: RAM }] },
    { type: "ram-eos" },
  ]];
  for (let at = 0; at < indices.length; at += BATCH) {
    batches.push(
      indices.slice(at, at + BATCH).map((index): MappedRamWriterItem =>
        zero.has(index)
          ? { type: "ram-zero", block: "pc.ram", offset: index * PAGE, fill: 0 }
          : {
            type: "ram-page",
            block: "pc.ram",
            offset: index * PAGE,
            data: RAM_BYTES.subarray(index * PAGE, (index + 1) * PAGE),
          }
      ),
    );
  }
  batches.push([{ type: "bitmap-flush" }, { type: "ram-eos" }]);
  return batches;
}

const IN_ORDER = pageBatches("in order");
const HALF_ZERO = pageBatches("half zero");
const INTERLEAVED = pageBatches("interleaved");

async function withFile(
  run: (file: RandomAccessFile) => Promise<void>,
): Promise<void> {
  const path = await Deno.makeTempFile({ prefix: "livemig-bench-" });
  const file = await openRandomAccessFile(path);
  try {
    await run(file);
  } finally {
    await file.close();
    await Deno.remove(path);
  }
}

Deno.bench({
  name: "plain sequential write, 256 MiB in 4 MiB writes",
  group: "mapped-ram",
  baseline: true,
  n: 5,
  warmup: 1,
  async fn(b) {
    await withFile(async (file) => {
      b.start();
      for (let at = 0; at < RAM; at += 4 * MIB) {
        await file.writeAt(at, RAM_BYTES.subarray(at, at + 4 * MIB));
      }
      b.end();
    });
  },
});

Deno.bench({
  name: "plain sequential write, 256 MiB in 1 MiB writes",
  group: "mapped-ram",
  n: 5,
  warmup: 1,
  async fn(b) {
    await withFile(async (file) => {
      b.start();
      for (let at = 0; at < RAM; at += MIB) {
        await file.writeAt(at, RAM_BYTES.subarray(at, at + MIB));
      }
      b.end();
    });
  },
});

Deno.bench({
  name: "MappedRamWriter, 256 MiB of pages in order",
  group: "mapped-ram",
  n: 5,
  warmup: 1,
  async fn(b) {
    await withFile(async (file) => {
      b.start();
      await ReadableStream.from(IN_ORDER).pipeTo(new MappedRamWriter(file));
      b.end();
    });
  },
});

Deno.bench({
  name: "MappedRamWriter, 256 MiB of pages, a random half of them zero",
  group: "mapped-ram",
  n: 5,
  warmup: 1,
  async fn(b) {
    await withFile(async (file) => {
      b.start();
      await ReadableStream.from(HALF_ZERO).pipeTo(new MappedRamWriter(file));
      b.end();
    });
  },
});

Deno.bench({
  name: "MappedRamWriter, 256 MiB of pages in two interleaved passes",
  group: "mapped-ram",
  n: 3,
  warmup: 1,
  async fn(b) {
    await withFile(async (file) => {
      b.start();
      await ReadableStream.from(INTERLEAVED).pipeTo(
        new MappedRamWriter(file),
      );
      b.end();
    });
  },
});
