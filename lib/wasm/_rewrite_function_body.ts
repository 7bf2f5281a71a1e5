/**
 * Rewrites one function body so that every write to linear memory marks
 * its 4 KiB pages in the memory's dirty map (a byte per page, in a memory
 * of its own), and `memory.grow` traps while a migration holds the grow
 * lock. Private to the instrumenter.
 *
 * ```
 * body   = vec(locals) instr* 0x0b
 * store  → local.set $v; local.tee $a;
 *          dirty[(a+offset)>>12] = 1; dirty[(a+offset+size-1)>>12] = 1;
 *          local.get $v; store
 * fill/copy/init (d, x, n) → saved in locals; call $mark(d, n); replayed
 * grow   → if (lock) { refused = memidx+1; unreachable } memory.grow
 * ```
 *
 * Scratch locals are appended after the function's own, so existing local
 * indices do not move; function, type and global indices are unchanged.
 *
 * @module
 */

import { NotSupportedError } from "../errors.ts";
import { sleb32, uleb, WasmReader } from "./_wasm_bytes.ts";

/** What the rewriter needs to know about the module. */
export interface RewriteContext {
  /** Parameters of the function (its first local indices). */
  paramCount: number;
  /** Memories of the module (imported and defined). */
  memoryCount: number;
  /** Index of the function that marks a range dirty, per memory. */
  markRange: readonly number[];
  /** Index of the grow-lock global. */
  lockGlobal: number;
  /** Index of the global set to memidx+1 when a grow was refused. */
  refusedGlobal: number;
  /** Records state the engine cannot capture, by name. */
  uncapturable: (what: string) => void;
}

/** The page shift of the dirty map: 4 KiB pages. */
export const DIRTY_PAGE_SHIFT = 12;

const I32 = 0x7f;
const I64 = 0x7e;
const F32 = 0x7d;
const F64 = 0x7c;
const V128 = 0x7b;

/** Store opcodes: [bytes written, value type]. */
const STORES: Record<number, [number, number]> = {
  0x36: [4, I32],
  0x37: [8, I64],
  0x38: [4, F32],
  0x39: [8, F64],
  0x3a: [1, I32],
  0x3b: [2, I32],
  0x3c: [1, I64],
  0x3d: [2, I64],
  0x3e: [4, I64],
};

/**
 * Opcodes with one u32 immediate: tag, label, function, type, local,
 * global, table, or memory index.
 */
const ONE_INDEX = new Set([
  0x07,
  0x08,
  0x09,
  0x0c,
  0x0d,
  0x10,
  0x12,
  0x14,
  0x15,
  0x18,
  0x20,
  0x21,
  0x22,
  0x23,
  0x24,
  0x25,
  0x3f,
  0xd2,
  0xd5,
  0xd6,
]);

/** SIMD stores: subopcode → bytes written (all take a v128). */
const SIMD_STORES: Record<number, number> = {
  11: 16,
  88: 1,
  89: 2,
  90: 4,
  91: 8,
};

/**
 * Rewrites a function body.
 *
 * @param body The body, without its size prefix.
 * @param context The module's layout.
 * @returns The new body, without its size prefix.
 */
export function rewriteFunctionBody(
  body: Uint8Array,
  context: RewriteContext,
): Uint8Array {
  const reader = new WasmReader(body);
  const out: number[] = [];
  let localCount = context.paramCount;
  const groups = reader.u32();
  out.push(...uleb(groups + 5));
  for (let i = 0; i < groups; i++) {
    const start = reader.offset;
    localCount += reader.u32();
    readValueType(reader);
    out.push(...reader.bytes.subarray(start, reader.offset));
  }
  // Scratch: 3 × i32, i64, f32, f64, v128.
  out.push(3, I32, 1, I64, 1, F32, 1, F64, 1, V128);
  const scratch: Scratch = {
    a: localCount,
    b: localCount + 1,
    c: localCount + 2,
    [I32]: localCount + 1,
    [I64]: localCount + 3,
    [F32]: localCount + 4,
    [F64]: localCount + 5,
    [V128]: localCount + 6,
  };
  let copied = reader.offset;
  while (!reader.done) {
    const at = reader.offset;
    const replacement = instruction(reader, context, scratch);
    if (replacement === undefined) continue;
    for (let i = copied; i < at; i++) out.push(body[i]!);
    out.push(...replacement);
    copied = reader.offset;
  }
  for (let i = copied; i < body.byteLength; i++) out.push(body[i]!);
  return new Uint8Array(out);
}

interface Scratch {
  a: number;
  b: number;
  c: number;
  [type: number]: number;
}

/** Reads a value type (a number type, v128 or a reference type). */
export function readValueType(reader: WasmReader): number {
  const type = reader.u8();
  if (type === 0x63 || type === 0x64) reader.s33();
  return type;
}

/**
 * Reads one instruction; returns the bytes to put in its place, or
 * undefined to keep it as it is.
 */
function instruction(
  reader: WasmReader,
  context: RewriteContext,
  scratch: Scratch,
): number[] | undefined {
  const at = reader.offset;
  const op = reader.u8();
  const store = STORES[op];
  if (store !== undefined) {
    const memarg = readMemarg(reader);
    return markStore(memarg, store, reader.bytes.subarray(at, reader.offset), {
      context,
      scratch,
    });
  }
  if (op >= 0x28 && op <= 0x35) return void readMemarg(reader);
  if (ONE_INDEX.has(op)) return void reader.u32();
  switch (op) {
    case 0x02:
    case 0x03:
    case 0x04:
    case 0x06:
      return void readBlockType(reader);
    case 0x26:
      context.uncapturable(`table ${reader.u32()} (changed by table.set)`);
      return;
    case 0x0e: {
      const count = reader.u32();
      for (let i = 0; i <= count; i++) reader.u32();
      return;
    }
    case 0x11:
    case 0x13:
      reader.u32();
      return void reader.u32();
    case 0x1c: {
      const count = reader.u32();
      for (let i = 0; i < count; i++) readValueType(reader);
      return;
    }
    case 0x40:
      return growWithLock(reader.u32(), context);
    case 0x41:
      return void reader.skipSigned(32);
    case 0x42:
      return void reader.skipSigned(64);
    case 0x43:
      return void reader.take(4);
    case 0x44:
      return void reader.take(8);
    case 0xd0:
      return void reader.s33();
    case 0xfc:
      return bulkInstruction(reader, context, scratch);
    case 0xfd:
      return simdInstruction(reader, at, context, scratch);
    case 0x1f:
    case 0xfb:
    case 0xfe:
      return unsupported(reader, op, at);
    default:
      if (
        op <= 0x1b || (op >= 0x45 && op <= 0xc4) || op === 0xd1 ||
        op === 0xd3 || op === 0xd4
      ) return;
      return unsupported(reader, op, at);
  }
}

function unsupported(reader: WasmReader, op: number, at: number): never {
  const names: Record<number, string> = {
    0x1f: "try_table (exception handling)",
    0xfb: "garbage collection instructions (0xfb)",
    0xfe: "atomic instructions (0xfe, threads)",
  };
  const name = names[op];
  if (name === undefined) {
    return reader.fail(`unknown opcode 0x${op.toString(16)}`, at);
  }
  throw new NotSupportedError(
    `Cannot instrument the Wasm module: ${name} are not supported (at byte ${at} of a function body)`,
  );
}

function readBlockType(reader: WasmReader): void {
  const type = reader.s33();
  // 0x63/0x64 (ref null ht / ref ht) are followed by their heap type.
  if (type === -0x1d || type === -0x1c) reader.s33();
}

interface Memarg {
  memory: number;
  offset: number;
}

function readMemarg(reader: WasmReader): Memarg {
  const align = reader.u32();
  const memory = (align & 0x40) !== 0 ? reader.u32() : 0;
  return { memory, offset: reader.u32() };
}

interface MarkOptions {
  context: RewriteContext;
  scratch: Scratch;
}

/** Code that sets dirty[(local a + offset) >> 12] = 1 in a memory's map. */
function markByte(
  memory: number,
  offset: number,
  options: MarkOptions,
): number[] {
  const dirty = options.context.memoryCount + memory;
  const add = offset === 0 ? [] : [0x41, ...sleb32(offset), 0x6a];
  return [
    0x20,
    ...uleb(options.scratch.a),
    ...add,
    0x41,
    DIRTY_PAGE_SHIFT,
    0x76, // i32.shr_u
    0x41,
    1,
    0x3a, // i32.store8 with a memory index
    0x40,
    ...uleb(dirty),
    0,
  ];
}

function markStore(
  memarg: Memarg,
  [size, type]: [number, number],
  original: Uint8Array,
  options: MarkOptions,
): number[] {
  const { memory, offset } = memarg;
  const value = options.scratch[type]!;
  const marks = markByte(memory, offset, options);
  if (size > 1) marks.push(...markByte(memory, offset + size - 1, options));
  return [
    0x21,
    ...uleb(value),
    0x22,
    ...uleb(options.scratch.a),
    ...marks,
    0x20,
    ...uleb(value),
    ...original,
  ];
}

/** (d, x, n) saved, the range (d, n) marked, the operands put back. */
function markBulk(
  memory: number,
  original: number[],
  options: MarkOptions,
): number[] {
  const { a, b, c } = options.scratch;
  const mark = options.context.markRange[memory];
  if (mark === undefined) return original;
  return [
    0x21,
    ...uleb(c),
    0x21,
    ...uleb(b),
    0x22,
    ...uleb(a),
    0x20,
    ...uleb(c),
    0x10,
    ...uleb(mark),
    0x20,
    ...uleb(a),
    0x20,
    ...uleb(b),
    0x20,
    ...uleb(c),
    ...original,
  ];
}

function bulkInstruction(
  reader: WasmReader,
  context: RewriteContext,
  scratch: Scratch,
): number[] | undefined {
  const sub = reader.u32();
  const options = { context, scratch };
  switch (sub) {
    case 8: {
      const data = reader.u32();
      const memory = reader.u32();
      const original = [0xfc, 8, ...uleb(data), ...uleb(memory)];
      return markBulk(memory, original, options);
    }
    case 9:
      context.uncapturable(
        `data segment ${reader.u32()} (dropped by data.drop)`,
      );
      return;
    case 10: {
      const to = reader.u32();
      const from = reader.u32();
      const original = [0xfc, 10, ...uleb(to), ...uleb(from)];
      return markBulk(to, original, options);
    }
    case 11: {
      const memory = reader.u32();
      return markBulk(memory, [0xfc, 11, ...uleb(memory)], options);
    }
    case 12:
      reader.u32();
      context.uncapturable(`table ${reader.u32()} (changed by table.init)`);
      return;
    case 13:
      context.uncapturable(
        `element segment ${reader.u32()} (dropped by elem.drop)`,
      );
      return;
    case 14:
      context.uncapturable(`table ${reader.u32()} (changed by table.copy)`);
      return void reader.u32();
    case 15:
      context.uncapturable(`table ${reader.u32()} (changed by table.grow)`);
      return;
    case 16:
      return void reader.u32();
    case 17:
      context.uncapturable(`table ${reader.u32()} (changed by table.fill)`);
      return;
    default:
      if (sub <= 7) return;
      return reader.fail(`unknown instruction 0xfc ${sub}`);
  }
}

function simdInstruction(
  reader: WasmReader,
  at: number,
  context: RewriteContext,
  scratch: Scratch,
): number[] | undefined {
  const sub = reader.u32();
  const size = SIMD_STORES[sub];
  if (size !== undefined) {
    const memarg = readMemarg(reader);
    if (sub !== 11) reader.u8(); // the lane
    const original = reader.bytes.subarray(at, reader.offset);
    return markStore(memarg, [size, V128], original, { context, scratch });
  }
  if (sub <= 10 || sub === 92 || sub === 93) return void readMemarg(reader);
  if (sub >= 84 && sub <= 87) {
    readMemarg(reader);
    return void reader.u8();
  }
  if (sub === 12 || sub === 13) return void reader.take(16);
  if (sub >= 21 && sub <= 34) return void reader.u8();
  return;
}

function growWithLock(memory: number, context: RewriteContext): number[] {
  return [
    0x23,
    ...uleb(context.lockGlobal),
    0x04,
    0x40,
    0x41,
    ...sleb32(memory + 1),
    0x24,
    ...uleb(context.refusedGlobal),
    0x00,
    0x0b,
    0x40,
    ...uleb(memory),
  ];
}
