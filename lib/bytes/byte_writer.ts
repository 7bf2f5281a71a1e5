/**
 * A growable big-endian byte buffer.
 *
 * Writes append at the end; the buffer doubles when full. {@linkcode
 * ByteWriter.bytes} returns a view of what was written (no copy; it stays
 * valid until the next write or {@linkcode ByteWriter.reset}), and
 * {@linkcode ByteWriter.takeBytes} hands the bytes over, so a stream stage
 * can enqueue them without copying.
 *
 * Memory never touched before is slow to write the first time (the
 * operating system maps it page by page), so the writer avoids fresh
 * buffers where it can: a small result is copied out and the buffer kept,
 * and a large one's buffer can be given back with
 * {@linkcode ByteWriter.recycle} once its bytes are no longer needed.
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
  /** Buffers handed out by takeBytes() and not recycled yet. */
  readonly #handedOut = new WeakSet<ArrayBufferLike>();
  /** Recycled buffers, ready for reuse. */
  readonly #spare: Uint8Array[] = [];

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
    this.#grow(needed);
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
   * Hands over the bytes written so far and starts afresh. The returned
   * bytes are no longer touched by the writer (until they are given back
   * with {@linkcode ByteWriter.recycle}).
   *
   * Up to 64 KiB are copied into an array of their exact size and the
   * buffer is kept. Larger results are the buffer itself; the writer then
   * continues in a recycled buffer, or in a new one of the same capacity.
   *
   * @example Large results are the buffer itself, and can be recycled
   * ```ts
   * import { ByteWriter } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const writer = new ByteWriter(256 * 1024);
   * const used = new Set<ArrayBufferLike>();
   * for (let i = 0; i < 10; i++) {
   *   writer.write(new Uint8Array(200 * 1024).fill(i));
   *   const chunk = writer.takeBytes();
   *   assert.equal(chunk[0], i);
   *   used.add(chunk.buffer);
   *   assert.ok(writer.recycle(chunk)); // its bytes are no longer needed
   *   assert.ok(!writer.recycle(chunk)); // a second time is refused
   * }
   * assert.equal(used.size, 2); // two buffers take turns
   * ```
   *
   * @returns The bytes.
   */
  takeBytes(): Uint8Array {
    const length = this.#length;
    this.#length = 0;
    if (length <= SMALL_TAKE_BYTES) {
      return this.#buffer.slice(0, length);
    }
    const bytes = this.#buffer.subarray(0, length);
    this.#handedOut.add(bytes.buffer);
    this.#buffer = this.#spare.pop() ??
      new Uint8Array(this.#buffer.byteLength);
    return bytes;
  }

  /**
   * Gives back bytes that {@linkcode ByteWriter.takeBytes} handed out, once
   * nothing reads them any more: their buffer is written again by a later
   * write. Anything else (bytes from elsewhere, bytes given back already,
   * small results, which were copies) is refused and left alone.
   *
   * @param bytes Bytes returned by `takeBytes()`; they must not be used
   *   after this call.
   * @returns Whether the buffer was taken back for reuse.
   */
  recycle(bytes: Uint8Array): boolean {
    const buffer = bytes.buffer;
    if (!this.#handedOut.delete(buffer)) return false;
    if (this.#spare.length < MAX_SPARE_BUFFERS) {
      this.#spare.push(new Uint8Array(buffer));
    }
    return true;
  }

  /** Forgets what was written, keeping the buffer for reuse. */
  reset(): void {
    this.#length = 0;
  }

  #grow(needed: number): void {
    let capacity = this.#buffer.byteLength * 2;
    while (capacity < needed) capacity *= 2;
    const next = new Uint8Array(capacity);
    next.set(this.#buffer.subarray(0, this.#length));
    this.#buffer = next;
  }
}

/**
 * Results of `takeBytes()` up to this size are copied out, so that small
 * chunks do not each cost a whole fresh buffer.
 */
const SMALL_TAKE_BYTES = 64 * 1024;

/** Recycled buffers a writer keeps at most. */
const MAX_SPARE_BUFFERS = 8;

const ENCODER = new TextEncoder();
