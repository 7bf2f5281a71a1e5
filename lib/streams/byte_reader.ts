import { StreamFormatError, UnexpectedEndOfStreamError } from "../errors.ts";
import { ChunkQueue } from "./_chunk_queue.ts";
import { LandingBuffer } from "./_landing_buffer.ts";

/** Options for {@linkcode ByteReader}. */
export interface ByteReaderOptions {
  /**
   * When above 0 and the stream is a byte stream (`type: "bytes"`, as
   * socket transports' are), read it through a BYOB reader into one reused
   * buffer of this many bytes (larger when one `ensure()` asks for more),
   * instead of taking the chunks the stream allocates: no fresh memory per
   * chunk, which is slow on first touch. Other streams are read as usual.
   *
   * The price: bytes returned by `take()`, `peek()`, `readExact()` and
   * `readChunk()` are valid only until the next call that has to wait for
   * the stream (`ensure()`, `require()` or a `read*()` that finds too few
   * bytes buffered); after it they are detached (empty) or moved. A
   * consumer must be done with them, or have copied them, by then.
   *
   * @default {0}
   */
  bufferBytes?: number;
}

/**
 * Exact reads over any `ReadableStream<Uint8Array>`, whatever its chunking.
 *
 * Two layers: `await ensure(n)` fills the buffer until `n` bytes are there
 * (or the stream ended), and the synchronous `take*()` methods consume
 * buffered bytes. Decoders call `ensure()` once for a whole record and then
 * decode it synchronously, which keeps the per-record cost low. The
 * `read*()` methods combine both for convenience.
 *
 * A clean end (no byte of the next value present) and a truncated value are
 * told apart: {@linkcode ByteReader.readExactOrEnd} returns `undefined` for
 * the first and throws {@linkcode UnexpectedEndOfStreamError} for the second.
 *
 * Returned bytes may alias the stream's own chunks: copy them before you
 * keep or mutate them. Nothing is allocated from a length the stream
 * announces: bytes are buffered only as they really arrive.
 *
 * @example Usage
 * ```ts
 * import { ByteReader } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const reader = new ByteReader(ReadableStream.from([
 *   new Uint8Array([0x00, 0x00]),
 *   new Uint8Array([0x10, 0x00, 0xff]),
 * ]));
 *
 * assert.equal(await reader.readUint32(), 0x1000);
 * assert.deepEqual(await reader.readExact(1), new Uint8Array([0xff]));
 * assert.equal(await reader.readExactOrEnd(1), undefined);
 * ```
 */
export class ByteReader {
  readonly #reader:
    | ReadableStreamDefaultReader<Uint8Array>
    | ReadableStreamBYOBReader;
  /** The reused buffer of BYOB mode; undefined in default mode. */
  readonly #landing: LandingBuffer | undefined;
  readonly #queue: ChunkQueue;
  #ended = false;

  /**
   * Constructs a new instance, locking `readable`.
   *
   * @example Reading a byte stream into one reused buffer
   * ```ts
   * import { ByteReader } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const chunks = [new Uint8Array([1, 2, 3]), new Uint8Array([4, 5, 6, 7])];
   * const readable = new ReadableStream({
   *   type: "bytes",
   *   pull(controller) {
   *     const chunk = chunks.shift();
   *     if (chunk !== undefined) return controller.enqueue(chunk);
   *     controller.close();
   *     controller.byobRequest?.respond(0); // ends a pending BYOB read
   *   },
   * });
   * const reader = new ByteReader(readable, 0, { bufferBytes: 16 });
   * const first = await reader.readExact(2);
   * assert.deepEqual(first, new Uint8Array([1, 2])); // valid until the next wait
   * assert.deepEqual(await reader.readExact(5), new Uint8Array([3, 4, 5, 6, 7]));
   * assert.equal(first.byteLength, 0); // detached by that wait
   * assert.equal(await reader.readExactOrEnd(1), undefined);
   * ```
   *
   * @param readable The bytes to read.
   * @param startOffset The stream offset of the first byte, for messages.
   * @param options Whether to read into one reused buffer.
   */
  constructor(
    readable: ReadableStream<Uint8Array>,
    startOffset: number = 0,
    options: ByteReaderOptions = {},
  ) {
    const bufferBytes = options.bufferBytes ?? 0;
    if (!Number.isSafeInteger(bufferBytes) || bufferBytes < 0) {
      throw new RangeError(
        `Cannot construct ByteReader as bufferBytes must be an integer >= 0: received ${bufferBytes}`,
      );
    }
    let byob: ReadableStreamBYOBReader | undefined;
    if (bufferBytes > 0) {
      try {
        byob = readable.getReader({ mode: "byob" });
      } catch (error) {
        if (!(error instanceof TypeError)) throw error; // not a byte stream
      }
    }
    this.#reader = byob ?? readable.getReader();
    this.#landing = byob && new LandingBuffer(byob, bufferBytes);
    this.#queue = new ChunkQueue(startOffset);
  }

  /** How many bytes have been consumed so far (plus the start offset). */
  get offset(): number {
    return this.#queue.offset;
  }

  /** How many bytes are buffered and can be taken without waiting. */
  get buffered(): number {
    return this.#queue.buffered;
  }

  /** Whether the underlying stream has ended (buffered bytes may remain). */
  get ended(): boolean {
    return this.#ended;
  }

  /**
   * Buffers at least `size` bytes, unless the stream ends first.
   *
   * @param size How many bytes are needed.
   * @returns Whether `size` bytes are now buffered.
   */
  async ensure(size: number): Promise<boolean> {
    const queue = this.#queue;
    if (this.#landing !== undefined) {
      if (queue.buffered < size && !this.#ended) {
        this.#ended = await this.#landing.fill(queue, size);
      }
      return queue.buffered >= size;
    }
    const reader = this.#reader as ReadableStreamDefaultReader<Uint8Array>;
    while (queue.buffered < size && !this.#ended) {
      const { done, value } = await reader.read();
      if (done) {
        this.#ended = true;
      } else if (value.byteLength > 0) {
        queue.push(value);
      }
    }
    return queue.buffered >= size;
  }

  /**
   * Like {@linkcode ByteReader.ensure}, but throws when the stream ends
   * first.
   *
   * @param size How many bytes are needed.
   * @param what What the bytes are, for the error message.
   * @throws {UnexpectedEndOfStreamError} If the stream ends first.
   */
  async require(size: number, what?: string): Promise<void> {
    if (this.#queue.buffered >= size || await this.ensure(size)) return;
    throw this.endError(size, what);
  }

  /**
   * Builds the error for a value of `size` bytes cut short at the current
   * offset.
   *
   * @param size How many bytes the value needed.
   * @param what What the value is.
   * @returns The error, to throw.
   */
  endError(size: number, what?: string): UnexpectedEndOfStreamError {
    return new UnexpectedEndOfStreamError(size, {
      offset: this.#queue.offset,
      receivedBytes: this.#queue.buffered,
      ...(what === undefined ? {} : { what }),
    });
  }

  /**
   * Takes `size` buffered bytes. The caller must have ensured them.
   *
   * @param size How many bytes to take.
   * @returns The bytes; a view into a chunk when they lie in one chunk.
   */
  take(size: number): Uint8Array {
    return this.#queue.take(size);
  }

  /**
   * Takes one buffered byte.
   *
   * @returns The byte.
   */
  takeUint8(): number {
    return this.#queue.takeUint8();
  }

  /**
   * Takes a buffered big-endian unsigned 16-bit integer.
   *
   * @returns The integer.
   */
  takeUint16(): number {
    return this.#queue.takeUint16();
  }

  /**
   * Takes a buffered big-endian unsigned 32-bit integer.
   *
   * @returns The integer.
   */
  takeUint32(): number {
    return this.#queue.takeUint32();
  }

  /**
   * Takes a buffered big-endian unsigned 64-bit integer.
   *
   * @returns The integer, as a bigint so that no bit is lost.
   */
  takeBigUint64(): bigint {
    const high = this.#queue.takeUint32();
    const low = this.#queue.takeUint32();
    return (BigInt(high) << 32n) | BigInt(low);
  }

  /**
   * Takes a buffered big-endian 64-bit integer as the two 32-bit halves.
   *
   * @returns `[high, low]`, each an unsigned 32-bit number.
   */
  takeUint64Parts(): [number, number] {
    const high = this.#queue.takeUint32();
    return [high, this.#queue.takeUint32()];
  }

  /**
   * Returns the next `size` buffered bytes as one contiguous view without
   * consuming them. When they span several chunks, those chunks are merged
   * once, so a following {@linkcode ByteReader.take} does not copy again.
   *
   * @param size How many bytes to look at; the caller must have ensured them.
   * @returns A view of the bytes.
   */
  peek(size: number): Uint8Array {
    return this.#queue.peek(size);
  }

  /**
   * Returns the byte `ahead` positions past the read position, without
   * consuming anything. The caller must have ensured it.
   *
   * @param ahead How many bytes to look past.
   * @returns The byte.
   */
  peekUint8(ahead: number = 0): number {
    return this.#queue.peekUint8(ahead);
  }

  /**
   * Returns the big-endian unsigned 32-bit integer that starts `ahead`
   * bytes past the read position, without consuming anything (nor
   * allocating). The caller must have ensured its bytes.
   *
   * @example Usage
   * ```ts
   * import { ByteReader } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const reader = new ByteReader(ReadableStream.from([
   *   new Uint8Array([0xff, 0x00, 0x00]),
   *   new Uint8Array([0x01, 0x02]),
   * ]));
   * await reader.require(5);
   * assert.equal(reader.peekUint32(1), 0x0000_0102);
   * assert.equal(reader.offset, 0);
   * ```
   *
   * @param ahead How many bytes to look past.
   * @returns The integer.
   */
  peekUint32(ahead: number = 0): number {
    return this.#queue.peekUint32(ahead);
  }

  /**
   * Reads exactly `size` bytes, or returns `undefined` when the stream ends
   * cleanly before the first of them.
   *
   * @param size How many bytes to read.
   * @param what What the bytes are, for the error message.
   * @returns The bytes, or `undefined` at a clean end of stream.
   * @throws {UnexpectedEndOfStreamError} If the stream ends part-way.
   */
  async readExactOrEnd(
    size: number,
    what?: string,
  ): Promise<Uint8Array | undefined> {
    if (!await this.ensure(size)) {
      if (this.#queue.buffered === 0) return undefined;
      throw this.endError(size, what);
    }
    return this.take(size);
  }

  /**
   * Reads exactly `size` bytes.
   *
   * @param size How many bytes to read.
   * @param what What the bytes are, for the error message.
   * @returns The bytes.
   * @throws {UnexpectedEndOfStreamError} If the stream ends first.
   */
  async readExact(size: number, what?: string): Promise<Uint8Array> {
    await this.require(size, what);
    return this.take(size);
  }

  /**
   * Reads one byte.
   *
   * @param what What the byte is, for the error message.
   * @returns The byte.
   */
  async readUint8(what?: string): Promise<number> {
    await this.require(1, what);
    return this.takeUint8();
  }

  /**
   * Reads a big-endian unsigned 16-bit integer.
   *
   * @param what What the integer is, for the error message.
   * @returns The integer.
   */
  async readUint16(what?: string): Promise<number> {
    await this.require(2, what);
    return this.takeUint16();
  }

  /**
   * Reads a big-endian unsigned 32-bit integer.
   *
   * @param what What the integer is, for the error message.
   * @returns The integer.
   */
  async readUint32(what?: string): Promise<number> {
    await this.require(4, what);
    return this.takeUint32();
  }

  /**
   * Reads a big-endian unsigned 64-bit integer.
   *
   * @param what What the integer is, for the error message.
   * @returns The integer, as a bigint so that no bit is lost.
   */
  async readBigUint64(what?: string): Promise<bigint> {
    await this.require(8, what);
    return this.takeBigUint64();
  }

  /**
   * Skips `size` bytes without keeping them (they are not buffered whole).
   *
   * @param size How many bytes to skip.
   * @param what What the bytes are, for the error message.
   * @throws {UnexpectedEndOfStreamError} If the stream ends first.
   */
  async skip(size: number, what?: string): Promise<void> {
    const queue = this.#queue;
    const start = queue.offset;
    let left = size;
    while (left > 0) {
      if (queue.buffered === 0 && !await this.ensure(1)) {
        throw new UnexpectedEndOfStreamError(size, {
          offset: start,
          receivedBytes: size - left,
          ...(what === undefined ? {} : { what }),
        });
      }
      const count = Math.min(left, queue.buffered);
      queue.discard(count);
      left -= count;
    }
  }

  /**
   * Returns the next run of bytes as they arrived: what is buffered in the
   * current chunk, else the next chunk of the stream.
   *
   * @param maxBytes The most bytes to return.
   * @returns The bytes (a view into a chunk), or `undefined` at the end.
   */
  async readChunk(
    maxBytes: number = Infinity,
  ): Promise<Uint8Array | undefined> {
    if (this.#queue.buffered === 0 && !await this.ensure(1)) return undefined;
    return this.#queue.takeRun(maxBytes);
  }

  /**
   * Resolves once the stream has ended with nothing left unread.
   *
   * @returns Whether the stream is at its end.
   */
  async atEnd(): Promise<boolean> {
    return this.#queue.buffered === 0 && !await this.ensure(1);
  }

  /**
   * Cancels the underlying stream, dropping buffered bytes.
   *
   * @param reason Why reading stopped.
   */
  async cancel(reason?: unknown): Promise<void> {
    this.#queue.clear();
    this.#ended = true;
    await this.#reader.cancel(reason);
  }

  /** Releases the lock on the underlying stream, which stays readable. */
  releaseLock(): void {
    this.#reader.releaseLock();
  }

  /**
   * Builds a {@linkcode StreamFormatError} at the current offset.
   *
   * @param message The message.
   * @param offset Where the bad value starts; defaults to the current offset.
   * @returns The error, to throw.
   */
  formatError(
    message: string,
    offset: number = this.#queue.offset,
  ): StreamFormatError {
    return new StreamFormatError(message, { offset });
  }
}
