/**
 * XBZRLE throughput. Every benchmark handles {@linkcode PAGES} pages of
 * 4 KiB per iteration (1 MiB), so GB/s of page bytes = 1.048576 / (time per
 * iteration in ms).
 *
 * Run: deno bench tests/bench/xbzrle_bench.ts
 */
import { decodeXbzrle, encodeXbzrle } from "../../lib/ram/xbzrle.ts";
import { XbzrleCache } from "../../lib/ram/xbzrle_cache.ts";
import { XbzrlePageEncoder } from "../../lib/ram/xbzrle_page_encoder.ts";

const PAGE = 4096;
const PAGES = 256;

function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

const random = prng(2024);

function randomPage(): Uint8Array {
  const page = new Uint8Array(PAGE);
  for (let i = 0; i < PAGE; i++) page[i] = random() & 0xff;
  return page;
}

/** Each byte changes (to a different value) with probability `fraction`. */
function changed(old: Uint8Array, fraction: number): Uint8Array {
  const next = old.slice();
  for (let i = 0; i < PAGE; i++) {
    if (random() / 2 ** 32 < fraction) next[i] = old[i]! ^ (1 + random() % 255);
  }
  return next;
}

interface Case {
  old: Uint8Array[];
  next: Uint8Array[];
  deltas: Uint8Array[];
}

function makeCase(fraction: number): Case {
  const old = Array.from({ length: PAGES }, randomPage);
  const next = old.map((page) => changed(page, fraction));
  const deltas = old.map((page, i) => {
    const result = encodeXbzrle(page, next[i]!);
    return result.kind === "encoded" ? result.delta : new Uint8Array(0);
  });
  return { old, next, deltas };
}

/** The same pages at byte offset 1, to measure the byte-by-byte path. */
function unaligned(pages: Uint8Array[]): Uint8Array[] {
  return pages.map((page) => {
    const view = new Uint8Array(PAGE + 1).subarray(1);
    view.set(page);
    return view;
  });
}

const UNCHANGED = makeCase(0);
const SPARSE = makeCase(0.01);
const DENSE = makeCase(0.25);
const ALL = makeCase(1);
const SPARSE_UNALIGNED = {
  old: unaligned(SPARSE.old),
  next: unaligned(SPARSE.next),
};
const output = new Uint8Array(PAGE);
const target = new Uint8Array(PAGE);

function encodeAll(c: { old: Uint8Array[]; next: Uint8Array[] }): void {
  for (let i = 0; i < PAGES; i++) {
    encodeXbzrle(c.old[i]!, c.next[i]!, { output });
  }
}

function decodeAll(c: Case): void {
  for (let i = 0; i < PAGES; i++) decodeXbzrle(c.deltas[i]!, target);
}

Deno.bench({
  name: "encode 0% changed (unchanged pages)",
  group: "encode",
  fn: () => encodeAll(UNCHANGED),
});

Deno.bench({
  name: "encode 1% of bytes changed at random positions",
  group: "encode",
  baseline: true,
  fn: () => encodeAll(SPARSE),
});

Deno.bench({
  name: "encode 1% changed, unaligned pages (byte path)",
  group: "encode",
  fn: () => encodeAll(SPARSE_UNALIGNED),
});

Deno.bench({
  name: "encode 25% of bytes changed (dense)",
  group: "encode",
  fn: () => encodeAll(DENSE),
});

Deno.bench({
  name: "encode 100% changed (overflow)",
  group: "encode",
  fn: () => encodeAll(ALL),
});

Deno.bench({
  name: "decode 1% of bytes changed",
  group: "decode",
  baseline: true,
  fn: () => decodeAll(SPARSE),
});

Deno.bench({
  name: "decode 25% of bytes changed (dense)",
  group: "decode",
  fn: () => decodeAll(DENSE),
});

const cache = new XbzrleCache(4 * 1024 * 1024, PAGE);
const pageEncoder = new XbzrlePageEncoder({ cache });
for (let i = 0; i < PAGES; i++) {
  pageEncoder.encodePage(i * PAGE, SPARSE.old[i]!);
}
let flip = false;

Deno.bench({
  name: "XbzrlePageEncoder hit, 1% changed (encode + cache update)",
  group: "page encoder",
  fn: () => {
    const pages = flip ? SPARSE.old : SPARSE.next;
    flip = !flip;
    for (let i = 0; i < PAGES; i++) pageEncoder.encodePage(i * PAGE, pages[i]!);
  },
});
