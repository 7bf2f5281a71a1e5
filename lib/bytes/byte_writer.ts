/**
 * A growable big-endian byte buffer.
 *
 * Writes append at the end; the buffer doubles when full. {@linkcode
 * ByteWriter.bytes} returns a view of what was written (no copy; it stays
 * valid until the next write or {@linkcode ByteWriter.reset}), and
 * {@linkcode ByteWriter.takeBytes} hands the bytes over and starts a fresh
 * buffer, so a stream stage can enqueue them without copying.
 *
 * @example Usage
 * ```ts
 * import { ByteWriter } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const writer = new ByteWriter(4);
 * writer.uint8(0x08).uint16(2).uint16(4).uint32(1);
 * assert.deepEqual(writer.bytes(), new Uint8Array([8, 0, 2, 0, 4, 0, 0, 0, 1]));
 * ```
 */
export class ByteWriter {
  #buffer: Uint8Array;
  #length = 0;

  /**
   * Constructs a new instance.
   *
   * @param initialCapacity Bytes to allocate up front.
   */
  constructor(initialCapacity: number = 4096) {
    if (!Number.isInteger(initialCapacity) || initialCapacity < 1) {
      throw new RangeError(
        `Cannot construct ByteWriter as initialCapacity must be a positive integer: received ${initialCapacity}`,
      );
    }
    this.#buffer = new Uint8Array(initialCapacity);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#length;
  }

  /**
   * Makes room for `size` more bytes.
   *
   * @param size How many bytes are about to be written.
   */
  reserve(size: number): void {
    const needed = this.#length + size;
    if (needed <= this.#buffer.byteLength) return;
    let capacity = this.#buffer.byteLength * 2;
    while (capacity < needed) capacity *= 2;
    const next = new Uint8Array(capacity);
    next.set(this.#buffer.subarray(0, this.#length));
    this.#buffer = next;
  }

  /**
   * Appends one byte.
   *
   * @param value The byte, 0..255.
   * @returns This writer.
   */
  uint8(value: number): this {
    this.reserve(1);
    this.#buffer[this.#length++] = value;
    return this;
  }

  /**
   * Appends a big-endian 16-bit integer.
   *
   * @param value The integer, 0..0xffff.
   * @returns This writer.
   */
  uint16(value: number): this {
    this.reserve(2);
    const b = this.#buffer;
    b[this.#length++] = value >>> 8;
    b[this.#length++] = value;
    return this;
  }

  /**
   * Appends a big-endian 32-bit integer.
   *
   * @param value The integer, 0..0xffffffff.
   * @returns This writer.
   */
  uint32(value: number): this {
    this.reserve(4);
    const b = this.#buffer;
    b[this.#length++] = value >>> 24;
    b[this.#length++] = value >>> 16;
    b[this.#length++] = value >>> 8;
    b[this.#length++] = value;
    return this;
  }

  /**
   * Appends a big-endian 64-bit integer given as a non-negative safe
   * integer.
   *
   * @param value The integer, 0..2^53-1.
   * @returns This writer.
   */
  uint64(value: number): this {
    const high = Math.floor(value / 0x1_0000_0000);
    return this.uint32(high).uint32(value >>> 0);
  }

  /**
   * Appends a big-endian 64-bit integer.
   *
   * @param value The integer, 0..2^64-1.
   * @returns This writer.
   */
  bigUint64(value: bigint): this {
    return this.uint32(Number(value >> 32n) >>> 0).uint32(
      Number(value & 0xffff_ffffn) >>> 0,
    );
  }

  /**
   * Appends bytes (copied).
   *
   * @param bytes The bytes.
   * @returns This writer.
   */
  write(bytes: Uint8Array): this {
    this.reserve(bytes.byteLength);
    this.#buffer.set(bytes, this.#length);
    this.#length += bytes.byteLength;
    return this;
  }

  /**
   * Appends a QEMU counted string: one length byte, then the bytes.
   *
   * @param text The string; its UTF-8 encoding must be at most 255 bytes.
   * @returns This writer.
   */
  countedString(text: string): this {
    const bytes = ENCODER.encode(text);
    if (bytes.byteLength > 255) {
      throw new RangeError(
        `Cannot write counted string as it must be at most 255 bytes: received ${bytes.byteLength}`,
      );
    }
    return this.uint8(bytes.byteLength).write(bytes);
  }

  /**
   * Overwrites a big-endian 32-bit integer at `offset` (for length fields
   * written before their content is known).
   *
   * @param offset Where the integer starts; must be within what was written.
   * @param value The integer.
   */
  patchUint32(offset: number, value: number): void {
    if (offset < 0 || offset + 4 > this.#length) {
      throw new RangeError(
        `Cannot patch offset ${offset}: only ${this.#length} bytes are written`,
      );
    }
    const b = this.#buffer;
    b[offset] = value >>> 24;
    b[offset + 1] = value >>> 16;
    b[offset + 2] = value >>> 8;
    b[offset + 3] = value;
  }

  /**
   * A view of the bytes written so far; valid until the next write.
   *
   * @returns The bytes, aliasing the internal buffer.
   */
  bytes(): Uint8Array {
    return this.#buffer.subarray(0, this.#length);
  }

  /**
   * Hands over the bytes written so far and starts a fresh buffer of the
   * same capacity. The returned bytes are no longer touched by the writer.
   *
   * @returns The bytes.
   */
  takeBytes(): Uint8Array {
    const bytes = this.#buffer.subarray(0, this.#length);
    this.#buffer = new Uint8Array(this.#buffer.byteLength);
    this.#length = 0;
    return bytes;
  }

  /** Forgets what was written, keeping the buffer for reuse. */
  reset(): void {
    this.#length = 0;
  }
}

const ENCODER = new TextEncoder();
