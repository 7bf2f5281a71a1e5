import type { Transport } from "./transport.ts";

/** Options for {@linkcode createMemoryTransportPair}. */
export interface MemoryTransportPairOptions {
  /**
   * Bytes each direction buffers before a writer is held back: once this
   * many bytes wait unread, `writer.ready` stays pending until the peer
   * reads. 0 makes every write wait for a read.
   *
   * @default {1048576}
   */
  highWaterMarkBytes?: number;
  /**
   * The two sides' {@linkcode Transport.description}s.
   *
   * @default {["memory:a", "memory:b"]}
   */
  descriptions?: readonly [string, string];
}

/**
 * Creates two in-process transports connected to each other, for tests and
 * for migrations whose two ends run in the same process.
 *
 * Chunks are handed to the peer as they are, without copying: do not modify
 * a chunk after writing it. Each direction is a bounded queue counted in
 * bytes, so a writer that runs ahead of its reader waits on `writer.ready`,
 * the way it would on a socket. Closing one side's `writable` ends the
 * other side's `readable` once the queued chunks are read; aborting it
 * errors the other side's `readable` with the same reason; cancelling a
 * `readable` errors the peer's `writable` with the cancel reason.
 * `close()` ends both directions of one side: its peer's `readable` ends
 * after the queued chunks and its peer's writes reject.
 *
 * @example Usage
 * ```ts
 * import { createMemoryTransportPair } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const [a, b] = createMemoryTransportPair({ highWaterMarkBytes: 4 });
 * const writer = a.writable.getWriter();
 * const written = writer.write(new Uint8Array(4)); // fills the queue: waits for b
 * assert.equal(writer.desiredSize, 0);
 *
 * const reader = b.readable.getReader();
 * assert.equal((await reader.read()).value?.byteLength, 4);
 * await written; // b read, so there is room again
 * assert.equal(writer.desiredSize, 1);
 * await Promise.all([a.close(), b.close()]);
 * ```
 *
 * @param options Queue size and descriptions.
 * @returns The two connected transports.
 * @throws {RangeError} If `highWaterMarkBytes` is not a non-negative number.
 */
export function createMemoryTransportPair(
  options: MemoryTransportPairOptions = {},
): [Transport, Transport] {
  const {
    highWaterMarkBytes = 1 << 20,
    descriptions = ["memory:a", "memory:b"],
  } = options;
  if (!(highWaterMarkBytes >= 0)) {
    throw new RangeError(
      `Cannot create memory transports as highWaterMarkBytes must be >= 0: received ${highWaterMarkBytes}`,
    );
  }
  const aToB = new MemoryPipe(highWaterMarkBytes, descriptions[0]);
  const bToA = new MemoryPipe(highWaterMarkBytes, descriptions[1]);
  return [
    new MemoryTransport(descriptions[0], bToA, aToB),
    new MemoryTransport(descriptions[1], aToB, bToA),
  ];
}

class MemoryTransport implements Transport {
  readonly #incoming: MemoryPipe;
  readonly #outgoing: MemoryPipe;
  readonly description: string;

  constructor(description: string, incoming: MemoryPipe, outgoing: MemoryPipe) {
    this.description = description;
    this.#incoming = incoming;
    this.#outgoing = outgoing;
  }

  get readable(): ReadableStream<Uint8Array> {
    return this.#incoming.readable;
  }

  get writable(): WritableStream<Uint8Array> {
    return this.#outgoing.writable;
  }

  close(): Promise<void> {
    this.#outgoing.closeWriting();
    this.#incoming.closeReading();
    return Promise.resolve();
  }
}

/** One direction: a writable whose chunks come out of a readable. */
class MemoryPipe {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  readonly #writerDescription: string;
  #readController!: ReadableStreamDefaultController<Uint8Array>;
  #writeController!: WritableStreamDefaultController;
  #readableOpen = true;
  #writableOpen = true;
  #wake: (() => void) | undefined;

  constructor(highWaterMarkBytes: number, writerDescription: string) {
    this.#writerDescription = writerDescription;
    this.readable = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#readController = controller;
      },
      pull: () => this.#wakeWriter(),
      cancel: (reason) => {
        this.#readableOpen = false;
        this.#failWriter(reason);
      },
    }, {
      highWaterMark: highWaterMarkBytes,
      size: (chunk) => chunk.byteLength,
    });
    this.writable = new WritableStream<Uint8Array>({
      start: (controller) => {
        this.#writeController = controller;
      },
      write: async (chunk) => {
        if (!this.#readableOpen) throw this.#closedError();
        if (chunk.byteLength === 0) return;
        this.#readController.enqueue(chunk);
        while (this.#readableOpen && this.#readController.desiredSize! <= 0) {
          await new Promise<void>((resolve) => this.#wake = resolve);
        }
      },
      close: () => {
        this.#writableOpen = false;
        if (this.#readableOpen) {
          this.#readableOpen = false;
          this.#readController.close();
        }
      },
      abort: (reason) => {
        this.#writableOpen = false;
        if (this.#readableOpen) {
          this.#readableOpen = false;
          this.#readController.error(reason);
        }
      },
    });
  }

  /** The writing side's owner closed: the reader sees the end. */
  closeWriting(): void {
    if (this.#writableOpen) {
      this.#writableOpen = false;
      this.#writeController.error(
        new TypeError(
          `Cannot write to "${this.#writerDescription}": the transport is closed`,
        ),
      );
    }
    if (this.#readableOpen) {
      this.#readableOpen = false;
      this.#readController.close();
    }
    this.#wakeWriter();
  }

  /** The reading side's owner closed: reads end, writes reject. */
  closeReading(): void {
    if (this.#readableOpen) {
      this.#readableOpen = false;
      this.#readController.close();
    }
    this.#failWriter(this.#closedError());
  }

  #failWriter(reason: unknown): void {
    if (this.#writableOpen) {
      this.#writableOpen = false;
      this.#writeController.error(reason);
    }
    this.#wakeWriter();
  }

  #wakeWriter(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #closedError(): TypeError {
    return new TypeError(
      `Cannot write to "${this.#writerDescription}": the peer closed the transport`,
    );
  }
}
