/**
 * The VMDESCRIPTION trailer: JSON that QEMU appends after EOF to describe
 * the layout of every FULL (device) section it sent, and the walker that
 * uses it to delimit and decode device state.
 *
 * ```
 * 0x06  be32 len  len bytes of JSON:
 * {"page_size": 4096, "devices": [
 *   {"name": "timer", "instance_id": 0, "vmsd_name": "timer", "version": 2,
 *    "fields": [{"name": "cpu_ticks_offset", "type": "int64", "size": 8}, …],
 *    "subsections": [{"vmsd_name": "timer/dticks", "version": 1, "fields": […]}]},
 *   …]}
 * ```
 *
 * A device body is its fields in order (each `size` bytes, `array_len`
 * times; `struct`/`vstruct` fields recurse), then one SUBSECTION per listed
 * subsection: `0x05, u8 len, name, be32 version`, then its own body.
 *
 * @module
 */

import { StreamFormatError } from "../errors.ts";

/** One field of a vmstate description. */
export interface VmdescField {
  /** Field name (QEMU suffixes `[n]` when a name repeats). */
  name: string;
  /** vmstate info type (`uint32`, `int32 le`, `timer`, `buffer`, `struct`, …). */
  type: string;
  /** Bytes written for one element. */
  size: number;
  /** The entry stands for this many consecutive elements. */
  "array_len"?: number;
  /** Element index, for arrays listed element by element. */
  index?: number;
  /** For `struct`/`vstruct` fields: the nested description. */
  struct?: VmdescStruct;
}

/** A vmstate description: fields and the subsections that were written. */
export interface VmdescStruct {
  /** The vmstate name. */
  "vmsd_name"?: string;
  /** The version actually written. */
  version?: number;
  /** Fields in wire order. */
  fields?: VmdescField[];
  /** Subsections in wire order, present only when at least one was written. */
  subsections?: VmdescStruct[];
}

/** One device (FULL section) of the description. */
export interface VmdescDevice extends VmdescStruct {
  /** The section idstr. */
  name: string;
  /** The section instance id. */
  "instance_id": number;
}

/** The whole VMDESCRIPTION document. */
export interface VmdescDocument {
  /** The target page size. */
  "page_size": number;
  /** One entry per FULL section, in stream order. */
  devices: VmdescDevice[];
  /** QEMU 10.0: the configuration section's description. */
  configuration?: VmdescStruct;
}

/**
 * Parses and checks vmdesc JSON bytes.
 *
 * @example Usage
 * ```ts
 * import { parseVmdesc } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const json = '{"page_size":4096,"devices":[{"name":"timer","instance_id":0,"fields":[{"name":"t","type":"int64","size":8}]}]}';
 * const document = parseVmdesc(new TextEncoder().encode(json));
 * assert.equal(document.devices[0]!.name, "timer");
 * ```
 *
 * @param bytes The JSON bytes.
 * @param offset The stream offset of the first JSON byte, for errors.
 * @returns The document.
 * @throws {StreamFormatError} If the bytes are not a vmdesc document.
 */
export function parseVmdesc(bytes: Uint8Array, offset = 0): VmdescDocument {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (cause) {
    throw new StreamFormatError(
      `Cannot decode vmdesc at offset ${offset}: the JSON does not parse`,
      { offset, cause },
    );
  }
  const fail = (what: string): never => {
    throw new StreamFormatError(
      `Cannot decode vmdesc at offset ${offset}: ${what}`,
      { offset },
    );
  };
  if (!isObject(value)) fail("the top level is not an object");
  const document = value as Record<string, unknown>;
  if (!Array.isArray(document.devices)) fail('"devices" is not an array');
  const pageSize = document.page_size;
  if (
    typeof pageSize !== "number" || !Number.isInteger(pageSize) || pageSize <= 0
  ) {
    fail('"page_size" is not a positive integer');
  }
  for (const [i, device] of (document.devices as unknown[]).entries()) {
    if (!isObject(device)) fail(`device ${i} is not an object`);
    const d = device as Record<string, unknown>;
    if (typeof d.name !== "string") fail(`device ${i} has no "name"`);
    if (typeof d.instance_id !== "number") {
      fail(`device ${i} ("${d.name}") has no "instance_id"`);
    }
    checkStruct(d, `device "${d.name}"`, fail, 0);
  }
  return value as VmdescDocument;
}

function checkStruct(
  struct: Record<string, unknown>,
  where: string,
  fail: (what: string) => never,
  depth: number,
): void {
  if (depth > 64) fail(`${where} nests deeper than 64 levels`);
  if (struct.fields !== undefined) {
    if (!Array.isArray(struct.fields)) {
      fail(`${where} "fields" is not an array`);
    }
    for (const field of struct.fields as unknown[]) {
      if (!isObject(field)) fail(`${where} has a field that is not an object`);
      const f = field as Record<string, unknown>;
      if (typeof f.name !== "string" || typeof f.type !== "string") {
        fail(`${where} has a field without "name" or "type"`);
      }
      if (!isCount(f.size)) {
        fail(`${where} field "${f.name}" has a bad "size"`);
      }
      if (f.array_len !== undefined && !isCount(f.array_len)) {
        fail(`${where} field "${f.name}" has a bad "array_len"`);
      }
      if (f.struct !== undefined) {
        if (!isObject(f.struct)) {
          fail(`${where} field "${f.name}" has a bad "struct"`);
        }
        checkStruct(
          f.struct as Record<string, unknown>,
          `${where} field "${f.name}"`,
          fail,
          depth + 1,
        );
      } else if (f.type === "struct" || f.type === "vstruct") {
        fail(`${where} field "${f.name}" is a struct without "struct"`);
      }
    }
  }
  if (struct.subsections !== undefined) {
    if (!Array.isArray(struct.subsections)) {
      fail(`${where} "subsections" is not an array`);
    }
    for (const sub of struct.subsections as unknown[]) {
      if (!isObject(sub)) {
        fail(`${where} has a subsection that is not an object`);
      }
      const s = sub as Record<string, unknown>;
      if (typeof s.vmsd_name !== "string") {
        fail(`${where} has a subsection without "vmsd_name"`);
      }
      checkStruct(s, `subsection "${s.vmsd_name}"`, fail, depth + 1);
    }
  }
}

function isObject(value: unknown): boolean {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): boolean {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 &&
    value <= 0x7fff_ffff;
}

/** A decoded device field value, shaped like analyze-migration.py prints it. */
export type VmstateValue =
  | string
  | boolean
  | VmstateValue[]
  | { [name: string]: VmstateValue };

/** What {@linkcode walkVmstate} found. */
export interface VmstateWalk {
  /** Offset in `bytes` just past the body. */
  end: number;
  /** The decoded fields, when asked for. */
  value?: { [name: string]: VmstateValue };
}

/**
 * Walks one device body (fields, then subsections) through its
 * description, as QEMU's loader reads it.
 *
 * @example Usage
 * ```ts
 * import { walkVmstate } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const body = new Uint8Array([0, 0, 0, 42, 1]);
 * const walk = walkVmstate(body, 0, {
 *   fields: [{ name: "count", type: "uint32", size: 4 }, { name: "on", type: "bool", size: 1 }],
 * }, { decode: true });
 * assert.equal(walk.end, 5);
 * assert.deepEqual(walk.value, { count: "0x0000002a", on: true });
 * ```
 *
 * @param bytes The buffer holding the body.
 * @param start Where the body starts in `bytes`.
 * @param description The device's (or subsection's) description.
 * @param options `decode` to build the value tree; `baseOffset` is the
 *   stream offset of `bytes[0]`, for errors.
 * @returns Where the body ends, and the values when decoded.
 * @throws {StreamFormatError} If the body runs past the buffer or a
 *   subsection is missing.
 */
export function walkVmstate(
  bytes: Uint8Array,
  start: number,
  description: VmdescStruct,
  options: { decode?: boolean; baseOffset?: number } = {},
): VmstateWalk {
  const walker = new Walker(
    bytes,
    start,
    options.baseOffset ?? 0,
    options.decode ?? false,
  );
  const value = walker.struct(description, 0);
  return options.decode
    ? { end: walker.pos, value: value! }
    : { end: walker.pos };
}

class Walker {
  pos: number;
  constructor(
    readonly bytes: Uint8Array,
    start: number,
    readonly base: number,
    readonly decode: boolean,
  ) {
    this.pos = start;
  }

  struct(
    description: VmdescStruct,
    depth: number,
  ): { [name: string]: VmstateValue } | undefined {
    const out: { [name: string]: VmstateValue } | undefined = this.decode
      ? {}
      : undefined;
    for (const field of description.fields ?? []) {
      const count = field.array_len ?? 1;
      const values: VmstateValue[] = [];
      for (let i = 0; i < count; i++) {
        const value = this.field(field, depth);
        if (out) values.push(value!);
      }
      if (!out) continue;
      if (field.array_len !== undefined) {
        out[field.name] = values;
      } else if (field.index !== undefined) {
        const list = out[field.name];
        if (Array.isArray(list)) list.push(values[0]!);
        else out[field.name] = [values[0]!];
      } else {
        out[field.name] = values[0]!;
      }
    }
    for (const sub of description.subsections ?? []) {
      const at = this.pos;
      const name = sub.vmsd_name ?? "";
      this.need(2, `subsection "${name}"`);
      if (this.bytes[this.pos] !== 0x05) {
        throw this.error(
          at,
          `expected subsection "${name}" (0x05), found byte 0x${
            this.bytes[this.pos]!.toString(16).padStart(2, "0")
          }`,
        );
      }
      const length = this.bytes[this.pos + 1]!;
      this.need(2 + length + 4, `subsection "${name}" header`);
      const found = new TextDecoder().decode(
        this.bytes.subarray(this.pos + 2, this.pos + 2 + length),
      );
      if (found !== name) {
        throw this.error(at, `expected subsection "${name}", found "${found}"`);
      }
      this.pos += 2 + length + 4;
      const value = this.struct(sub, depth + 1);
      if (out) out[name] = value!;
    }
    return out;
  }

  field(field: VmdescField, depth: number): VmstateValue | undefined {
    if (field.struct && (field.type === "struct" || field.type === "vstruct")) {
      if (depth > 64) throw this.error(this.pos, "structs nest too deeply");
      return this.struct(field.struct, depth + 1);
    }
    const size = field.size;
    this.need(size, `field "${field.name}"`);
    const data = this.bytes.subarray(this.pos, this.pos + size);
    this.pos += size;
    return this.decode ? formatField(field.type, data) : undefined;
  }

  need(size: number, what: string): void {
    if (this.pos + size > this.bytes.byteLength) {
      throw this.error(
        this.pos,
        `${what} needs ${size} bytes but only ${
          this.bytes.byteLength - this.pos
        } remain`,
      );
    }
  }

  error(at: number, what: string): StreamFormatError {
    const offset = this.base + at;
    return new StreamFormatError(
      `Cannot walk device state at offset ${offset}: ${what}`,
      { offset },
    );
  }
}

const SIGNED = new Set([
  "int8",
  "int16",
  "int32",
  "int64",
  "int32 equal",
  "int64 equal",
  "uint8 equal",
  "uint16 equal",
]);
const UNSIGNED = new Set([
  "uint8",
  "uint16",
  "uint32",
  "uint64",
  "uint32 equal",
]);

function formatField(type: string, data: Uint8Array): VmstateValue {
  if (type === "bool" && data.byteLength === 1) return data[0] !== 0;
  const littleEndian = type === "int32 le";
  if (
    (SIGNED.has(type) || UNSIGNED.has(type) || littleEndian) &&
    data.byteLength >= 1 && data.byteLength <= 8
  ) {
    let unsigned = 0n;
    for (let i = 0; i < data.byteLength; i++) {
      const byte = littleEndian ? data[data.byteLength - 1 - i]! : data[i]!;
      unsigned = (unsigned << 8n) | BigInt(byte);
    }
    const hex = `0x${unsigned.toString(16).padStart(data.byteLength * 2, "0")}`;
    if (!UNSIGNED.has(type)) {
      const bits = BigInt(data.byteLength * 8);
      const signed = unsigned >= 1n << (bits - 1n)
        ? unsigned - (1n << bits)
        : unsigned;
      if (signed < 0n) return `${hex} (${signed})`;
    }
    return hex;
  }
  return Array.from(data, (b) => b.toString(16).padStart(2, "0")).join(" ");
}
