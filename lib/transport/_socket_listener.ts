/**
 * The {@linkcode TransportListener} over a `Deno.Listener`, shared by `tcp:`
 * and `unix:`. Private to lib/transport/.
 *
 * With `spareConnections` finite, the listener keeps accepting once its
 * first connection was taken: a new connection goes to a waiting
 * `accept()`, else waits as a spare (up to that many), else is closed at
 * once, so that a second source learns right away that it is not wanted.
 *
 * @module
 */

import { describeError } from "../errors.ts";
import type { Transport, TransportListener } from "./transport.ts";
import { abortable } from "./_abortable.ts";
import { watchIdle } from "./_idle_conn.ts";
import type { ByteConn } from "./_conn_transport.ts";
import type { ListenOptions } from "./listen_options.ts";
import { TransportError } from "./transport_error.ts";

/** What {@linkcode SocketListener} needs besides the listen options. */
export interface SocketListenerOptions extends ListenOptions {
  /** Called once the listener is closed (removes a unix socket file). */
  onClose?: () => Promise<void>;
}

/** What {@linkcode SocketListener} listens with: a `Deno.Listener` or the like. */
export interface ConnListener<C extends ByteConn> {
  accept(): Promise<C>;
  close(): void;
}

/** A `Deno.Listener` (or a TLS one) as a {@linkcode TransportListener}. */
export class SocketListener<C extends ByteConn = Deno.Conn>
  implements TransportListener {
  readonly address: string;
  readonly #listener: ConnListener<C>;
  readonly #wrap: (conn: C) => Transport;
  readonly #options: SocketListenerOptions;
  readonly #onAbort = () => void this.close();
  /** Accepts waiting for the background loop, in order. */
  readonly #waiting: PromiseWithResolvers<Transport>[] = [];
  /** Connections accepted while no accept() waited. */
  readonly #spares: Transport[] = [];
  #looping = false;
  #closed = false;

  constructor(
    listener: ConnListener<C>,
    address: string,
    wrap: (conn: C) => Transport,
    options: SocketListenerOptions = {},
  ) {
    this.#listener = listener;
    this.address = address;
    const { idleTimeoutMs = 0, clock } = options;
    this.#wrap = idleTimeoutMs > 0
      ? (conn) => wrap(watchIdle(conn, idleTimeoutMs, clock))
      : wrap;
    this.#options = options;
    options.signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  async accept(signal?: AbortSignal): Promise<Transport> {
    signal?.throwIfAborted();
    if (this.#closed) throw this.#closedError();
    const spare = this.#spares.shift();
    if (spare !== undefined) return spare;
    if (this.#looping) return await this.#waitForLoop(signal);
    let conn: C;
    try {
      conn = await abortable(
        this.#listener.accept(),
        signal,
        (late) => late.close(),
      );
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      throw this.#acceptError(error);
    }
    const transport = this.#wrap(conn);
    if ((this.#options.spareConnections ?? Infinity) < Infinity) {
      this.#looping = true;
      void this.#loop();
    }
    return transport;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#options.signal?.removeEventListener("abort", this.#onAbort);
    this.#listener.close();
    for (const waiter of this.#waiting.splice(0)) {
      waiter.reject(this.#closedError());
    }
    await Promise.all(
      this.#spares.splice(0).map((spare) => spare.close().catch(() => {})),
    );
    await this.#options.onClose?.();
  }

  /** Hands connections to waiting accepts, keeps spares, refuses others. */
  async #loop(): Promise<void> {
    while (!this.#closed) {
      let transport: Transport;
      try {
        transport = this.#wrap(await this.#listener.accept());
      } catch (error) {
        this.#looping = false;
        if (this.#closed) return;
        for (const waiter of this.#waiting.splice(0)) {
          waiter.reject(this.#acceptError(error));
        }
        return;
      }
      const waiter = this.#waiting.shift();
      if (waiter !== undefined) waiter.resolve(transport);
      else if (this.#spares.length < this.#options.spareConnections!) {
        this.#spares.push(transport);
      } else {
        await transport.close().catch(() => {});
        this.#options.onRefused?.(transport.description);
      }
    }
  }

  async #waitForLoop(signal: AbortSignal | undefined): Promise<Transport> {
    const waiter = Promise.withResolvers<Transport>();
    this.#waiting.push(waiter);
    const onAbort = () => {
      const at = this.#waiting.indexOf(waiter);
      if (at >= 0) this.#waiting.splice(at, 1);
      waiter.reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await waiter.promise;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  #acceptError(error: unknown): TransportError {
    if (this.#closed) return this.#closedError(error);
    return new TransportError(
      `Cannot accept a connection on "${this.address}": ${
        describeError(error)
      }`,
      { uri: this.address, cause: error },
    );
  }

  #closedError(cause?: unknown): TransportError {
    return new TransportError(
      `Cannot accept a connection on "${this.address}": the listener is closed`,
      { uri: this.address, cause },
    );
  }
}
