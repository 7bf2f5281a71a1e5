/**
 * The bytes a {@linkcode ByteReader} holds between reads: the chunks as they
 * arrived, a read position in the first of them, and the stream offset.
 * Synchronous and allocation-free unless a value spans chunks. Private to
 * lib/streams/.
 *
 * ```
 * #chunks  [ EMPTY | EMPTY | chunk #head ...#pos......| chunk | chunk ]
 *                                       └── unread ──────────────────┘
 * ```
 *
 * Consumed chunks are replaced by an empty array until the head passes 64
 * of them, so the array is not shifted on every chunk.
 *
 * @module
 */

/** Buffered chunks with a read position; see the module comment. */
export class ChunkQueue {
  #chunks: Uint8Array[] = [];
  #head = 0; // index of the first chunk still holding bytes
  #pos = 0; // read position inside #chunks[#head]
  #buffered = 0;
  #offset: number;

  /** @param offset The stream offset of the first byte to come. */
  constructor(offset: number) {
    this.#offset = offset;
  }

  /** The stream offset of the next unread byte. */
  get offset(): number {
    return this.#offset;
  }

  /** How many bytes can be taken. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Appends a non-empty chunk as it arrived (not copied). */
  push(chunk: Uint8Array): void {
    this.#chunks.push(chunk);
    this.#buffered += chunk.byteLength;
  }

  /** Drops every buffered byte; the offset stays. */
  clear(): void {
    this.#chunks = [];
    this.#head = 0;
    this.#pos = 0;
    this.#buffered = 0;
  }

  /** The unread part of the first chunk, `undefined` when none is left. */
  unreadHead(): Uint8Array | undefined {
    return this.#chunks[this.#head]?.subarray(this.#pos);
  }

  /** See {@linkcode ByteReader.take}. */
  take(size: number): Uint8Array {
    if (size > this.#buffered) {
      throw new RangeError(
        `Cannot take ${size} bytes: only ${this.#buffered} are buffered`,
      );
    }
    if (size === 0) return new Uint8Array(0);
    const chunk = this.#chunks[this.#head]!;
    if (chunk.byteLength - this.#pos >= size) {
      const bytes = chunk.subarray(this.#pos, this.#pos + size);
      this.#advance(size);
      return bytes;
    }
    const bytes = new Uint8Array(size);
    for (let filled = 0; filled < size;) {
      const current = this.#chunks[this.#head]!;
      const count = Math.min(current.byteLength - this.#pos, size - filled);
      bytes.set(current.subarray(this.#pos, this.#pos + count), filled);
      this.#advance(count);
      filled += count;
    }
    return bytes;
  }

  /** See {@linkcode ByteReader.takeUint8}. */
  takeUint8(): number {
    if (this.#buffered < 1) {
      throw new RangeError("Cannot take a byte: none is buffered");
    }
    const value = this.#chunks[this.#head]![this.#pos]!;
    this.#advance(1);
    return value;
  }

  /** See {@linkcode ByteReader.takeUint16}. */
  takeUint16(): number {
    const chunk = this.#chunks[this.#head];
    const pos = this.#pos;
    if (chunk !== undefined && pos + 2 <= chunk.byteLength) {
      const value = (chunk[pos]! << 8) | chunk[pos + 1]!;
      this.#advance(2);
      return value;
    }
    const b = this.#small(2);
    return (b[0]! << 8) | b[1]!;
  }

  /** See {@linkcode ByteReader.takeUint32}. */
  takeUint32(): number {
    const chunk = this.#chunks[this.#head];
    const pos = this.#pos;
    if (chunk !== undefined && pos + 4 <= chunk.byteLength) {
      const value = ((chunk[pos]! << 24) | (chunk[pos + 1]! << 16) |
        (chunk[pos + 2]! << 8) | chunk[pos + 3]!) >>> 0;
      this.#advance(4);
      return value;
    }
    const b = this.#small(4);
    return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
  }

  /** See {@linkcode ByteReader.peek}. */
  peek(size: number): Uint8Array {
    if (size > this.#buffered) {
      throw new RangeError(
        `Cannot peek at ${size} bytes: only ${this.#buffered} are buffered`,
      );
    }
    const first = this.#chunks[this.#head];
    if (first === undefined) return new Uint8Array(0);
    if (first.byteLength - this.#pos >= size) {
      return first.subarray(this.#pos, this.#pos + size);
    }
    let total = first.byteLength - this.#pos;
    let last = this.#head;
    while (total < size) {
      last++;
      total += this.#chunks[last]!.byteLength;
    }
    const merged = new Uint8Array(total);
    merged.set(first.subarray(this.#pos));
    let at = first.byteLength - this.#pos;
    for (let i = this.#head + 1; i <= last; i++) {
      merged.set(this.#chunks[i]!, at);
      at += this.#chunks[i]!.byteLength;
    }
    this.#chunks.splice(this.#head, last - this.#head + 1, merged);
    this.#pos = 0;
    return merged.subarray(0, size);
  }

  /** See {@linkcode ByteReader.peekUint8}. */
  peekUint8(ahead: number): number {
    if (ahead >= this.#buffered) {
      throw new RangeError(
        `Cannot peek at byte ${ahead}: only ${this.#buffered} are buffered`,
      );
    }
    let index = this.#head;
    let pos = this.#pos + ahead;
    while (pos >= this.#chunks[index]!.byteLength) {
      pos -= this.#chunks[index]!.byteLength;
      index++;
    }
    return this.#chunks[index]![pos]!;
  }

  /** See {@linkcode ByteReader.peekUint32}. */
  peekUint32(ahead: number): number {
    if (ahead + 4 > this.#buffered) {
      throw new RangeError(
        `Cannot peek at bytes ${ahead}..${
          ahead + 4
        }: only ${this.#buffered} are buffered`,
      );
    }
    const chunk = this.#chunks[this.#head]!;
    const at = this.#pos + ahead;
    if (at + 4 <= chunk.byteLength) {
      return ((chunk[at]! << 24) | (chunk[at + 1]! << 16) |
        (chunk[at + 2]! << 8) | chunk[at + 3]!) >>> 0;
    }
    return ((this.peekUint8(ahead) << 24) |
      (this.peekUint8(ahead + 1) << 16) | (this.peekUint8(ahead + 2) << 8) |
      this.peekUint8(ahead + 3)) >>> 0;
  }

  /** Consumes `count` buffered bytes without copying them. */
  discard(count: number): void {
    let done = 0;
    while (done < count) {
      const chunk = this.#chunks[this.#head]!;
      const step = Math.min(chunk.byteLength - this.#pos, count - done);
      this.#advance(step);
      done += step;
    }
  }

  /**
   * Takes up to `maxBytes` of the first chunk, as it arrived; there must
   * be a buffered byte.
   */
  takeRun(maxBytes: number): Uint8Array {
    const chunk = this.#chunks[this.#head]!;
    const size = Math.min(chunk.byteLength - this.#pos, maxBytes);
    const bytes = chunk.subarray(this.#pos, this.#pos + size);
    this.#advance(size);
    return bytes;
  }

  #small(size: number): Uint8Array {
    if (size > this.#buffered) {
      throw new RangeError(
        `Cannot take ${size} bytes: only ${this.#buffered} are buffered`,
      );
    }
    const chunk = this.#chunks[this.#head]!;
    if (chunk.byteLength - this.#pos >= size) {
      const view = chunk.subarray(this.#pos, this.#pos + size);
      this.#advance(size);
      return view;
    }
    return this.take(size);
  }

  #advance(count: number): void {
    this.#pos += count;
    this.#buffered -= count;
    this.#offset += count;
    const chunk = this.#chunks[this.#head]!;
    if (this.#pos === chunk.byteLength) {
      this.#chunks[this.#head] = EMPTY;
      this.#head++;
      this.#pos = 0;
      if (this.#head === this.#chunks.length) {
        this.#chunks.length = 0;
        this.#head = 0;
      } else if (this.#head >= 64) {
        this.#chunks = this.#chunks.slice(this.#head);
        this.#head = 0;
      }
    }
  }
}

const EMPTY = new Uint8Array(0);
