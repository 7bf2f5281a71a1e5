/**
 * What the instrumenter needs to know of a module before rewriting it:
 * where its sections are, its function types, how many functions,
 * memories and globals it imports and defines, its export names, and
 * state a migration could not carry. Private to the instrumenter.
 *
 * ```
 * import  = name name (0x00 typeidx | 0x01 table | 0x02 limits
 *           | 0x03 valtype mut | 0x04 0x00 typeidx)
 * limits  = 0x00 min | 0x01 min max   (shared 0x02, 64-bit 0x04: refused)
 * global  = valtype mut constexpr 0x0b
 * export  = name kind index
 * ```
 *
 * @module
 */

import { NotSupportedError } from "../errors.ts";
import { WasmReader } from "./_wasm_bytes.ts";
import { readValueType } from "./_rewrite_function_body.ts";

/** One section's place in the module. */
export interface SectionPlace {
  id: number;
  /** Offset of its id byte. */
  headerStart: number;
  /** Offset of its content. */
  start: number;
  /** End of its content. */
  end: number;
}

/** A global's type. */
export interface GlobalType {
  type: number;
  mutable: boolean;
}

/** The module, as far as the instrumenter needs it. */
export interface ModuleLayout {
  sections: SectionPlace[];
  /** Parameter and result counts of each type. */
  types: { params: number; results: number }[];
  /** Type index of each defined function. */
  functionTypes: number[];
  importedFunctions: number;
  importedMemories: number;
  importedGlobals: GlobalType[];
  /** Defined memories: their initial size in 64 KiB pages. */
  memories: number[];
  globals: GlobalType[];
  exportNames: Set<string>;
  uncapturable: string[];
}

/**
 * Reads a module's layout.
 *
 * @param bytes The module.
 * @returns Its layout.
 */
export function readModuleLayout(bytes: Uint8Array): ModuleLayout {
  const reader = new WasmReader(bytes);
  const magic = reader.take(8);
  if (
    magic[0] !== 0 || magic[1] !== 0x61 || magic[2] !== 0x73 ||
    magic[3] !== 0x6d || magic[4] !== 1 || magic[5] !== 0 ||
    magic[6] !== 0 || magic[7] !== 0
  ) {
    reader.fail("it does not start with the Wasm magic and version 1", 0);
  }
  const layout: ModuleLayout = {
    sections: [],
    types: [],
    functionTypes: [],
    importedFunctions: 0,
    importedMemories: 0,
    importedGlobals: [],
    memories: [],
    globals: [],
    exportNames: new Set(),
    uncapturable: [],
  };
  while (!reader.done) {
    const headerStart = reader.offset;
    const id = reader.u8();
    const size = reader.u32();
    const start = reader.offset;
    reader.take(size);
    layout.sections.push({ id, headerStart, start, end: start + size });
    readSection(new WasmReader(bytes, start, start + size), id, layout);
  }
  return layout;
}

function readSection(reader: WasmReader, id: number, layout: ModuleLayout) {
  switch (id) {
    case 1:
      return eachEntry(reader, () => layout.types.push(readFuncType(reader)));
    case 2:
      return eachEntry(reader, () => readImport(reader, layout));
    case 3:
      return eachEntry(reader, () => layout.functionTypes.push(reader.u32()));
    case 4:
      return eachEntry(reader, () => readTable(reader));
    case 5:
      return eachEntry(reader, () => layout.memories.push(readLimits(reader)));
    case 6:
      return eachEntry(reader, () => {
        layout.globals.push(readGlobalType(reader));
        skipConstExpr(reader);
      });
    case 7:
      return eachEntry(reader, () => {
        const name = reader.name();
        const kind = reader.u8();
        const index = reader.u32();
        layout.exportNames.add(name);
        if (kind === 1) {
          layout.uncapturable.push(
            `table ${index} (exported as "${name}": the host can change it)`,
          );
        }
      });
    default:
      return;
  }
}

function eachEntry(reader: WasmReader, read: () => void): void {
  const count = reader.u32();
  for (let i = 0; i < count; i++) read();
}

function readFuncType(reader: WasmReader) {
  const form = reader.u8();
  if (form !== 0x60) {
    throw new NotSupportedError(
      `Cannot instrument the Wasm module: type form 0x${
        form.toString(16)
      } (garbage collection types) is not supported`,
    );
  }
  const params = reader.u32();
  for (let i = 0; i < params; i++) readValueType(reader);
  const results = reader.u32();
  for (let i = 0; i < results; i++) readValueType(reader);
  return { params, results };
}

function readImport(reader: WasmReader, layout: ModuleLayout): void {
  const name = `${reader.name()}.${reader.name()}`;
  const kind = reader.u8();
  switch (kind) {
    case 0:
      reader.u32();
      layout.importedFunctions++;
      return;
    case 1:
      readTable(reader);
      layout.uncapturable.push(
        `table "${name}" (imported: the host can change it)`,
      );
      return;
    case 2:
      readLimits(reader);
      layout.importedMemories++;
      return;
    case 3:
      layout.importedGlobals.push(readGlobalType(reader));
      return;
    case 4:
      reader.u8();
      reader.u32();
      return;
    default:
      reader.fail(`unknown import kind ${kind}`);
  }
}

function readTable(reader: WasmReader): void {
  if (reader.bytes[reader.offset] === 0x40) {
    throw new NotSupportedError(
      "Cannot instrument the Wasm module: tables with an initial value are not supported",
    );
  }
  readValueType(reader);
  const flags = reader.u8();
  reader.u32();
  if (flags & 1) reader.u32();
}

/** Reads memory limits; returns the minimum, in 64 KiB pages. */
function readLimits(reader: WasmReader): number {
  const at = reader.offset;
  const flags = reader.u8();
  if (flags > 1) {
    const what = flags & 2
      ? "shared memories (threads)"
      : flags & 4
      ? "64-bit memories (memory64)"
      : `memory limits 0x${flags.toString(16)}`;
    throw new NotSupportedError(
      `Cannot instrument the Wasm module: ${what} are not supported (at byte ${at})`,
    );
  }
  const min = reader.u32();
  if (flags & 1) reader.u32();
  return min;
}

function readGlobalType(reader: WasmReader): GlobalType {
  const type = readValueType(reader);
  return { type, mutable: reader.u8() === 1 };
}

/** Skips a constant expression up to and including its `end`. */
function skipConstExpr(reader: WasmReader): void {
  for (;;) {
    const op = reader.u8();
    if (op === 0x0b) return;
    if (op === 0x41) reader.skipSigned(32);
    else if (op === 0x42) reader.skipSigned(64);
    else if (op === 0x43) reader.take(4);
    else if (op === 0x44) reader.take(8);
    else if (op === 0x23 || op === 0xd2) reader.u32();
    else if (op === 0xd0) reader.s33();
    else if (op === 0xfd) {
      reader.u32();
      reader.take(16);
    } else if (![0x6a, 0x6b, 0x6c, 0x7c, 0x7d, 0x7e].includes(op)) {
      reader.fail(`unknown constant instruction 0x${op.toString(16)}`);
    }
  }
}
