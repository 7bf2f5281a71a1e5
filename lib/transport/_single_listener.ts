/**
 * A {@linkcode TransportListener} that hands out one transport opened in
 * advance, for the incoming side of `exec:` and `file:`, which have no
 * connections to accept. Private to lib/transport/.
 *
 * @module
 */

import type { Transport, TransportListener } from "./transport.ts";
import { NotSupportedError } from "../errors.ts";
import { TransportError } from "./transport_error.ts";

/** Yields `transport` on the first `accept()`; closes it if never taken. */
export class SingleTransportListener implements TransportListener {
  readonly address: string;
  #transport: Transport | undefined;
  #taken = false;
  #closed = false;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = () => void this.close();

  constructor(
    address: string,
    transport: Transport,
    signal: AbortSignal | undefined,
  ) {
    this.address = address;
    this.#transport = transport;
    this.#signal = signal;
    signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  accept(signal?: AbortSignal): Promise<Transport> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.#closed) {
      return Promise.reject(
        new TransportError(
          `Cannot accept a connection on "${this.address}": the listener is closed`,
          { uri: this.address },
        ),
      );
    }
    const transport = this.#transport;
    if (transport === undefined) {
      return Promise.reject(
        new NotSupportedError(
          `Cannot accept a second connection on "${this.address}": it carries a single stream`,
        ),
      );
    }
    this.#transport = undefined;
    this.#taken = true;
    return Promise.resolve(transport);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    if (!this.#taken) await this.#transport?.close();
    this.#transport = undefined;
  }
}
