import type { Clock } from "../streams/clock.ts";
import type { TlsOptions } from "./tls_transport.ts";

/**
 * Options for listening on a socket address ({@linkcode listenTransport},
 * `listenTcp()`, `listenUnix()`): how long a connection may stay silent,
 * and what happens to connections nobody waits for.
 *
 * @example Usage
 * ```ts
 * import { connectTransport, type ListenOptions, listenTransport } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const refused: string[] = [];
 * const options: ListenOptions = {
 *   spareConnections: 0,
 *   onRefused: (peer) => refused.push(peer),
 * };
 * const listener = await listenTransport("tcp:127.0.0.1:0", options);
 * const [first, accepted] = await Promise.all([connectTransport(listener.address), listener.accept()]);
 * const second = await connectTransport(listener.address);
 * assert.deepEqual(await Array.fromAsync(second.readable), []); // closed at once
 * assert.equal(refused.length, 1);
 * await Promise.all([first.close(), accepted.close(), second.close(), listener.close()]);
 * ```
 */
export interface ListenOptions {
  /** Closes the listener when aborted; pending accepts reject. */
  signal?: AbortSignal;
  /**
   * Milliseconds a read of an accepted `tcp:` or `unix:` connection may
   * wait without a byte arriving; then the read fails (a peer that
   * connected and sends nothing). 0 waits forever, as QEMU does.
   *
   * @default {0}
   */
  idleTimeoutMs?: number;
  /**
   * Time source of the idle timeout.
   *
   * @default {SYSTEM_CLOCK}
   */
  clock?: Clock;
  /**
   * How many connections may wait for an `accept()` once the first one was
   * accepted. A connection beyond that, arriving while no `accept()` waits,
   * is closed at once (refused) instead of waiting unseen in the kernel's
   * backlog; a migration in progress refuses a second source this way.
   *
   * @default {Infinity}
   */
  spareConnections?: number;
  /**
   * Called with the description of each connection refused because of
   * `spareConnections`.
   */
  onRefused?: (peer: string) => void;
  /**
   * Runs TLS on every accepted connection, as a server (`tcp:` only): see
   * `listenTls()`.
   */
  tls?: TlsOptions;
}
