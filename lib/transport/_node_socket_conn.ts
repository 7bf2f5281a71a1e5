/**
 * A `node:net`/`node:tls` socket with the `read`/`write`/`closeWrite`/
 * `close` of a `Deno.Conn`, so {@linkcode ConnTransport} and the idle
 * timeout serve TLS connections too. Private to lib/transport/.
 *
 * @module
 */

import type { Socket } from "node:net";
import type { ByteConn } from "./_conn_transport.ts";

/** A connected socket read by pulling, as `Deno.Conn.read()` does. */
export class NodeSocketConn implements ByteConn {
  readonly #socket: Socket;
  readonly #describe: (error: Error) => Error;
  #pending: Uint8Array | undefined;
  #ended = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;

  /**
   * @param socket A connected socket, paused.
   * @param describe Turns a socket error into the error reads and writes
   *   reject with (naming the TLS failure).
   */
  constructor(socket: Socket, describe: (error: Error) => Error) {
    this.#socket = socket;
    this.#describe = describe;
    const wake = () => {
      const resolve = this.#wake;
      this.#wake = undefined;
      resolve?.();
    };
    socket.on("readable", wake);
    socket.on("end", () => {
      this.#ended = true;
      wake();
    });
    socket.on("error", (error: Error) => {
      this.#error ??= describe(error);
      wake();
    });
    socket.on("close", wake);
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    for (;;) {
      const pending = this.#pending;
      if (pending !== undefined) {
        const count = Math.min(buffer.length, pending.length);
        buffer.set(pending.subarray(0, count));
        this.#pending = count < pending.length
          ? pending.subarray(count)
          : undefined;
        return count;
      }
      if (this.#error !== undefined) throw this.#error;
      const chunk = this.#socket.read() as Uint8Array | null;
      if (chunk !== null && chunk.length > 0) {
        this.#pending = chunk;
        continue;
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
    this.#socket.destroy();
  }
}
