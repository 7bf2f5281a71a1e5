/**
 * A `node:net`/`node:tls` socket with the `read`/`write`/`closeWrite`/
 * `close` of a `Deno.Conn`, so {@linkcode ConnTransport} and the idle
 * timeout serve TLS connections too. Private to lib/transport/.
 *
 * The socket is read in flowing mode (`data` events), paused while more
 * than {@linkcode HIGH_WATER_BYTES} wait for `read()`: in Deno 2.9.6 a
 * `node:tls` socket read with `readable`/`read()` never emits `end`.
 *
 * @module
 */

import type { Socket } from "node:net";
import type { ByteConn } from "./_conn_transport.ts";

/** Bytes received and not yet read above which the socket is paused. */
const HIGH_WATER_BYTES = 1024 * 1024;

/** A connected socket read by pulling, as `Deno.Conn.read()` does. */
export class NodeSocketConn implements ByteConn {
  readonly #socket: Socket;
  readonly #describe: (error: Error) => Error;
  readonly #chunks: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #closed = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;

  /**
   * @param socket A connected socket.
   * @param describe Turns a socket error into the error reads and writes
   *   reject with (naming the TLS failure).
   */
  constructor(socket: Socket, describe: (error: Error) => Error) {
    this.#socket = socket;
    this.#describe = describe;
    socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#queued += chunk.length;
      if (this.#queued > HIGH_WATER_BYTES) socket.pause();
      this.#wakeReader();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#wakeReader();
    });
    socket.on("error", (error: Error) => {
      this.#error ??= describe(error);
      this.#wakeReader();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#wakeReader();
    });
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    for (;;) {
      const chunk = this.#chunks[0];
      if (chunk !== undefined) {
        const count = Math.min(buffer.length, chunk.length);
        buffer.set(chunk.subarray(0, count));
        if (count < chunk.length) this.#chunks[0] = chunk.subarray(count);
        else this.#chunks.shift();
        this.#queued -= count;
        if (this.#queued <= HIGH_WATER_BYTES && this.#socket.isPaused()) {
          this.#socket.resume();
        }
        return count;
      }
      if (this.#error !== undefined) throw this.#error;
      // As a Deno.Conn: a read pending or made after close() rejects (the
      // idle timeout closes the connection to fail the read).
      if (this.#closed) {
        throw new Deno.errors.BadResource("the connection is closed");
      }
      if (this.#ended || this.#socket.destroyed) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  write(bytes: Uint8Array): Promise<number> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => {
      this.#socket.write(bytes, (error?: Error | null) => {
        if (error) reject(this.#error ?? this.#describe(error));
        else resolve(bytes.length);
      });
    });
  }

  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.#socket.end(() => resolve()));
  }

  close(): void {
    this.#closed = true;
    this.#socket.destroy();
    this.#wakeReader();
  }

  #wakeReader(): void {
    const resolve = this.#wake;
    this.#wake = undefined;
    resolve?.();
  }
}
