/**
 * Builds small Wasm modules byte by byte for the instrumenter's tests: one
 * memory, functions with their code given as instruction bytes.
 */

import { sleb32, uleb } from "../../lib/wasm/_wasm_bytes.ts";

export { uleb };

/** Signed LEB128 of an i32 value. */
export const sleb: (value: number) => number[] = sleb32;

function name(text: string): number[] {
  const bytes = new TextEncoder().encode(text);
  return [...uleb(bytes.length), ...bytes];
}

function section(id: number, entries: number[][]): number[] {
  const content = [...uleb(entries.length), ...entries.flat()];
  return [id, ...uleb(content.length), ...content];
}

export interface TestFunction {
  name: string;
  params: number[];
  results?: number[];
  /** Extra locals: [count, type] pairs. */
  locals?: [number, number][];
  /** The code, without the final `end`. */
  code: number[];
}

export interface TestModule {
  /** Memory limits: [min] or [min, max] in 64 KiB pages; none: no memory. */
  memory?: number[];
  /** Raw memory flags (e.g. 3 for shared). */
  memoryFlags?: number;
  functions: TestFunction[];
  /** Mutable i32 globals (their initial values). */
  globals?: number[];
  /** Passive data segments. */
  data?: number[][];
  /** A funcref table of this size, with elements. */
  table?: number;
}

export const I32 = 0x7f;
export const I64 = 0x7e;
export const F32 = 0x7d;
export const F64 = 0x7c;

export function buildModule(spec: TestModule): Uint8Array<ArrayBuffer> {
  const types = spec.functions.map((f) => [
    0x60,
    ...uleb(f.params.length),
    ...f.params,
    ...uleb(f.results?.length ?? 0),
    ...(f.results ?? []),
  ]);
  const out = [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0];
  out.push(...section(1, types));
  out.push(...section(3, spec.functions.map((_, i) => uleb(i))));
  if (spec.table !== undefined) {
    out.push(...section(4, [[0x70, 0, ...uleb(spec.table)]]));
  }
  if (spec.memory !== undefined) {
    const flags = spec.memoryFlags ?? (spec.memory.length > 1 ? 1 : 0);
    out.push(...section(5, [[flags, ...spec.memory.flatMap(uleb)]]));
  }
  if (spec.globals !== undefined) {
    out.push(
      ...section(6, spec.globals.map((v) => [I32, 1, 0x41, ...sleb(v), 0x0b])),
    );
  }
  const exports = spec.functions.map((
    f,
    i,
  ) => [...name(f.name), 0, ...uleb(i)]);
  if (spec.memory !== undefined) exports.push([...name("memory"), 2, 0]);
  out.push(...section(7, exports));
  // The data count section, needed by memory.init.
  if (spec.data !== undefined) out.push(12, 1, spec.data.length);
  out.push(
    ...section(
      10,
      spec.functions.map((f) => {
        const locals = f.locals ?? [];
        const body = [
          ...uleb(locals.length),
          ...locals.flatMap(([count, type]) => [...uleb(count), type]),
          ...f.code,
          0x0b,
        ];
        return [...uleb(body.length), ...body];
      }),
    ),
  );
  if (spec.data !== undefined) {
    out.push(
      ...section(11, spec.data.map((d) => [1, ...uleb(d.length), ...d])),
    );
  }
  return new Uint8Array(out);
}
