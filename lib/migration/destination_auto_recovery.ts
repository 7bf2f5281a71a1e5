import { listenTransport } from "../transport/open_transport.ts";
import type { TransportListener } from "../transport/transport.ts";
import type { DestinationMigration } from "./destination_migration.ts";
import type { MigrationEventDetail } from "./migration_state.ts";

/** Options for {@linkcode DestinationAutoRecovery}. */
export interface DestinationAutoRecoveryOptions {
  /**
   * Called each time the destination pauses in postcopy, once it listens
   * at the recovery address, with that address (port 0 resolved).
   */
  onWaiting?: (address: string) => void;
  /**
   * Called when a recovery cannot be set up: the address cannot be
   * listened on, or accepting fails. The next pause tries again.
   */
  onError?: (error: unknown) => void;
  /**
   * Listens at the recovery address.
   *
   * @default {listenTransport}
   */
  listen?: (uri: string) => Promise<TransportListener>;
}

/**
 * Heals a destination paused in postcopy by itself: whenever it enters
 * `postcopy-paused`, listens at `uri` (once, on the first pause), accepts
 * the source's next connection there and recovers on it (QEMU's
 * `migrate-recover uri`); further connections there carry the
 * postcopy-preempt channel. The source side is
 * {@linkcode SourceAutoRecovery}.
 *
 * @example Usage
 * ```ts
 * import { connectTransport, DestinationAutoRecovery, type Transport } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * // Stands in for a DestinationMigration: its "status" events and recover().
 * const recovered = Promise.withResolvers<Transport>();
 * const destination = Object.assign(new EventTarget(), {
 *   recover: (transport: Transport) => recovered.resolve(transport),
 * });
 * const waiting = Promise.withResolvers<string>();
 * const recovery = new DestinationAutoRecovery(destination, "tcp:127.0.0.1:0", {
 *   onWaiting: (address) => waiting.resolve(address),
 * });
 * destination.dispatchEvent(new CustomEvent("status", { detail: { status: "postcopy-paused" } }));
 * const address = await waiting.promise;
 * assert.match(address, /^tcp:127\.0\.0\.1:\d+$/);
 * const outgoing = await connectTransport(address);
 * const incoming = await recovered.promise;
 * await Promise.all([outgoing.close(), incoming.close()]);
 * await recovery.stop();
 * ```
 */
export class DestinationAutoRecovery {
  readonly #destination: Pick<
    DestinationMigration,
    "recover" | "addEventListener" | "removeEventListener"
  >;
  readonly #uri: string;
  readonly #options: DestinationAutoRecoveryOptions;
  readonly #onStatus = (event: Event) => this.#handle(event);
  #listener: TransportListener | undefined;
  #stopped = false;

  /**
   * Starts watching `destination`.
   *
   * @param destination The destination: a {@linkcode DestinationMigration},
   *   or anything that sends its `"status"` events and can `recover()`.
   * @param uri Where to wait for the source.
   * @param options What to call when waiting or failing, how to listen.
   */
  constructor(
    destination: Pick<
      DestinationMigration,
      "recover" | "addEventListener" | "removeEventListener"
    >,
    uri: string,
    options: DestinationAutoRecoveryOptions = {},
  ) {
    this.#destination = destination;
    this.#uri = uri;
    this.#options = options;
    destination.addEventListener("status", this.#onStatus);
  }

  /**
   * Stops watching, and stops listening at the recovery address; a wait
   * for the source that this ends is not reported to `onError`.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#destination.removeEventListener("status", this.#onStatus);
    await this.#listener?.close();
  }

  async #handle(event: Event): Promise<void> {
    const { status } = (event as CustomEvent<MigrationEventDetail>).detail;
    if (status !== "postcopy-paused") return;
    try {
      this.#listener ??= await (this.#options.listen ?? listenTransport)(
        this.#uri,
      );
      const listener = this.#listener;
      this.#options.onWaiting?.(listener.address);
      const transport = await listener.accept();
      this.#destination.recover(transport, { accept: () => listener.accept() });
    } catch (error) {
      if (!this.#stopped) this.#options.onError?.(error);
    }
  }
}
