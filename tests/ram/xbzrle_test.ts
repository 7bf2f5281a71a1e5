import assert from "node:assert/strict";
import { StreamFormatError } from "../../lib/errors.ts";
import {
  checkXbzrleDelta,
  decodeXbzrle,
  encodeXbzrle,
  type XbzrleEncodeResult,
} from "../../lib/ram/xbzrle.ts";

const PAGE = 4096;

// ---------------------------------------------------------------------------
// Helpers: a tiny seeded PRNG and two deliberately naive oracles written
// straight from the spec, one byte at a time.

/** mulberry32: a small seeded PRNG returning integers in 0..2^32-1. */
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

type OracleResult = "unchanged" | "overflow" | number[];

/** The encoding algorithm of the spec, literally. */
function oracleEncode(
  old: Uint8Array,
  next: Uint8Array,
  limit: number,
): OracleResult {
  const n = old.length;
  const out: number[] = [];
  const uleb = (value: number) => {
    assert.ok(value <= 0x3fff);
    if (value < 0x80) out.push(value);
    else out.push((value & 0x7f) | 0x80, value >> 7);
  };
  let i = 0;
  while (i < n) {
    if (out.length + 2 > limit) return "overflow";
    let z = 0;
    while (i + z < n && old[i + z] === next[i + z]) z++;
    i += z;
    if (z === n) return "unchanged";
    if (i === n) return out;
    uleb(z);
    if (out.length + 2 > limit) return "overflow";
    let k = 0;
    while (i + k < n && old[i + k] !== next[i + k]) k++;
    uleb(k);
    if (out.length + k > limit) return "overflow";
    for (let j = 0; j < k; j++) out.push(next[i + j]!);
    i += k;
  }
  return out;
}

/**
 * The decoding rules of the spec, literally, applied as it goes onto a
 * copy; returns the patched page or the position of the failing byte.
 */
function oracleDecode(
  delta: Uint8Array,
  page: Uint8Array,
): { page: Uint8Array } | { failAt: number } {
  const out = page.slice();
  const s = delta.length;
  const n = page.length;
  let i = 0;
  let d = 0;
  const uleb = (): number | { failAt: number } => {
    const first = delta[i]!;
    if (first < 0x80) {
      i += 1;
      return first;
    }
    const second = delta[i + 1]!;
    if (second & 0x80) return { failAt: i + 1 };
    i += 2;
    return (first & 0x7f) | (second << 7);
  };
  while (i < s) {
    if (s - i < 2) return { failAt: i };
    const pairAt = i;
    const z = uleb();
    if (typeof z !== "number") return z;
    if (pairAt !== 0 && z === 0) return { failAt: pairAt };
    d += z;
    if (d > n) return { failAt: pairAt };
    if (s - i < 2) return { failAt: i };
    const kAt = i;
    const k = uleb();
    if (typeof k !== "number") return k;
    if (k === 0) return { failAt: kAt };
    if (d + k > n || i + k > s) return { failAt: kAt };
    for (let j = 0; j < k; j++) out[d + j] = delta[i + j]!;
    d += k;
    i += k;
  }
  return { page: out };
}

function bytes(hex: string): Uint8Array {
  const clean = hex.replace(/\s+/g, "");
  return Uint8Array.from(
    { length: clean.length / 2 },
    (_, i) => parseInt(clean.slice(2 * i, 2 * i + 2), 16),
  );
}

function randomPage(random: () => number, size = PAGE): Uint8Array {
  const page = new Uint8Array(size);
  for (let i = 0; i < size; i++) page[i] = random() & 0xff;
  return page;
}

/** Copies `source` into a fresh buffer at byte offset `shift` (0..7). */
function placed(source: Uint8Array, shift: number): Uint8Array {
  const view = new Uint8Array(source.length + 8).subarray(
    shift,
    shift + source.length,
  );
  view.set(source);
  return view;
}

function summary(result: XbzrleEncodeResult): OracleResult {
  return result.kind === "encoded" ? [...result.delta] : result.kind;
}

function decodeError(offset: number, rule: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof StreamFormatError, String(error));
    assert.equal(error.offset, offset);
    assert.match(
      error.message,
      new RegExp(`^Cannot decode XBZRLE delta at offset ${offset}: `),
    );
    assert.match(error.message, rule);
    return true;
  };
}

// ---------------------------------------------------------------------------
// The worked examples of the spec (4096-byte pages), both directions.

interface Example {
  name: string;
  old: Uint8Array;
  next: Uint8Array;
  delta: Uint8Array;
}

function example(
  name: string,
  old: Uint8Array,
  changes: [number, number][],
  deltaHex: string,
): Example {
  const next = old.slice();
  for (const [at, value] of changes) {
    if (old[at] === value) old[at] = value ^ 0xff; // make the change real
    next[at] = value;
  }
  return { name, old, next, delta: bytes(deltaHex) };
}

const EXAMPLES: Example[] = [
  example(
    "#1 byte 0x123 of a random page := 0x8a",
    randomPage(prng(1)),
    [[0x123, 0x8a]],
    "a3 02 01 8a",
  ),
  example(
    "#2 bytes 0,1 of a zero page := 11,22",
    new Uint8Array(PAGE),
    [[0, 0x11], [1, 0x22]],
    "00 02 11 22",
  ),
  example(
    "#3 byte 0x10 := aa, bytes 0x20,0x21 := bb,cc",
    new Uint8Array(PAGE),
    [[0x10, 0xaa], [0x20, 0xbb], [0x21, 0xcc]],
    "10 01 aa 0f 02 bb cc",
  ),
  example(
    "#5 last byte of a zero page := 5a",
    new Uint8Array(PAGE),
    [[0xfff, 0x5a]],
    "ff 1f 01 5a",
  ),
  example(
    "#6 BIOS data area tick counter byte 0x46c := b6",
    randomPage(prng(6)),
    [[0x46c, 0xb6]],
    "ec 08 01 b6",
  ),
  example(
    "#7 stack page bytes 0xefa-0xefc, 0xefe, 0xf02-0xf03",
    randomPage(prng(7)),
    [[0xefa, 0x10], [0xefb, 0x00], [0xefc, 0x01], [0xefe, 0x0c], [
      0xf02,
      0x02,
    ], [0xf03, 0x02]],
    "fa 1d 03 10 00 01 01 01 0c 03 02 02 02",
  ),
  example(
    "#8 bytes 0..199 of a zero page := 01",
    new Uint8Array(PAGE),
    Array.from({ length: 200 }, (_, i): [number, number] => [i, 1]),
    "00 c8 01" + " 01".repeat(200),
  ),
];

for (const { name, old, next, delta } of EXAMPLES) {
  Deno.test(`encodeXbzrle() reproduces example ${name}`, () => {
    const result = encodeXbzrle(old, next);
    assert.deepEqual(result, { kind: "encoded", delta });
    assert.deepEqual(oracleEncode(old, next, PAGE), [...delta]);
  });

  Deno.test(`decodeXbzrle() applies example ${name}`, () => {
    const page = old.slice();
    decodeXbzrle(delta, page);
    assert.deepEqual(page, next);
  });
}

Deno.test("encodeXbzrle() reports example #4 (identical pages) as unchanged", () => {
  const page = randomPage(prng(4));
  assert.deepEqual(encodeXbzrle(page, page.slice()), { kind: "unchanged" });
  assert.deepEqual(encodeXbzrle(page, page), { kind: "unchanged" });
});

Deno.test("decodeXbzrle() leaves the page as it is for an empty delta", () => {
  const page = randomPage(prng(4));
  const before = page.slice();
  decodeXbzrle(new Uint8Array(0), page);
  assert.deepEqual(page, before);
});

Deno.test("encodeXbzrle() overflows on example #9 (every even byte changed)", () => {
  const next = new Uint8Array(PAGE);
  for (let i = 0; i < PAGE; i += 2) next[i] = 1;
  assert.deepEqual(encodeXbzrle(new Uint8Array(PAGE), next), {
    kind: "overflow",
  });
});

Deno.test("encodeXbzrle() overflows on example #10 (every byte changed)", () => {
  const next = new Uint8Array(PAGE).fill(0xff);
  assert.deepEqual(encodeXbzrle(new Uint8Array(PAGE), next), {
    kind: "overflow",
  });
  // `00 80 20` is written, then check C: 3 + 4096 > 4096.
  assert.equal(oracleEncode(new Uint8Array(PAGE), next, PAGE), "overflow");
});

// ---------------------------------------------------------------------------
// Overflow corner cases.

function evenBytes(count: number): Uint8Array {
  const next = new Uint8Array(PAGE);
  for (let i = 0; i < count; i++) next[2 * i] = 1;
  return next;
}

Deno.test("encodeXbzrle() overflows with 1365 even bytes changed although the tail is unchanged (check A)", () => {
  // 1365 pairs of 3 bytes = 4095 bytes; at the top of the next pair
  // 4095 + 2 > 4096, before the encoder sees that the rest is equal.
  assert.deepEqual(encodeXbzrle(new Uint8Array(PAGE), evenBytes(1365)), {
    kind: "overflow",
  });
});

Deno.test("encodeXbzrle() encodes 1364 even bytes changed in 4092 bytes", () => {
  const result = encodeXbzrle(new Uint8Array(PAGE), evenBytes(1364));
  assert.equal(result.kind, "encoded");
  assert.equal(result.kind === "encoded" && result.delta.length, 4092);
  assert.deepEqual(
    result.kind === "encoded" && result.delta.subarray(0, 6),
    bytes("00 01 01 01 01 01"),
  );
});

Deno.test("encodeXbzrle() produces a delta of exactly the limit when a run ends the page", () => {
  // z = 3 (1 byte), k = 4093 (2 bytes): 1 + 2 + 4093 = 4096.
  const next = new Uint8Array(PAGE).fill(7, 3);
  const result = encodeXbzrle(new Uint8Array(PAGE), next);
  assert.equal(result.kind === "encoded" && result.delta.length, PAGE);
  const page = new Uint8Array(PAGE);
  decodeXbzrle(
    result.kind === "encoded" ? result.delta : new Uint8Array(),
    page,
  );
  assert.deepEqual(page, next);
});

Deno.test("encodeXbzrle() overflows one byte past the limit (check C)", () => {
  // z = 2, k = 4094: 1 + 2 + 4094 = 4097.
  const next = new Uint8Array(PAGE).fill(7, 2);
  assert.deepEqual(encodeXbzrle(new Uint8Array(PAGE), next), {
    kind: "overflow",
  });
});

Deno.test("encodeXbzrle() checks room for the non-zero length after the zero length (check B)", () => {
  const old = new Uint8Array(64);
  const next = new Uint8Array(64);
  next[63] = 0xaa; // delta 3f 01 aa, ending the page
  assert.deepEqual(encodeXbzrle(old, next, { limit: 2 }), { kind: "overflow" });
  assert.deepEqual(encodeXbzrle(old, next, { limit: 3 }), {
    kind: "encoded",
    delta: bytes("3f 01 aa"),
  });
});

Deno.test("encodeXbzrle() checks room for another pair before it sees the unchanged tail (check A)", () => {
  const old = new Uint8Array(64);
  const next = new Uint8Array(64);
  next[0x10] = 0xaa; // delta 10 01 aa, then 47 equal bytes
  assert.deepEqual(encodeXbzrle(old, next, { limit: 4 }), { kind: "overflow" });
  assert.deepEqual(encodeXbzrle(old, next, { limit: 5 }), {
    kind: "encoded",
    delta: bytes("10 01 aa"),
  });
});

Deno.test("encodeXbzrle() overflows an unchanged page when the limit is below 2 (check A first)", () => {
  const page = new Uint8Array(64);
  assert.deepEqual(encodeXbzrle(page, page, { limit: 1 }), {
    kind: "overflow",
  });
  assert.deepEqual(encodeXbzrle(page, page, { limit: 2 }), {
    kind: "unchanged",
  });
});

// ---------------------------------------------------------------------------
// Options and arguments.

Deno.test("encodeXbzrle() returns a view into a given output buffer", () => {
  const output = new Uint8Array(PAGE + 16);
  const next = new Uint8Array(PAGE);
  next[0x123] = 0x8a;
  const result = encodeXbzrle(new Uint8Array(PAGE), next, { output });
  assert.ok(result.kind === "encoded");
  assert.equal(result.delta.buffer, output.buffer);
  assert.equal(result.delta.byteOffset, 0);
  assert.deepEqual(output.subarray(0, 4), bytes("a3 02 01 8a"));
});

Deno.test("encodeXbzrle() returns a tight copy without an output buffer", () => {
  const next = new Uint8Array(PAGE);
  next[0x123] = 0x8a;
  const result = encodeXbzrle(new Uint8Array(PAGE), next);
  assert.ok(result.kind === "encoded");
  assert.equal(result.delta.buffer.byteLength, 4);
});

Deno.test("encodeXbzrle() rejects an output buffer shorter than the limit", () => {
  assert.throws(
    () =>
      encodeXbzrle(new Uint8Array(PAGE), new Uint8Array(PAGE), {
        output: new Uint8Array(100),
      }),
    RangeError,
  );
});

Deno.test("encodeXbzrle() rejects pages of different lengths", () => {
  assert.throws(
    () => encodeXbzrle(new Uint8Array(PAGE), new Uint8Array(PAGE - 1)),
    /^RangeError: Cannot encode XBZRLE delta as the pages differ in length/,
  );
});

for (const limit of [-1, 1.5, NaN]) {
  Deno.test(`encodeXbzrle() rejects limit ${limit}`, () => {
    assert.throws(
      () => encodeXbzrle(new Uint8Array(8), new Uint8Array(8), { limit }),
      RangeError,
    );
  });
}

Deno.test("encodeXbzrle() rejects a run longer than a 2-byte ULEB128 holds", () => {
  const size = 32768;
  const next = new Uint8Array(size);
  next[size - 1] = 1; // a zero run of 32767 bytes
  assert.throws(
    () => encodeXbzrle(new Uint8Array(size), next),
    /^RangeError: Cannot encode XBZRLE delta as a run of 32767 bytes exceeds 16383/,
  );
});

Deno.test("encodeXbzrle() reports empty pages as unchanged", () => {
  // QEMU's encoder returns length 0 here, which its caller reads as
  // "unchanged"; no delta is ever empty.
  assert.deepEqual(encodeXbzrle(new Uint8Array(0), new Uint8Array(0)), {
    kind: "unchanged",
  });
});

Deno.test("encodeXbzrle() gives the same bytes for aligned and unaligned pages", () => {
  const random = prng(99);
  const old = randomPage(random);
  const next = old.slice();
  for (let i = 0; i < 60; i++) next[random() % PAGE] = random() & 0xff;
  const expected = oracleEncode(old, next, PAGE);
  for (let a = 0; a < 4; a++) {
    for (let b = 0; b < 4; b++) {
      assert.deepEqual(
        summary(encodeXbzrle(placed(old, a), placed(next, b))),
        expected,
        `old at +${a}, new at +${b}`,
      );
    }
  }
});

// ---------------------------------------------------------------------------
// Property test against the naive oracle.

/** Builds a random new page from `old` with one of several change shapes. */
function mutate(old: Uint8Array, random: () => number): Uint8Array {
  const size = old.length;
  const next = old.slice();
  if (size === 0) return next;
  const shape = random() % 7;
  switch (shape) {
    case 0: // unchanged
      break;
    case 1: { // sparse: a few random bytes (1% on average for 4 KiB)
      const count = random() % Math.max(2, (size / 50) | 0);
      for (let i = 0; i < count; i++) next[random() % size] = random() & 0xff;
      break;
    }
    case 2: { // dense: each byte changes with a random probability
      const p = [0.05, 0.3, 0.5, 0.9, 1][random() % 5]!;
      for (let i = 0; i < size; i++) {
        if (random() / 2 ** 32 < p) {
          next[i] = (old[i]! + 1 + random() % 255) & 0xff;
        }
      }
      break;
    }
    case 3: { // a few contiguous ranges
      const ranges = 1 + random() % 6;
      for (let r = 0; r < ranges; r++) {
        const start = random() % size;
        const length = 1 + random() % Math.min(size, 2048);
        for (let i = start; i < Math.min(size, start + length); i++) {
          next[i] = (old[i]! ^ (1 + random() % 255)) & 0xff;
        }
      }
      break;
    }
    case 4: { // every other byte over a random prefix (overflow corners)
      const end = random() % (size + 1);
      const step = 2 + random() % 3;
      for (let i = random() % step; i < end; i += step) {
        next[i] = old[i]! ^ 0x5a;
      }
      break;
    }
    case 5: { // runs touching the page edges
      const head = random() % 9;
      const tail = random() % 9;
      for (let i = 0; i < Math.min(head, size); i++) next[i] = old[i]! ^ 1;
      for (let i = Math.max(0, size - tail); i < size; i++) {
        next[i] = old[i]! ^ 1;
      }
      break;
    }
    default: { // bytes rewritten with random values that may be unchanged
      const count = random() % 200;
      const start = random() % size;
      for (let i = 0; i < count && start + i < size; i++) {
        next[start + i] = random() % 3 === 0
          ? old[start + i]!
          : random() & 0xff;
      }
    }
  }
  return next;
}

Deno.test("encodeXbzrle() equals the byte-wise oracle on 6000 random cases", () => {
  const random = prng(0x5eed);
  const output = new Uint8Array(3 * PAGE);
  let encoded = 0;
  let overflowed = 0;
  for (let trial = 0; trial < 6000; trial++) {
    const size = trial % 4 === 3 ? 1 + random() % 300 : PAGE;
    const limit = trial % 5 === 4 ? random() % (size + 64) : size;
    const base = random() % 2 === 0
      ? new Uint8Array(size)
      : randomPage(random, size);
    const old = placed(base, trial % 3 === 2 ? random() % 4 : 0);
    const next = placed(
      mutate(base, random),
      trial % 3 === 2 ? random() % 4 : 0,
    );
    const expected = oracleEncode(old, next, limit);
    const options = trial % 2 === 0 ? { limit } : { limit, output };
    const result = encodeXbzrle(old, next, options);
    assert.deepEqual(summary(result), expected, `trial ${trial}`);
    if (result.kind === "encoded") {
      encoded++;
      const page = old.slice();
      checkXbzrleDelta(result.delta, size);
      decodeXbzrle(result.delta, page);
      assert.deepEqual(page, next, `trial ${trial} round trip`);
    } else if (result.kind === "overflow") {
      overflowed++;
    }
  }
  // The shapes must exercise every outcome.
  assert.ok(encoded > 1000 && overflowed > 300, `${encoded}/${overflowed}`);
});

Deno.test("decodeXbzrle() agrees with the oracle decoder on 20000 random deltas", () => {
  const random = prng(0xdec0de);
  const sizes = [16, 64, 300, PAGE];
  let accepted = 0;
  for (let trial = 0; trial < 20000; trial++) {
    const size = sizes[trial % sizes.length]!;
    const page = randomPage(random, size);
    // Random deltas made mostly of plausible small lengths.
    const delta = new Uint8Array(random() % 24);
    for (let i = 0; i < delta.length; i++) {
      const pick = random() % 10;
      delta[i] = pick < 6
        ? random() % 8
        : pick < 8
        ? 0x80 | random() % 0x80
        : random() & 0xff;
    }
    const expected = oracleDecode(delta, page);
    const target = page.slice();
    if ("page" in expected) {
      accepted++;
      checkXbzrleDelta(delta, size, 7);
      decodeXbzrle(delta, target, 7);
      assert.deepEqual(target, expected.page, `trial ${trial}`);
    } else {
      for (
        const run of [
          () => decodeXbzrle(delta, target, 7),
          () => checkXbzrleDelta(delta, size, 7),
        ]
      ) {
        assert.throws(run, (error) => {
          assert.ok(error instanceof StreamFormatError);
          assert.equal(error.offset, 7 + expected.failAt, `trial ${trial}`);
          return true;
        });
      }
      assert.deepEqual(target, page, `trial ${trial}: page must be untouched`);
    }
  }
  assert.ok(accepted > 1000, `${accepted} accepted`);
});

// ---------------------------------------------------------------------------
// Every decoder rejection rule, with its offset (base offset 1000).

const BASE = 1000;

const REJECTIONS: [string, string, number, RegExp][] = [
  ["a lone byte", "05", 0, /a pair needs at least 2 bytes, 1 left/],
  [
    "a lone byte after a pair",
    "00 01 aa 05",
    3,
    /a pair needs at least 2 bytes, 1 left/,
  ],
  [
    "a zero length whose second byte has bit 7 set",
    "80 80 01 aa",
    1,
    /second length byte 0x80 has bit 7 set/,
  ],
  [
    "a non-zero length whose second byte has bit 7 set",
    "00 81 ff 01",
    2,
    /second length byte 0xff has bit 7 set/,
  ],
  [
    "a zero run of length 0 after the first pair",
    "00 01 aa 00 01 bb",
    3,
    /zero run of length 0 after the first pair/,
  ],
  [
    "a two-byte zero run of length 0 after the first pair",
    "00 01 aa 80 00 01 bb",
    3,
    /zero run of length 0 after the first pair/,
  ],
  [
    "a zero run past the page",
    "81 20 01 aa", // z = 4097
    0,
    /zero run of 4097 bytes ends at byte 4097, past the 4096-byte page/,
  ],
  [
    "a second zero run past the page",
    "00 01 aa ff 1f 01 bb", // 1 + 4095 = 4096 is fine, but then 1 byte more
    5,
    /non-zero run of 1 bytes ends at byte 4097, past the 4096-byte page/,
  ],
  [
    "a non-zero length in the last byte",
    "05 01",
    1,
    /a non-zero run needs a length and data, 1 bytes left/,
  ],
  ["a non-zero run of length 0", "05 00 aa", 1, /non-zero run of length 0/],
  [
    "a non-zero run past the page",
    "80 20 01 aa", // z = 4096, then 1 byte
    2,
    /non-zero run of 1 bytes ends at byte 4097, past the 4096-byte page/,
  ],
  [
    "a non-zero run longer than the data left",
    "05 03 aa bb",
    1,
    /non-zero run of 3 bytes has only 2 bytes of data/,
  ],
];

for (const [name, hex, at, rule] of REJECTIONS) {
  Deno.test(`decodeXbzrle() rejects ${name} at its offset`, () => {
    const page = randomPage(prng(at + 1));
    const before = page.slice();
    assert.throws(
      () => decodeXbzrle(bytes(hex), page, BASE),
      decodeError(BASE + at, rule),
    );
    assert.deepEqual(page, before);
    assert.deepEqual(oracleDecode(bytes(hex), page), { failAt: at });
  });

  Deno.test(`checkXbzrleDelta() rejects ${name} at its offset`, () => {
    assert.throws(
      () => checkXbzrleDelta(bytes(hex), PAGE, BASE),
      decodeError(BASE + at, rule),
    );
  });
}

Deno.test("decodeXbzrle() applies nothing when a later pair is bad", () => {
  const page = new Uint8Array(PAGE);
  assert.throws(
    () => decodeXbzrle(bytes("00 02 11 22 00 01 33"), page),
    StreamFormatError,
  );
  assert.deepEqual(page, new Uint8Array(PAGE));
});

Deno.test("decodeXbzrle() reports offsets from 0 by default", () => {
  assert.throws(
    () => decodeXbzrle(bytes("05"), new Uint8Array(PAGE)),
    decodeError(0, /a pair needs at least 2 bytes/),
  );
});

Deno.test("decodeXbzrle() accepts what QEMU accepts: non-canonical lengths and a run ending the page", () => {
  const page = new Uint8Array(PAGE);
  // z = 5 written in two bytes, k = 1; then z = 4089, k = 1 up to byte 4095.
  decodeXbzrle(bytes("85 00 01 aa f9 1f 01 bb"), page);
  assert.equal(page[5], 0xaa);
  assert.equal(page[4095], 0xbb);
  // A first zero run of length 0 written in two bytes.
  decodeXbzrle(bytes("80 00 01 cc"), page);
  assert.equal(page[0], 0xcc);
});

Deno.test("checkXbzrleDelta() accepts a delta longer than the page", () => {
  // Record-level `len <= page size` belongs to the frame decoder.
  const delta: number[] = [0x00, 0x01, 0xaa];
  for (let i = 2; i < 64; i += 2) delta.push(0x01, 0x01, 0xaa);
  checkXbzrleDelta(Uint8Array.from(delta), 64);
});
