/**
 * Web streams over the raw `read(buffer)` / `write(bytes)` calls of sockets,
 * pipes and files. Private to lib/transport/.
 *
 * Why not `Deno.Conn.readable` / `.writable`: the connection's own streams
 * close the whole socket when the readable reaches its end or the writable is
 * closed, which makes a half-close impossible (a destination that read the
 * whole stream could no longer write the return path), and they issue one
 * system call per chunk however small.
 *
 * @module
 */

import { describeError } from "../errors.ts";
import { TransportError } from "./transport_error.ts";

/** Where a readable byte stream gets its bytes. */
export interface ByteSource {
  /** What is being read, for error messages. */
  readonly description: string;
  /** Reads into `buffer`; resolves to the count, or `null` at the end. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Whether the owner closed the source, so that a failed read is an end. */
  isClosed(): boolean;
  /** Called once, when the stream has ended, was cancelled or errored. */
  finished(): void;
}

/**
 * Creates a readable byte stream that reads from `source` on demand (no
 * read-ahead: unread bytes wait in the kernel). Default readers get chunks of
 * up to `chunkBytes` in fresh buffers; BYOB readers have bytes read straight
 * into their own buffers.
 */
export function createSourceStream(
  source: ByteSource,
  chunkBytes: number,
): ReadableStream<Uint8Array> {
  let finished = false;
  function finish(): void {
    if (finished) return;
    finished = true;
    source.finished();
  }
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: chunkBytes,
    async pull(controller) {
      const request = controller.byobRequest!;
      const view = request.view!;
      const buffer = new Uint8Array(
        view.buffer,
        view.byteOffset,
        view.byteLength,
      );
      let count: number | null;
      try {
        do count = await source.read(buffer); while (count === 0);
      } catch (error) {
        if (!source.isClosed()) {
          finish();
          throw new TransportError(
            `Cannot read from "${source.description}": ${describeError(error)}`,
            { uri: source.description, cause: error },
          );
        }
        count = null;
      }
      if (count === null) {
        finish();
        controller.close();
        request.respond(0);
      } else {
        request.respond(count);
      }
    },
    cancel() {
      finish();
    },
  });
}

/** Where a writable byte stream puts its bytes. */
export interface ByteSink {
  /** What is being written, for error messages. */
  readonly description: string;
  /** Writes some of `bytes`; resolves to how many. */
  write(bytes: Uint8Array): Promise<number>;
  /** Called after the last byte: half-close the connection, close the file. */
  close(): Promise<void>;
  /** Called when the stream is aborted or a write failed. */
  abort(reason: unknown): void;
  /**
   * Whether the owner closed the sink, so that a failed write reports that
   * rather than the system error.
   */
  isClosed?(): boolean;
  /**
   * Turns a failure into the error the stream reports; resolving to
   * `undefined` (or leaving this out) gives the default, a
   * {@linkcode TransportError} naming `description`.
   */
  wrapError?(error: unknown): Promise<unknown>;
}

/** Sizes for {@linkcode createSinkStream}. */
export interface SinkStreamOptions {
  /**
   * Chunks smaller than this are copied into a staging buffer.
   *
   * @default {16384}
   */
  coalesceBytes?: number;
  /**
   * Size of each of the two staging buffers.
   *
   * @default {262144}
   */
  stagingBytes?: number;
}

/**
 * Creates a writable stream over `sink`.
 *
 * Large chunks are written as they are, no copy. Small chunks (below
 * `coalesceBytes`) are copied into a staging buffer that goes out in one
 * write as soon as the previous write finished: the first small chunk leaves
 * at once (no Nagle-like delay for return-path messages), and under load many
 * small chunks share one system call. At most two staging buffers are in use,
 * so a writer awaiting `ready` waits once they are full and the sink is slow.
 *
 * Each write resolves once its bytes are handed to the kernel or copied, so
 * the caller may reuse a chunk after its write resolved.
 */
export function createSinkStream(
  sink: ByteSink,
  options: SinkStreamOptions = {},
): WritableStream<Uint8Array> {
  return new WritableStream<Uint8Array>(new StagingSink(sink, options));
}

/** The underlying sink of {@linkcode createSinkStream}. */
class StagingSink implements UnderlyingSink<Uint8Array> {
  readonly #sink: ByteSink;
  readonly #coalesceBytes: number;
  readonly #stagingBytes: number;
  #controller: WritableStreamDefaultController | undefined;
  #buffers: [Uint8Array, Uint8Array] | undefined;
  #current: 0 | 1 = 0;
  #staged = 0;
  #flushing: Promise<void> | undefined;
  #failure: { error: unknown } | undefined;

  constructor(sink: ByteSink, options: SinkStreamOptions) {
    this.#sink = sink;
    this.#coalesceBytes = options.coalesceBytes ?? 16 * 1024;
    this.#stagingBytes = options.stagingBytes ?? 256 * 1024;
  }

  start(controller: WritableStreamDefaultController): void {
    this.#controller = controller;
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.#failure !== undefined) throw this.#failure.error;
    const size = chunk.byteLength;
    if (size === 0) return;
    if (size < this.#coalesceBytes) {
      if (this.#staged + size > this.#stagingBytes) await this.#drain();
      this.#stage(chunk);
      return;
    }
    await this.#drain();
    try {
      await this.#writeAll(chunk);
    } catch (error) {
      throw await this.#fail(error);
    }
  }

  async close(): Promise<void> {
    await this.#drain();
    try {
      await this.#sink.close();
    } catch (error) {
      throw await this.#fail(error);
    }
  }

  abort(reason: unknown): void {
    this.#sink.abort(reason);
  }

  /** Copies a small chunk into the current staging buffer. */
  #stage(chunk: Uint8Array): void {
    const stagingBytes = this.#stagingBytes;
    this.#buffers ??= [
      new Uint8Array(stagingBytes),
      new Uint8Array(stagingBytes),
    ];
    this.#buffers[this.#current].set(chunk, this.#staged);
    this.#staged += chunk.byteLength;
    this.#flushing ??= this.#flushStaged();
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    for (let done = 0; done < bytes.byteLength;) {
      done += await this.#sink.write(bytes.subarray(done));
    }
  }

  /** The error the stream reports for `error`; aborts the sink once. */
  async #fail(error: unknown): Promise<unknown> {
    if (this.#failure === undefined) {
      const sink = this.#sink;
      this.#failure = {
        error: sink.wrapError === undefined
          ? writeError(sink, error)
          : await sink.wrapError(error) ?? writeError(sink, error),
      };
      sink.abort(this.#failure.error);
    }
    return this.#failure.error;
  }

  // Writes the staging buffers out until none holds bytes. It always awaits
  // at least one write before it ends, so `#flushing` is cleared only after
  // it was set.
  async #flushStaged(): Promise<void> {
    try {
      while (this.#staged > 0) {
        const out = this.#buffers![this.#current].subarray(0, this.#staged);
        this.#current = this.#current === 0 ? 1 : 0;
        this.#staged = 0;
        await this.#writeAll(out);
      }
    } catch (error) {
      this.#controller!.error(await this.#fail(error));
    } finally {
      this.#flushing = undefined;
    }
  }

  async #drain(): Promise<void> {
    while (this.#flushing !== undefined) await this.#flushing;
    if (this.#failure !== undefined) throw this.#failure.error;
  }
}

/** The default error for a failed write to `sink`. */
function writeError(sink: ByteSink, error: unknown): TransportError {
  return new TransportError(
    sink.isClosed?.()
      ? `Cannot write to "${sink.description}": the transport is closed`
      : `Cannot write to "${sink.description}": ${describeError(error)}`,
    { uri: sink.description, cause: error },
  );
}
