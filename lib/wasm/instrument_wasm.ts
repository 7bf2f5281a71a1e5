/**
 * livemig's own WebAssembly rewriter: gives a module a dirty map per
 * linear memory that every store, `memory.fill`, `memory.copy` and
 * `memory.init` marks, so a migration knows exactly which 4 KiB pages a
 * running program wrote — Wasm has no write barrier of its own.
 *
 * ```
 * added, after what the module has (no index of it moves):
 *   types      (i32 start, i32 length) -> ()
 *   memories   livemig:dirty<k>   1 MiB, a byte per 4 KiB page of memory k
 *   globals    livemig:grow-lock  i32, 1 = memory.grow traps
 *              livemig:grow-refused  i32, memidx+1 of the refused grow
 *   functions  mark range of memory k (memory.fill on its dirty map)
 *   exports    livemig:memory<k>, livemig:dirty<k>, livemig:global<i>
 *              (every mutable global), the two globals above
 * ```
 *
 * @module
 */

import { concatBytes } from "../bytes/concat_bytes.ts";
import { NotSupportedError } from "../errors.ts";
import { uleb, wasmName, WasmReader, wasmSection } from "./_wasm_bytes.ts";
import {
  type RewriteContext,
  rewriteFunctionBody,
} from "./_rewrite_function_body.ts";
import { type ModuleLayout, readModuleLayout } from "./_module_layout.ts";

/** A mutable global the instrumented module exports. */
export interface InstrumentedGlobal {
  /** The global's index in the module. */
  index: number;
  /** Its value type: `i32`, `i64`, `f32` or `f64`. */
  type: "i32" | "i64" | "f32" | "f64";
  /** The export that reaches it. */
  exportName: string;
}

/** What {@linkcode instrumentWasm} made of a module. */
export interface InstrumentedWasm {
  /** The instrumented module's bytes. */
  bytes: Uint8Array<ArrayBuffer>;
  /** Exports of the linear memories, in memory index order. */
  memoryExports: string[];
  /** Exports of their dirty maps (a byte per 4 KiB page, 0 or 1). */
  dirtyExports: string[];
  /** The mutable globals, exported. */
  globals: InstrumentedGlobal[];
  /** The export of the i32 global that makes `memory.grow` trap when 1. */
  growLockExport: string;
  /** The export of the i32 global set to memidx+1 by a refused grow. */
  growRefusedExport: string;
  /**
   * State a migration cannot carry, by name (tables the program or the
   * host can change, dropped segments, globals of other types): a
   * migration of such a module is refused.
   */
  uncapturable: string[];
}

/** Bytes of a dirty map: a byte per 4 KiB page of a 4 GiB memory. */
export const DIRTY_MAP_BYTES = 1 << 20;

const ORDER = [1, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11];
const NUMBER_TYPES: Record<number, InstrumentedGlobal["type"]> = {
  0x7f: "i32",
  0x7e: "i64",
  0x7d: "f32",
  0x7c: "f64",
};

/**
 * Instruments a module: every write to linear memory marks its pages in a
 * dirty map the host reads, and `memory.grow` can be locked.
 *
 * @example Usage
 * ```ts
 * import { instrumentWasm } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * // (memory (export "m") 1) (func (export "poke") (param i32)
 * //   (i32.store8 (local.get 0) (i32.const 7)))
 * const module = new Uint8Array([
 *   0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 1, 127, 0, 3, 2, 1, 0,
 *   5, 3, 1, 0, 1, 7, 12, 2, 1, 109, 2, 0, 4, 112, 111, 107, 101, 0, 0,
 *   10, 11, 1, 9, 0, 32, 0, 65, 7, 58, 0, 0, 11,
 * ]);
 * const wasm = instrumentWasm(module);
 * const { exports } = new WebAssembly.Instance(new WebAssembly.Module(wasm.bytes));
 * (exports.poke as (at: number) => void)(3 * 4096 + 5);
 * const dirty = new Uint8Array((exports[wasm.dirtyExports[0]!] as WebAssembly.Memory).buffer);
 * assert.deepEqual([dirty[2], dirty[3], dirty[4]], [0, 1, 0]);
 * ```
 *
 * @param bytes The module's bytes.
 * @returns The instrumented module and where its parts are exported.
 * @throws {StreamFormatError} If the bytes are not a module it can read.
 * @throws {NotSupportedError} For shared or 64-bit memories, atomics.
 */
export function instrumentWasm(bytes: Uint8Array): InstrumentedWasm {
  const layout = readModuleLayout(bytes);
  const memoryCount = layout.importedMemories + layout.memories.length;
  const uncapturable = [...layout.uncapturable];
  const globalBase = layout.importedGlobals.length + layout.globals.length;
  const lockGlobal = globalBase;
  const refusedGlobal = globalBase + 1;
  const funcBase = layout.importedFunctions + layout.functionTypes.length;
  const markRange = Array.from({ length: memoryCount }, (_, k) => funcBase + k);
  const markType = layout.types.length;

  const { exportsAdded, memoryExports, dirtyExports, globals } = exportsToAdd(
    layout,
    { lockGlobal, uncapturable },
  );
  const context = {
    memoryCount,
    markRange,
    lockGlobal,
    refusedGlobal,
    uncapturable: (what: string) => {
      if (!uncapturable.includes(what)) uncapturable.push(what);
    },
  };
  const added: Record<number, (content: Uint8Array | undefined) => number[]> = {
    1: (c) => appendVec(c, [[0x60, 2, 0x7f, 0x7f, 0]]),
    3: (c) => appendVec(c, markRange.map(() => uleb(markType))),
    5: (c) =>
      appendVec(c, markRange.map(() => [0x01, ...uleb(16), ...uleb(16)])),
    6: (c) => appendVec(c, [GLOBAL_I32, GLOBAL_I32]),
    7: (c) =>
      appendVec(
        c,
        exportsAdded.map(([name, kind, index]) => [
          ...wasmName(name),
          kind,
          ...uleb(index),
        ]),
      ),
    10: (c) => rewriteCode(c, layout, context),
  };
  const bytesOut = assemble(bytes, layout, added);
  return {
    bytes: bytesOut,
    memoryExports,
    dirtyExports,
    globals,
    growLockExport: "livemig:grow-lock",
    growRefusedExport: "livemig:grow-refused",
    uncapturable,
  };
}

const GLOBAL_I32 = [0x7f, 0x01, 0x41, 0x00, 0x0b];

/** The memories, dirty maps, mutable globals and lock globals, exported. */
function exportsToAdd(
  layout: ModuleLayout,
  options: { lockGlobal: number; uncapturable: string[] },
) {
  const { lockGlobal, uncapturable } = options;
  const refusedGlobal = lockGlobal + 1;
  const memoryCount = layout.importedMemories + layout.memories.length;
  const exportsAdded: [string, number, number][] = [];
  const memoryExports: string[] = [];
  const dirtyExports: string[] = [];
  for (let k = 0; k < memoryCount; k++) {
    memoryExports.push(`livemig:memory${k}`);
    dirtyExports.push(`livemig:dirty${k}`);
    exportsAdded.push([`livemig:memory${k}`, 2, k]);
    exportsAdded.push([`livemig:dirty${k}`, 2, memoryCount + k]);
  }
  const globals: InstrumentedGlobal[] = [];
  const allGlobals = [...layout.importedGlobals, ...layout.globals];
  allGlobals.forEach((global, index) => {
    if (!global.mutable) return;
    const type = NUMBER_TYPES[global.type];
    if (type === undefined) {
      uncapturable.push(
        `global ${index} (a mutable global of a reference or vector type)`,
      );
      return;
    }
    const exportName = `livemig:global${index}`;
    globals.push({ index, type, exportName });
    exportsAdded.push([exportName, 3, index]);
  });
  exportsAdded.push(["livemig:grow-lock", 3, lockGlobal]);
  exportsAdded.push(["livemig:grow-refused", 3, refusedGlobal]);
  for (const [name] of exportsAdded) {
    if (layout.exportNames.has(name)) {
      throw new NotSupportedError(
        `Cannot instrument the Wasm module: it already exports "${name}"`,
      );
    }
  }

  return { exportsAdded, memoryExports, dirtyExports, globals };
}

/** Appends entries to a vector section's content (or starts one). */
function appendVec(
  content: Uint8Array | undefined,
  entries: readonly number[][],
): number[] {
  let count = 0;
  let rest: ArrayLike<number> = [];
  if (content !== undefined) {
    const reader = new WasmReader(content);
    count = reader.u32();
    rest = content.subarray(reader.offset);
  }
  return [
    ...uleb(count + entries.length),
    ...Array.from(rest),
    ...entries.flat(),
  ];
}

function rewriteCode(
  content: Uint8Array | undefined,
  layout: ModuleLayout,
  context: Omit<RewriteContext, "paramCount">,
): number[] {
  const bodies: Uint8Array[] = [];
  if (content !== undefined) {
    const reader = new WasmReader(content);
    const count = reader.u32();
    for (let i = 0; i < count; i++) {
      const size = reader.u32();
      const body = reader.take(size);
      const type = layout.types[layout.functionTypes[i]!];
      const rewritten = rewriteFunctionBody(body, {
        ...context,
        paramCount: type?.params ?? 0,
      });
      bodies.push(concatBytes([uleb(rewritten.byteLength), rewritten]));
    }
  }
  for (let k = 0; k < context.markRange.length; k++) {
    const body = markRangeBody(context.memoryCount + k);
    bodies.push(concatBytes([uleb(body.length), body]));
  }
  return Array.from(concatBytes([uleb(bodies.length), ...bodies]));
}

/** (start, length): dirty[start >> 12 ..= (start + length - 1) >> 12] = 1. */
function markRangeBody(dirtyMemory: number): number[] {
  // deno-fmt-ignore
  return [
    1, 1, 0x7f, // one i32 local: last
    0x20, 1, 0x45, 0x04, 0x40, 0x0f, 0x0b, // length 0: nothing
    0x20, 0, 0x20, 1, 0x6a, 0x41, 1, 0x6b, 0x22, 2, // last = start + length - 1
    0x20, 0, 0x49, 0x04, 0x40, 0x41, 0x7f, 0x21, 2, 0x0b, // wrapped: 2^32 - 1
    0x20, 0, 0x41, 12, 0x76, // first page
    0x41, 1,
    0x20, 2, 0x41, 12, 0x76, 0x20, 0, 0x41, 12, 0x76, 0x6b, 0x41, 1, 0x6a,
    0xfc, 11, ...uleb(dirtyMemory),
    0x0b,
  ];
}

/** Writes the sections in order, changed or added where needed. */
function assemble(
  bytes: Uint8Array,
  layout: ModuleLayout,
  added: Record<number, (content: Uint8Array | undefined) => number[]>,
): Uint8Array<ArrayBuffer> {
  const parts: Uint8Array[] = [bytes.subarray(0, 8)];
  const pending = new Set(Object.keys(added).map(Number));
  const emitMissingBefore = (id: number) => {
    for (const missing of [...pending]) {
      if (ORDER.indexOf(missing) < ORDER.indexOf(id)) {
        parts.push(wasmSection(missing, added[missing]!(undefined)));
        pending.delete(missing);
      }
    }
  };
  for (const section of layout.sections) {
    const content = bytes.subarray(section.start, section.end);
    if (section.id !== 0) emitMissingBefore(section.id);
    const change = added[section.id];
    if (change !== undefined) {
      parts.push(wasmSection(section.id, change(content)));
      pending.delete(section.id);
    } else {
      parts.push(bytes.subarray(section.headerStart, section.end));
    }
  }
  for (const missing of ORDER.filter((id) => pending.has(id))) {
    parts.push(wasmSection(missing, added[missing]!(undefined)));
  }
  return concatBytes(parts);
}
