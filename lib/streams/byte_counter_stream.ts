/**
 * A pass-through stage that counts the bytes flowing through it.
 *
 * @module
 */

/** Options for {@linkcode ByteCounterStream}. */
export interface ByteCounterStreamOptions {
  /**
   * Called after a chunk passed, with the total so far. Called at most once
   * per `everyBytes` bytes when that is set.
   */
  onCount?: (bytes: number) => void;
  /**
   * Calls `onCount` only when at least this many bytes passed since the
   * last call; 0 calls it for every chunk.
   *
   * @default {0}
   */
  everyBytes?: number;
}

/**
 * Passes byte chunks on unchanged (no copy) and counts them: a tap between
 * two stages, for progress and for the bytes a stage produced.
 *
 * @example Usage
 * ```ts
 * import { ByteCounterStream } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const counter = new ByteCounterStream();
 * const chunks = await Array.fromAsync(
 *   ReadableStream.from([new Uint8Array(3), new Uint8Array(5)]).pipeThrough(counter),
 * );
 * assert.equal(chunks.length, 2);
 * assert.equal(counter.bytes, 8);
 * ```
 */
export class ByteCounterStream extends TransformStream<Uint8Array, Uint8Array> {
  #bytes = 0;

  /**
   * Constructs a new instance.
   *
   * @param options A callback for the running total.
   */
  constructor(options: ByteCounterStreamOptions = {}) {
    const every = options.everyBytes ?? 0;
    if (!Number.isSafeInteger(every) || every < 0) {
      throw new RangeError(
        `Cannot construct ByteCounterStream as everyBytes must be a non-negative integer: received ${every}`,
      );
    }
    const onCount = options.onCount;
    let reported = 0;
    super({
      transform: (chunk, controller) => {
        this.#bytes += chunk.byteLength;
        controller.enqueue(chunk);
        if (onCount && this.#bytes - reported >= every) {
          reported = this.#bytes;
          onCount(this.#bytes);
        }
      },
    });
  }

  /** Bytes that passed so far. */
  get bytes(): number {
    return this.#bytes;
  }
}
