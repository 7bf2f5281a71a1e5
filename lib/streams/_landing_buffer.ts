/**
 * The reused buffer of a {@linkcode ByteReader} in BYOB mode: a byte stream
 * is read straight into one `ArrayBuffer`, so no memory is allocated per
 * chunk. Private to lib/streams/.
 *
 * ```
 * before a read  [ unread bytes (a view in the queue) | free            ]
 * moved          [ unread bytes | free                                  ]
 * read into      [ unread bytes | new bytes ...        | free           ]
 *                └── the queue's only chunk ───────────┘
 * ```
 *
 * Each read transfers the buffer to the stream and back, which detaches
 * every view taken before it; the queue therefore holds at most one chunk,
 * a view of this buffer. The buffer doubles (at least) when one `ensure()`
 * asks for more than it holds.
 *
 * @module
 */

import type { ChunkQueue } from "./_chunk_queue.ts";

/** Reads a byte stream into one reused buffer; see the module comment. */
export class LandingBuffer {
  readonly #reader: ReadableStreamBYOBReader;
  #buffer: ArrayBuffer;

  /**
   * @param reader The BYOB reader of the stream.
   * @param bufferBytes The initial buffer size, above 0.
   */
  constructor(reader: ReadableStreamBYOBReader, bufferBytes: number) {
    this.#reader = reader;
    this.#buffer = new ArrayBuffer(bufferBytes);
  }

  /**
   * Moves the unread bytes of `queue` to the buffer's start and reads into
   * the rest, until `size` bytes are there or the stream ended; then
   * `queue` holds one view of the buffer with all of them.
   *
   * @param queue The reader's queue: empty, or one view of this buffer.
   * @param size How many bytes the reader needs buffered.
   * @returns Whether the stream ended.
   */
  async fill(queue: ChunkQueue, size: number): Promise<boolean> {
    while (queue.buffered < size) {
      let landing = this.#buffer;
      const rest = queue.buffered;
      const unread = queue.unreadHead();
      if (landing.byteLength < size) {
        const larger = new ArrayBuffer(Math.max(size, landing.byteLength * 2));
        if (unread !== undefined) new Uint8Array(larger).set(unread);
        landing = larger;
      } else if (unread !== undefined && rest > 0) {
        const start = unread.byteOffset;
        new Uint8Array(landing).copyWithin(0, start, start + rest);
      }
      queue.clear();
      const { done, value } = await this.#reader.read(
        new Uint8Array(landing, rest, landing.byteLength - rest),
        { min: Math.min(size - rest, landing.byteLength - rest) },
      );
      if (value !== undefined) landing = value.buffer as ArrayBuffer;
      this.#buffer = landing;
      const filled = rest + (value?.byteLength ?? 0);
      if (filled > 0) queue.push(new Uint8Array(landing, 0, filled));
      if (done) return true;
    }
    return false;
  }
}
