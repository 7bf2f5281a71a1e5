import assert from "node:assert/strict";
import {
  instrumentWasm,
  NotSupportedError,
  SeededRandom,
  StreamFormatError,
} from "../../mod.ts";
import {
  buildModule,
  F32,
  F64,
  I32,
  I64,
  sleb,
  type TestModule,
  uleb,
} from "./_wasm_module.ts";

const PAGE = 4096;

interface Loaded {
  exports: WebAssembly.Exports;
  memory: Uint8Array;
  dirty: Uint8Array;
  dirtyPages(): number[];
}

function load(spec: TestModule): Loaded {
  const wasm = instrumentWasm(buildModule(spec));
  const { exports } = new WebAssembly.Instance(
    new WebAssembly.Module(wasm.bytes),
  );
  const dirty = new Uint8Array(
    (exports[wasm.dirtyExports[0]!] as WebAssembly.Memory).buffer,
  );
  return {
    exports,
    get memory() {
      return new Uint8Array((exports.memory as WebAssembly.Memory).buffer);
    },
    dirty,
    dirtyPages() {
      const pages = [];
      for (let i = 0; i < dirty.length; i++) if (dirty[i] !== 0) pages.push(i);
      return pages;
    },
  };
}

function call(
  loaded: Loaded,
  name: string,
  ...args: (number | bigint)[]
): unknown {
  return (loaded.exports[name] as (...a: unknown[]) => unknown)(...args);
}

// (param addr, value) → store op with offset
function storeFunction(op: number, type: number, offset: number): TestModule {
  return {
    memory: [2],
    functions: [{
      name: "store",
      params: [I32, type],
      code: [0x20, 0, 0x20, 1, op, 0, ...uleb(offset)],
    }],
  };
}

Deno.test("instrumentWasm() marks the page of a one-byte store", () => {
  const loaded = load(storeFunction(0x3a, I32, 0));
  call(loaded, "store", 5 * PAGE + 7, 9);
  assert.equal(loaded.memory[5 * PAGE + 7], 9);
  assert.deepEqual(loaded.dirtyPages(), [5]);
});

for (
  const [op, type, size, value] of [
    [0x36, I32, 4, 0x01020304],
    [0x37, I64, 8, 0x0102030405060708n],
    [0x38, F32, 4, 1.5],
    [0x39, F64, 8, 2.25],
    [0x3b, I32, 2, 0x0102],
    [0x3d, I64, 2, 0x0102n],
    [0x3e, I64, 4, 0x01020304n],
  ] as const
) {
  Deno.test(`instrumentWasm() marks both pages of a ${size}-byte store across a page boundary (0x${op.toString(16)})`, () => {
    const loaded = load(storeFunction(op, type, 16));
    call(loaded, "store", 3 * PAGE - 16 - 1, value);
    assert.deepEqual(loaded.dirtyPages(), [2, 3]);
    assert.notEqual(
      loaded.memory[3 * PAGE - 2 + size],
      0,
      "the value was stored",
    );
    loaded.dirty.fill(0);
    call(loaded, "store", 3 * PAGE - 16 - size, value);
    assert.deepEqual(
      loaded.dirtyPages(),
      [2],
      "a store that ends on the page marks that page only",
    );
  });
}

Deno.test("instrumentWasm() marks the range of memory.fill, memory.copy and memory.init", () => {
  const loaded = load({
    memory: [2],
    data: [[1, 2, 3, 4, 5, 6, 7, 8]],
    functions: [
      {
        name: "fill",
        params: [I32, I32, I32],
        code: [0x20, 0, 0x20, 1, 0x20, 2, 0xfc, 11, 0],
      },
      {
        name: "copy",
        params: [I32, I32, I32],
        code: [0x20, 0, 0x20, 1, 0x20, 2, 0xfc, 10, 0, 0],
      },
      {
        name: "init",
        params: [I32, I32, I32],
        code: [0x20, 0, 0x20, 1, 0x20, 2, 0xfc, 8, 0, 0],
      },
    ],
  });
  call(loaded, "fill", PAGE - 1, 7, 2 * PAGE + 2);
  assert.deepEqual(loaded.dirtyPages(), [0, 1, 2, 3]);
  assert.equal(loaded.memory[3 * PAGE], 7);
  loaded.dirty.fill(0);
  call(loaded, "fill", 9 * PAGE, 7, 0);
  assert.deepEqual(loaded.dirtyPages(), [], "an empty fill marks nothing");
  call(loaded, "copy", 20 * PAGE + 100, 0, PAGE);
  assert.deepEqual(loaded.dirtyPages(), [20, 21]);
  loaded.dirty.fill(0);
  call(loaded, "init", 30 * PAGE - 4, 0, 8);
  assert.deepEqual(loaded.dirtyPages(), [29, 30]);
  assert.deepEqual([...loaded.memory.subarray(30 * PAGE - 4, 30 * PAGE + 4)], [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
  ]);
});

Deno.test("instrumentWasm() keeps a function's locals and results", () => {
  // (param i32 i64) (local f64) : store then return param0 + local set
  const loaded = load({
    memory: [1],
    functions: [{
      name: "f",
      params: [I32, I64],
      results: [I64],
      locals: [[2, I32]],
      code: [
        0x41,
        5,
        0x21,
        2, // local2 = 5
        0x20,
        0,
        0x20,
        1,
        0x37,
        3,
        0, // i64.store
        0x20,
        1,
        0x20,
        2,
        0xad,
        0x7c, // param1 + i64(local2)
      ],
    }],
  });
  assert.equal(call(loaded, "f", 8, 40n), 45n);
  assert.equal(new DataView(loaded.memory.buffer).getBigInt64(8, true), 40n);
});

Deno.test("instrumentWasm() refuses memory.grow while the lock is set", () => {
  const bytes = buildModule({
    memory: [1],
    functions: [{
      name: "grow",
      params: [I32],
      results: [I32],
      code: [0x20, 0, 0x40, 0],
    }],
  });
  const wasm = instrumentWasm(bytes);
  const { exports } = new WebAssembly.Instance(
    new WebAssembly.Module(wasm.bytes),
  );
  const grow = exports.grow as (n: number) => number;
  assert.equal(grow(1), 1);
  (exports[wasm.growLockExport] as WebAssembly.Global).value = 1;
  assert.throws(() => grow(1), WebAssembly.RuntimeError);
  assert.equal(
    (exports[wasm.growRefusedExport] as WebAssembly.Global).value,
    1,
  );
  assert.equal(
    (exports.memory as WebAssembly.Memory).buffer.byteLength,
    2 * 65536,
  );
});

Deno.test("instrumentWasm() exports every mutable global and names what it cannot carry", () => {
  const wasm = instrumentWasm(buildModule({
    memory: [1],
    globals: [3, 4],
    table: 1,
    data: [[1]],
    functions: [{
      name: "f",
      params: [],
      // table.set 0 at 0 to null; data.drop 0
      code: [0x41, 0, 0xd0, 0x70, 0x26, 0, 0xfc, 9, 0],
    }],
  }));
  assert.deepEqual(wasm.globals.map((g) => [g.index, g.type]), [[0, "i32"], [
    1,
    "i32",
  ]]);
  assert.deepEqual(wasm.uncapturable, [
    "table 0 (changed by table.set)",
    "data segment 0 (dropped by data.drop)",
  ]);
});

Deno.test("instrumentWasm() refuses shared memories and atomics, and bad bytes with their offset", () => {
  assert.throws(
    () =>
      instrumentWasm(
        buildModule({ memory: [1, 1], memoryFlags: 3, functions: [] }),
      ),
    (e) => e instanceof NotSupportedError && /shared memories/.test(e.message),
  );
  assert.throws(
    () =>
      instrumentWasm(buildModule({
        memory: [1],
        functions: [{
          name: "a",
          params: [],
          code: [0x41, 0, 0x41, 0, 0xfe, 0x17, 2, 0],
        }],
      })),
    (e) =>
      e instanceof NotSupportedError && /atomic instructions/.test(e.message),
  );
  assert.throws(
    () =>
      instrumentWasm(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 9, 1])),
    (e) => e instanceof StreamFormatError && e.offset === 10,
  );
});

/** One random write of a random program, and the pages it writes. */
type Op =
  | {
    kind: "store";
    op: number;
    type: number;
    size: number;
    addr: number;
    offset: number;
  }
  | { kind: "fill"; addr: number; length: number }
  | { kind: "copy"; addr: number; from: number; length: number };

const STORES = [
  [0x36, I32, 4],
  [0x37, I64, 8],
  [0x38, F32, 4],
  [0x39, F64, 8],
  [0x3a, I32, 1],
  [0x3b, I32, 2],
  [0x3c, I64, 1],
  [0x3d, I64, 2],
  [0x3e, I64, 4],
] as const;
const MEMORY_PAGES = 64; // Wasm pages: 4 MiB, 1024 dirty-map pages

function randomOps(random: SeededRandom, count: number): Op[] {
  const bytes = MEMORY_PAGES * 65536;
  const near = () =>
    random.nextInt(4) === 0
      ? random.nextInt(bytes - 64)
      : (random.nextInt(1024) * PAGE + random.nextInt(16) - 8 + bytes) %
        (bytes - 64);
  return Array.from({ length: count }, (): Op => {
    const pick = random.nextInt(10);
    if (pick < 7) {
      const [op, type, size] = STORES[random.nextInt(STORES.length)]!;
      const offset = random.nextInt(3) === 0 ? random.nextInt(40) : 0;
      return { kind: "store", op, type, size, addr: near(), offset };
    }
    const length = random.nextInt(3) === 0 ? 0 : random.nextInt(3 * PAGE);
    const addr = random.nextInt(bytes - length);
    if (pick < 9) return { kind: "fill", addr, length };
    return { kind: "copy", addr, from: random.nextInt(bytes - length), length };
  });
}

function opCode(op: Op, random: SeededRandom): number[] {
  const value = (type: number): number[] => {
    if (type === I32) return [0x41, ...sleb(random.nextUint32() | 1)];
    if (type === I64) return [0x42, ...sleb(random.nextUint32() | 1)];
    if (type === F32) return [0x43, 0, 0, 0x80, 0x3f];
    return [0x44, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f];
  };
  switch (op.kind) {
    case "store":
      return [
        0x41,
        ...sleb(op.addr),
        ...value(op.type),
        op.op,
        0,
        ...uleb(op.offset),
      ];
    case "fill":
      return [
        0x41,
        ...sleb(op.addr),
        0x41,
        0x5a,
        0x41,
        ...sleb(op.length),
        0xfc,
        11,
        0,
      ];
    case "copy":
      return [
        0x41,
        ...sleb(op.addr),
        0x41,
        ...sleb(op.from),
        0x41,
        ...sleb(op.length),
        0xfc,
        10,
        0,
        0,
      ];
  }
}

function pagesOf(op: Op): number[] {
  const [start, length] = op.kind === "store"
    ? [op.addr + op.offset, op.size]
    : [op.addr, op.length];
  if (length === 0) return [];
  const pages = [];
  for (
    let p = Math.floor(start / PAGE);
    p <= Math.floor((start + length - 1) / PAGE);
    p++
  ) pages.push(p);
  return pages;
}

Deno.test("instrumentWasm() marks exactly the pages random programs write, and computes as before", () => {
  for (let seed = 1; seed <= 30; seed++) {
    const random = new SeededRandom(seed);
    const ops = randomOps(random, 1 + random.nextInt(60));
    const spec: TestModule = {
      memory: [MEMORY_PAGES],
      functions: [{
        name: "run",
        params: [],
        code: ops.flatMap((op) => opCode(op, random)),
      }],
    };
    const plain = new WebAssembly.Instance(
      new WebAssembly.Module(buildModule(spec)),
    );
    const loaded = load(spec);
    const before = loaded.memory.slice();
    (plain.exports.run as () => void)();
    call(loaded, "run");
    const after = loaded.memory;
    const original = new Uint8Array(
      (plain.exports.memory as WebAssembly.Memory).buffer,
    );
    let differs = -1;
    for (let i = 0; i < after.length && differs < 0; i++) {
      if (after[i] !== original[i]) differs = i;
    }
    assert.equal(
      differs,
      -1,
      `seed ${seed}: the instrumented program wrote what the original did`,
    );
    const expected = [...new Set(ops.flatMap(pagesOf))].sort((a, b) => a - b);
    assert.deepEqual(
      loaded.dirtyPages(),
      expected,
      `seed ${seed}: every page written, no other`,
    );
    // The shadow diff: every page that changed was marked.
    for (let page = 0; page < after.byteLength / PAGE; page++) {
      const at = page * PAGE;
      if (loaded.dirty[page] === 1) continue;
      for (let i = at; i < at + PAGE; i++) {
        if (after[i] !== before[i]) {
          assert.fail(`seed ${seed}: page ${page} changed unmarked`);
        }
      }
    }
  }
});
