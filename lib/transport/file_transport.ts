import type { RandomAccessFile, Transport } from "./transport.ts";
import { describeError, UnexpectedEndOfStreamError } from "../errors.ts";
import { createSinkStream, createSourceStream } from "./_byte_streams.ts";
import { unavailableReadable, unavailableWritable } from "./_one_way.ts";
import { TransportError } from "./transport_error.ts";

/** Options for {@linkcode openFileTransport}. */
export interface OpenFileTransportOptions {
  /**
   * `"outgoing"` writes a migration stream to the file (a source, QEMU's
   * `migrate file:…`); `"incoming"` reads one from it (a destination,
   * `migrate-incoming file:…`).
   */
  direction: "outgoing" | "incoming";
  /**
   * Where the stream starts in the file, in bytes. Outgoing, the file is
   * cut to this size first, so bytes before it are kept.
   *
   * @default {0}
   */
  offset?: number;
  /** Refuses to open when already aborted. */
  signal?: AbortSignal;
}

/**
 * Opens a file as a one-way sequential transport, as QEMU's `file:PATH`
 * URIs do (since QEMU 8.2).
 *
 * Outgoing, the file is created if missing, cut to `offset` bytes and
 * written from there; closing `writable` closes the file. Incoming, the file
 * is read from `offset` to its end. A file has no reverse direction: the
 * outgoing transport's `readable` and the incoming one's `writable` error
 * with a {@linkcode NotSupportedError} on first use, as QEMU fails to open a
 * return path on a file.
 *
 * @example Usage
 * ```ts
 * import { openFileTransport } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array([9, 9, 9, 9]));
 *
 * const out = await openFileTransport(path, { direction: "outgoing", offset: 2 });
 * const writer = out.writable.getWriter();
 * await writer.write(new Uint8Array([1, 2, 3]));
 * await writer.close();
 * await out.close();
 * assert.deepEqual(await Deno.readFile(path), new Uint8Array([9, 9, 1, 2, 3]));
 *
 * const into = await openFileTransport(path, { direction: "incoming", offset: 2 });
 * const chunks = await Array.fromAsync(into.readable);
 * assert.deepEqual(chunks, [new Uint8Array([1, 2, 3])]);
 * await into.close();
 * await Deno.remove(path);
 * ```
 *
 * @param path File system path of the file.
 * @param options Direction, offset and abort signal.
 * @returns The transport.
 * @throws {RangeError} If `offset` is not a non-negative safe integer.
 * @throws {TransportError} If the file cannot be opened.
 */
export async function openFileTransport(
  path: string,
  options: OpenFileTransportOptions,
): Promise<Transport> {
  const { direction, offset = 0, signal } = options;
  checkOffset(offset, "open file transport", "offset");
  signal?.throwIfAborted();
  const uri = offset === 0 ? `file:${path}` : `file:${path},offset=${offset}`;
  let file: Deno.FsFile;
  try {
    file = await Deno.open(
      path,
      direction === "outgoing" ? { write: true, create: true } : { read: true },
    );
  } catch (error) {
    throw new TransportError(
      `Cannot open "${uri}" for ${
        direction === "outgoing" ? "writing" : "reading"
      }: ${describeError(error)}`,
      { uri, cause: error },
    );
  }
  try {
    if (direction === "outgoing") await file.truncate(offset);
    await file.seek(offset, Deno.SeekMode.Start);
  } catch (error) {
    file.close();
    throw new TransportError(
      `Cannot position "${uri}" at offset ${offset}: ${describeError(error)}`,
      { uri, cause: error },
    );
  }
  return new FileTransport(file, uri, direction);
}

/** Bytes read from a file per chunk. */
const READ_CHUNK_BYTES = 256 * 1024;

class FileTransport implements Transport {
  readonly description: string;
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  readonly #file: Deno.FsFile;
  #closed = false;

  constructor(
    file: Deno.FsFile,
    uri: string,
    direction: "outgoing" | "incoming",
  ) {
    this.#file = file;
    this.description = uri;
    if (direction === "outgoing") {
      this.readable = unavailableReadable(
        `Cannot read from "${uri}": a file: transport has no reverse direction, so no return path`,
      );
      this.writable = createSinkStream({
        description: uri,
        write: (bytes) => file.write(bytes),
        close: () => Promise.resolve(this.#release()),
        abort: () => this.#release(),
      });
    } else {
      this.readable = createSourceStream({
        description: uri,
        read: (buffer) => file.read(buffer),
        isClosed: () => this.#closed,
        finished: () => this.#release(),
      }, READ_CHUNK_BYTES);
      this.writable = unavailableWritable(
        `Cannot write to "${uri}": a file: transport has no reverse direction, so no return path`,
      );
    }
  }

  close(): Promise<void> {
    this.#release();
    return Promise.resolve();
  }

  #release(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#file.close();
  }
}

/** Options for {@linkcode openRandomAccessFile}. */
export interface OpenRandomAccessFileOptions {
  /**
   * Create the file when it does not exist.
   *
   * @default {false}
   */
  create?: boolean;
  /**
   * Cut the file to 0 bytes when opening it.
   *
   * @default {false}
   */
  truncate?: boolean;
  /**
   * Open for reading only; writes then reject.
   *
   * @default {false}
   */
  readOnly?: boolean;
}

/**
 * Opens a file for positioned reads and writes, as the mapped-ram layout
 * needs (QEMU's `file:` migration with the `mapped-ram` capability).
 *
 * Operations queue up and run one at a time, each seeking first, so callers
 * may start several without awaiting each; reads and writes loop until all
 * bytes moved, whatever the system returns per call.
 *
 * @example Usage
 * ```ts
 * import { openRandomAccessFile, UnexpectedEndOfStreamError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile();
 * const file = await openRandomAccessFile(path, { truncate: true });
 * try {
 *   await Promise.all([
 *     file.writeAt(8, new Uint8Array([3, 4])),
 *     file.writeAt(0, new Uint8Array([1, 2])),
 *   ]);
 *   assert.deepEqual(await file.readAt(0, 10), new Uint8Array([1, 2, 0, 0, 0, 0, 0, 0, 3, 4]));
 *   await assert.rejects(file.readAt(9, 2), UnexpectedEndOfStreamError);
 * } finally {
 *   await file.close();
 *   await Deno.remove(path);
 * }
 * ```
 *
 * @param path File system path of the file.
 * @param options Whether to create, truncate, or only read the file.
 * @returns The open file.
 * @throws {TransportError} If the file cannot be opened.
 */
export async function openRandomAccessFile(
  path: string,
  options: OpenRandomAccessFileOptions = {},
): Promise<RandomAccessFile> {
  const { create = false, truncate = false, readOnly = false } = options;
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, {
      read: true,
      write: !readOnly,
      create: create && !readOnly,
      truncate: truncate && !readOnly,
    });
  } catch (error) {
    throw new TransportError(
      `Cannot open "${path}" for positioned ${
        readOnly ? "reads" : "reads and writes"
      }: ${describeError(error)}`,
      { uri: `file:${path}`, cause: error },
    );
  }
  return new FsRandomAccessFile(file, path);
}

class FsRandomAccessFile implements RandomAccessFile {
  readonly #file: Deno.FsFile;
  readonly #path: string;
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(file: Deno.FsFile, path: string) {
    this.#file = file;
    this.#path = path;
  }

  async readAt(offset: number, size: number): Promise<Uint8Array> {
    checkOffset(offset, "read", "offset");
    checkOffset(size, "read", "size");
    return await this.#run("read", async (file) => {
      const bytes = new Uint8Array(size);
      await file.seek(offset, Deno.SeekMode.Start);
      for (let filled = 0; filled < size;) {
        const count = await file.read(bytes.subarray(filled));
        if (count === null) {
          throw new UnexpectedEndOfStreamError(size, {
            offset,
            receivedBytes: filled,
            what: `${size} bytes of "${this.#path}"`,
          });
        }
        filled += count;
      }
      return bytes;
    });
  }

  async writeAt(offset: number, bytes: Uint8Array): Promise<void> {
    checkOffset(offset, "write", "offset");
    return await this.#run("write", async (file) => {
      await file.seek(offset, Deno.SeekMode.Start);
      for (let done = 0; done < bytes.byteLength;) {
        done += await file.write(bytes.subarray(done));
      }
    });
  }

  size(): Promise<number> {
    return this.#run("stat", async (file) => (await file.stat()).size);
  }

  async truncate(size: number): Promise<void> {
    checkOffset(size, "truncate", "size");
    return await this.#run("truncate", (file) => file.truncate(size));
  }

  close(): Promise<void> {
    if (this.#closed) return this.#queue.then(() => {});
    const closing = this.#run("close", (file) => {
      file.close();
      return Promise.resolve();
    });
    this.#closed = true;
    return closing;
  }

  #run<T>(
    action: string,
    operation: (file: Deno.FsFile) => Promise<T>,
  ): Promise<T> {
    if (this.#closed) {
      return Promise.reject(
        new TypeError(`Cannot ${action} "${this.#path}": the file is closed`),
      );
    }
    const result = this.#queue.then(() => operation(this.#file));
    this.#queue = result.catch(() => {});
    return result;
  }
}

function checkOffset(value: number, action: string, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(
      `Cannot ${action} as ${name} must be a non-negative safe integer: received ${value}`,
    );
  }
}
