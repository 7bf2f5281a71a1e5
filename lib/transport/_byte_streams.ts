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
            `Cannot read from "${source.description}": ${messageOf(error)}`,
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
   * Turns a failure into the error the stream reports. Defaults to a
   * {@linkcode TransportError} naming `description`.
   */
  wrapError?(error: unknown): Promise<unknown>;
}

/** Sizes for {@linkcode createSinkStream}. */
export interface SinkStreamOptions {
  /** Chunks smaller than this are copied into a staging buffer. */
  coalesceBytes: number;
  /** Size of each of the two staging buffers. */
  stagingBytes: number;
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
  options: SinkStreamOptions,
): WritableStream<Uint8Array> {
  const { coalesceBytes, stagingBytes } = options;
  let controller: WritableStreamDefaultController;
  let buffers: [Uint8Array, Uint8Array] | undefined;
  let current: 0 | 1 = 0;
  let staged = 0;
  let flushing: Promise<void> | undefined;
  let failure: { error: unknown } | undefined;

  async function writeAll(bytes: Uint8Array): Promise<void> {
    for (let done = 0; done < bytes.byteLength;) {
      done += await sink.write(bytes.subarray(done));
    }
  }

  async function fail(error: unknown): Promise<unknown> {
    if (failure === undefined) {
      failure = {
        error: sink.wrapError === undefined
          ? new TransportError(
            `Cannot write to "${sink.description}": ${messageOf(error)}`,
            { uri: sink.description, cause: error },
          )
          : await sink.wrapError(error),
      };
      sink.abort(failure.error);
    }
    return failure.error;
  }

  // Writes the staging buffers out until none holds bytes. It always awaits
  // at least one write before it ends, so `flushing` is cleared only after
  // it was set.
  async function flushStaged(): Promise<void> {
    try {
      while (staged > 0) {
        const out = buffers![current].subarray(0, staged);
        current = current === 0 ? 1 : 0;
        staged = 0;
        await writeAll(out);
      }
    } catch (error) {
      controller.error(await fail(error));
    } finally {
      flushing = undefined;
    }
  }

  async function drain(): Promise<void> {
    while (flushing !== undefined) await flushing;
    if (failure !== undefined) throw failure.error;
  }

  return new WritableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
    async write(chunk) {
      if (failure !== undefined) throw failure.error;
      const size = chunk.byteLength;
      if (size === 0) return;
      if (size < coalesceBytes) {
        if (staged + size > stagingBytes) await drain();
        buffers ??= [
          new Uint8Array(stagingBytes),
          new Uint8Array(stagingBytes),
        ];
        buffers[current].set(chunk, staged);
        staged += size;
        flushing ??= flushStaged();
        return;
      }
      await drain();
      try {
        await writeAll(chunk);
      } catch (error) {
        throw await fail(error);
      }
    },
    async close() {
      await drain();
      try {
        await sink.close();
      } catch (error) {
        throw await fail(error);
      }
    },
    abort(reason) {
      sink.abort(reason);
    },
  });
}

/** The message of an error, or the value as text. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
