/**
 * The {@linkcode TransportListener} over a `Deno.Listener`, shared by `tcp:`
 * and `unix:`. Private to lib/transport/.
 *
 * @module
 */

import { describeError } from "../errors.ts";
import type { Transport, TransportListener } from "./transport.ts";
import { abortable } from "./_abortable.ts";
import { TransportError } from "./transport_error.ts";

/**
 * A `Deno.Listener` as a {@linkcode TransportListener}, shared with
 * `unix:`.
 */
export class SocketListener implements TransportListener {
  readonly address: string;
  readonly #listener: Deno.Listener;
  readonly #wrap: (conn: Deno.Conn) => Transport;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = () => void this.close();
  readonly #onClose: (() => Promise<void>) | undefined;
  #closed = false;

  constructor(
    listener: Deno.Listener,
    address: string,
    signal: AbortSignal | undefined,
    wrap: (conn: Deno.Conn) => Transport,
    onClose?: () => Promise<void>,
  ) {
    this.#listener = listener;
    this.address = address;
    this.#wrap = wrap;
    this.#signal = signal;
    this.#onClose = onClose;
    signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  async accept(signal?: AbortSignal): Promise<Transport> {
    signal?.throwIfAborted();
    if (this.#closed) throw this.#closedError();
    let conn: Deno.Conn;
    try {
      conn = await abortable(
        this.#listener.accept(),
        signal,
        (late) => late.close(),
      );
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (this.#closed) throw this.#closedError(error);
      throw new TransportError(
        `Cannot accept a connection on "${this.address}": ${
          describeError(error)
        }`,
        { uri: this.address, cause: error },
      );
    }
    return this.#wrap(conn);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    this.#listener.close();
    await this.#onClose?.();
  }

  #closedError(cause?: unknown): TransportError {
    return new TransportError(
      `Cannot accept a connection on "${this.address}": the listener is closed`,
      { uri: this.address, cause },
    );
  }
}
