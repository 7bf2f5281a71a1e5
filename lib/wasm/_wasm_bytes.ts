/**
 * Reading and writing the WebAssembly binary format's primitives: LEB128
 * integers (unsigned and signed), names, vectors, sections. Private to the
 * instrumenter.
 *
 * ```
 * module   = "\0asm" u32le(1) section*
 * section  = u8 id, u32leb size, size bytes
 * u32leb   = 7 bits per byte, low first, bit 7 = more
 * s33/s64  = the same, the last byte's bit 6 is the sign
 * ```
 *
 * @module
 */

import { StreamFormatError } from "../errors.ts";

/** Reads a Wasm binary, failing with the offset of a bad value. */
export class WasmReader {
  readonly bytes: Uint8Array;
  offset: number;
  readonly #end: number;

  constructor(bytes: Uint8Array, start = 0, end = bytes.byteLength) {
    this.bytes = bytes;
    this.offset = start;
    this.#end = end;
  }

  get done(): boolean {
    return this.offset >= this.#end;
  }

  get end(): number {
    return this.#end;
  }

  u8(): number {
    if (this.offset >= this.#end) {
      throw new StreamFormatError(
        "Cannot read the Wasm module: it ends in the middle of a value",
        { offset: this.offset },
      );
    }
    return this.bytes[this.offset++]!;
  }

  /** An unsigned LEB128 of up to 32 bits. */
  u32(): number {
    const start = this.offset;
    let result = 0;
    let shift = 0;
    for (;;) {
      const byte = this.u8();
      if (shift === 28 && byte > 0x0f) {
        throw new StreamFormatError(
          "Cannot read the Wasm module: a u32 is too large",
          { offset: start },
        );
      }
      result += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) return result;
      shift += 7;
    }
  }

  /** Skips a signed LEB128 of up to `bits` bits. */
  skipSigned(bits: number): void {
    const start = this.offset;
    for (let i = 0; i < Math.ceil(bits / 7); i++) {
      if ((this.u8() & 0x80) === 0) return;
    }
    throw new StreamFormatError(
      `Cannot read the Wasm module: an s${bits} is too long`,
      { offset: start },
    );
  }

  /** A signed LEB128 of up to 33 bits, as a number. */
  s33(): number {
    let result = 0;
    let shift = 0;
    let byte: number;
    do {
      byte = this.u8();
      result += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while ((byte & 0x80) !== 0 && shift < 35);
    if ((byte & 0x40) !== 0) result -= 2 ** shift;
    return result;
  }

  take(length: number): Uint8Array {
    if (this.offset + length > this.#end) {
      throw new StreamFormatError(
        `Cannot read the Wasm module: ${length} bytes run past its end`,
        { offset: this.offset },
      );
    }
    const bytes = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return bytes;
  }

  name(): string {
    return new TextDecoder().decode(this.take(this.u32()));
  }

  fail(message: string, at = this.offset): never {
    throw new StreamFormatError(`Cannot read the Wasm module: ${message}`, {
      offset: at,
    });
  }
}

/** Unsigned LEB128. */
export function uleb(value: number): number[] {
  const out: number[] = [];
  let rest = value;
  do {
    let byte = rest % 128;
    rest = Math.floor(rest / 128);
    if (rest !== 0) byte |= 0x80;
    out.push(byte);
  } while (rest !== 0);
  return out;
}

/** Signed LEB128 of an i32 value. */
export function sleb32(value: number): number[] {
  const out: number[] = [];
  let rest = value | 0;
  for (;;) {
    const byte = rest & 0x7f;
    rest >>= 7;
    const done = (rest === 0 && (byte & 0x40) === 0) ||
      (rest === -1 && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

/** A name: its UTF-8 length, then its bytes. */
export function wasmName(text: string): number[] {
  const bytes = new TextEncoder().encode(text);
  return [...uleb(bytes.byteLength), ...bytes];
}

/** A section: id, size, content. */
export function wasmSection(
  id: number,
  content: ArrayLike<number>,
): Uint8Array {
  const size = uleb(content.length);
  const out = new Uint8Array(1 + size.length + content.length);
  out[0] = id;
  out.set(size, 1);
  out.set(content, 1 + size.length);
  return out;
}
