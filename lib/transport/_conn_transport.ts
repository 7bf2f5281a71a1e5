/**
 * The {@linkcode Transport} over a `Deno.Conn`, shared by `tcp:` and
 * `unix:`. Private to lib/transport/.
 *
 * @module
 */

import type { Transport } from "./transport.ts";
import { describeError } from "../errors.ts";
import { createSinkStream, createSourceStream } from "./_byte_streams.ts";
import { TransportError } from "./transport_error.ts";

/**
 * The part of a `Deno.Conn` a {@linkcode ConnTransport} uses, so a
 * `node:tls` socket can stand in for one.
 */
export type ByteConn = Pick<
  Deno.Conn,
  "read" | "write" | "closeWrite" | "close"
>;

/** Bytes asked of the kernel per read; 64 KiB measured best on loopback. */
const READ_CHUNK_BYTES = 64 * 1024;

/**
 * A socket connection as a {@linkcode Transport}. Closing `writable` shuts
 * down the sending side only (`closeWrite()`); aborting it, or a failed
 * write, closes the whole connection so the peer learns of it. The socket is
 * released once both streams are finished, or on `close()`.
 */
export class ConnTransport implements Transport {
  readonly description: string;
  /** Sockets copy each chunk into the kernel before its write resolves. */
  readonly copiesWrites = true;
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  readonly #conn: ByteConn;
  #closed = false;
  #readingFinished = false;
  #writingFinished = false;

  constructor(conn: ByteConn, description: string) {
    this.#conn = conn;
    this.description = description;
    this.readable = createSourceStream({
      description,
      read: (buffer) => conn.read(buffer),
      isClosed: () => this.#closed,
      finished: () => {
        this.#readingFinished = true;
        if (this.#writingFinished) this.#release();
      },
    }, READ_CHUNK_BYTES);
    this.writable = createSinkStream({
      description,
      write: (bytes) => conn.write(bytes),
      close: async () => {
        await conn.closeWrite();
        this.#writingFinished = true;
        if (this.#readingFinished) this.#release();
      },
      abort: () => {
        this.#writingFinished = true;
        this.#release();
      },
      isClosed: () => this.#closed,
    });
  }

  readonly readInto = async (view: Uint8Array): Promise<number | null> => {
    let count: number | null;
    try {
      do count = await this.#conn.read(view); while (count === 0);
    } catch (error) {
      if (!this.#closed) {
        throw new TransportError(
          `Cannot read from "${this.description}": ${describeError(error)}`,
          { uri: this.description, cause: error },
        );
      }
      count = null;
    }
    if (count === null && !this.#readingFinished) {
      this.#readingFinished = true;
      if (this.#writingFinished) this.#release();
    }
    return count;
  };

  close(): Promise<void> {
    this.#release();
    return Promise.resolve();
  }

  #release(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch (error) {
      if (!(error instanceof Deno.errors.BadResource)) throw error;
    }
  }
}
