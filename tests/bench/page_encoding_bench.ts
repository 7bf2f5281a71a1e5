/**
 * The source's page pipeline on warm guest memory (every page touched
 * before the first iteration, so page faults stay out of the numbers):
 *
 * - `isZeroPage()` over every page of a zero and of a random RAM;
 * - PageSourceStream → PageEncoderStream → MigrationEncoderStream → a sink
 *   that drops the bytes, for a RAM of random (non-zero) pages and for a
 *   zero RAM;
 * - a plain copy of every page into a reused buffer, the floor any encoder
 *   that copies each page once stands on.
 *
 * Each benchmark handles {@linkcode RAM_BYTES} of guest RAM per iteration,
 * so GB/s = RAM_BYTES / 1e9 / (time per iteration in s).
 *
 * `deno bench tests/bench/page_encoding_bench.ts` gives the usual table;
 * `deno run tests/bench/page_encoding_bench.ts [runs] [filter]` prints the
 * GB/s of each run and their range, for the cases whose name contains
 * `filter`.
 */
import {
  DirtyPageScanner,
  GuestMemory,
  isZeroPage,
  MigrationEncoderStream,
  PageEncoderStream,
  PageSourceStream,
} from "../../mod.ts";
import { createPrng } from "../_helpers/prng.ts";

const PAGE = 4096;
const RAM_BYTES = 256 << 20;
const GB = (RAM_BYTES / 1e9).toFixed(3);

/** A guest RAM of non-zero pages: random data, each page distinct. */
function randomMemory(): GuestMemory {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: RAM_BYTES }]);
  const bytes = memory.blocks[0]!.bytes;
  const prng = createPrng(7);
  const pattern = prng.fill(new Uint8Array(1 << 20));
  for (let at = 0; at < RAM_BYTES; at += pattern.byteLength) {
    bytes.set(pattern, at);
  }
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, RAM_BYTES / 4);
  for (let at = 0; at < RAM_BYTES; at += PAGE) {
    words[at >>> 2] = prng.nextUint32() | 1;
  }
  return memory;
}

/** A guest RAM of zero pages, touched so that it is really mapped. */
function zeroMemory(): GuestMemory {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: RAM_BYTES }]);
  const bytes = memory.blocks[0]!.bytes;
  bytes.fill(1);
  bytes.fill(0);
  return memory;
}

const RANDOM = randomMemory();
const ZERO = zeroMemory();

/**
 * Runs the source pipeline over all of `memory`; returns bytes produced.
 * With `release`, the sink gives each chunk back to the encoder once it is
 * done with it, as a transport does after its write resolved.
 */
async function encodePipeline(
  memory: GuestMemory,
  release: boolean,
): Promise<number> {
  let produced = 0;
  const encoder = new MigrationEncoderStream();
  await new PageSourceStream(new DirtyPageScanner(memory))
    .pipeThrough(new PageEncoderStream())
    .pipeThrough(encoder)
    .pipeTo(
      new WritableStream({
        write(chunk) {
          produced += chunk.byteLength;
          if (release) encoder.release(chunk);
        },
      }),
    );
  memory.stopDirtyLog();
  return produced;
}

/** Checks every page with isZeroPage(); returns the zero pages. */
function scanZeroPages(memory: GuestMemory): number {
  const bytes = memory.blocks[0]!.bytes;
  let zero = 0;
  for (let at = 0; at < bytes.byteLength; at += PAGE) {
    if (isZeroPage(bytes.subarray(at, at + PAGE))) zero++;
  }
  return zero;
}

const COPY_TARGET = new Uint8Array(1 << 20);

/** Copies every page into a reused 1 MiB buffer. */
function copyPages(memory: GuestMemory): number {
  const bytes = memory.blocks[0]!.bytes;
  let at = 0;
  for (let from = 0; from < bytes.byteLength; from += PAGE) {
    if (at === COPY_TARGET.byteLength) at = 0;
    COPY_TARGET.set(bytes.subarray(from, from + PAGE), at);
    at += PAGE;
  }
  return bytes.byteLength;
}

const CASES: { name: string; group: string; fn: () => unknown }[] = [
  {
    name: `isZeroPage, zero RAM (${GB} GB)`,
    group: "zero-detection",
    fn: () => scanZeroPages(ZERO),
  },
  {
    name: `isZeroPage, random RAM (${GB} GB)`,
    group: "zero-detection",
    fn: () => scanZeroPages(RANDOM),
  },
  {
    name: `copy each page into a reused buffer (${GB} GB)`,
    group: "page-encoding",
    fn: () => copyPages(RANDOM),
  },
  {
    name: `source pipeline, random RAM (${GB} GB)`,
    group: "page-encoding",
    fn: () => encodePipeline(RANDOM, false),
  },
  {
    name: `source pipeline, random RAM, chunks released (${GB} GB)`,
    group: "page-encoding",
    fn: () => encodePipeline(RANDOM, true),
  },
  {
    name: `source pipeline, zero RAM (${GB} GB)`,
    group: "page-encoding",
    fn: () => encodePipeline(ZERO, false),
  },
];

if (import.meta.main) {
  const runs = Number(Deno.args[0] ?? "10");
  const filter = Deno.args[1] ?? "";
  for (const { name, fn } of CASES) {
    if (!name.includes(filter)) continue;
    await fn(); // warm-up
    const rates: number[] = [];
    for (let i = 0; i < runs; i++) {
      const start = performance.now();
      await fn();
      rates.push(RAM_BYTES / 1e6 / (performance.now() - start));
    }
    rates.sort((a, b) => a - b);
    const median = rates[rates.length >> 1]!;
    // deno-lint-ignore no-console
    console.log(
      `${name}: ${median.toFixed(2)} GB/s median, ${rates[0]!.toFixed(2)}–${
        rates[rates.length - 1]!.toFixed(2)
      } over ${runs} runs`,
    );
  }
} else {
  for (const { name, group, fn } of CASES) {
    Deno.bench({ name, group, fn: async () => void await fn() });
  }
}
