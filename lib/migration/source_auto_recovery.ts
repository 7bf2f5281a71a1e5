import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import { connectTransport } from "../transport/open_transport.ts";
import type { Transport } from "../transport/transport.ts";
import type { MigrationEventDetail } from "./migration_state.ts";
import type { SourceMigration } from "./source_migration.ts";

/** First wait between two connection attempts, in milliseconds. */
const FIRST_RETRY_MS = 100;
/** Longest wait between two attempts: the waits double up to it. */
const LONGEST_RETRY_MS = 2000;

/** Options for {@linkcode SourceAutoRecovery}. */
export interface SourceAutoRecoveryOptions {
  /**
   * Called each time the source pauses in postcopy, before it first tries
   * to reconnect.
   */
  onPaused?: () => void;
  /**
   * Opens a connection to the recovery address.
   *
   * @default {connectTransport}
   */
  connect?: (uri: string) => Promise<Transport>;
  /**
   * Time source for the waits between attempts.
   *
   * @default {SYSTEM_CLOCK}
   */
  clock?: Clock;
}

/**
 * Heals a source paused in postcopy by itself: whenever it enters
 * `postcopy-paused`, connects to `uri` and resumes there (QEMU's `migrate
 * uri=… resume=true`), trying again after 100 ms, 200 ms, … up to every
 * 2 s until the destination listens at `uri` (see
 * {@linkcode DestinationAutoRecovery}).
 *
 * @example Usage
 * ```ts
 * import { listenTransport, SourceAutoRecovery, type Transport } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const listener = await listenTransport("tcp:127.0.0.1:0");
 * // Stands in for a SourceMigration: its "status" events and resume().
 * const resumed = Promise.withResolvers<Transport>();
 * const source = Object.assign(new EventTarget(), {
 *   resume: (transport: Transport) => resumed.resolve(transport),
 * });
 * let pauses = 0;
 * const recovery = new SourceAutoRecovery(source, listener.address, {
 *   onPaused: () => pauses++,
 * });
 * source.dispatchEvent(new CustomEvent("status", { detail: { status: "postcopy-paused" } }));
 * const [transport, accepted] = await Promise.all([resumed.promise, listener.accept()]);
 * recovery.stop();
 * assert.equal(pauses, 1);
 * await Promise.all([transport.close(), accepted.close(), listener.close()]);
 * ```
 */
export class SourceAutoRecovery {
  readonly #source: Pick<
    SourceMigration,
    "resume" | "addEventListener" | "removeEventListener"
  >;
  readonly #uri: string;
  readonly #onPaused: (() => void) | undefined;
  readonly #connect: (uri: string) => Promise<Transport>;
  readonly #clock: Clock;
  readonly #onStatus = (event: Event) => this.#handle(event);
  #stopped = false;

  /**
   * Starts watching `source`.
   *
   * @param source The source: a {@linkcode SourceMigration}, or anything
   *   that sends its `"status"` events and can `resume()`.
   * @param uri The destination's recovery address.
   * @param options What to call on a pause, how to connect, the clock.
   */
  constructor(
    source: Pick<
      SourceMigration,
      "resume" | "addEventListener" | "removeEventListener"
    >,
    uri: string,
    options: SourceAutoRecoveryOptions = {},
  ) {
    this.#source = source;
    this.#uri = uri;
    this.#onPaused = options.onPaused;
    this.#connect = options.connect ?? connectTransport;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    source.addEventListener("status", this.#onStatus);
  }

  /**
   * Stops watching: later pauses are left alone, and an attempt under way
   * ends after its current wait.
   */
  stop(): void {
    this.#stopped = true;
    this.#source.removeEventListener("status", this.#onStatus);
  }

  async #handle(event: Event): Promise<void> {
    const { status } = (event as CustomEvent<MigrationEventDetail>).detail;
    if (status !== "postcopy-paused") return;
    this.#onPaused?.();
    for (
      let delay = FIRST_RETRY_MS;
      !this.#stopped;
      delay = Math.min(delay * 2, LONGEST_RETRY_MS)
    ) {
      let transport: Transport;
      try {
        transport = await this.#connect(this.#uri);
      } catch {
        await this.#clock.sleep(delay);
        continue;
      }
      try {
        this.#source.resume(transport);
      } catch {
        // The source no longer waits (abandoned, or resumed otherwise).
        await transport.close().catch(() => {});
      }
      return;
    }
  }
}
