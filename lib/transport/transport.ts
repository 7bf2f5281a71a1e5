/**
 * The interfaces every transport implements: a duplex byte connection
 * ({@linkcode Transport}), a listener that hands out connections
 * ({@linkcode TransportListener}), and a file with positioned reads and
 * writes ({@linkcode RandomAccessFile}) for the mapped-ram layout.
 *
 * A migration source writes the migration stream to `writable` and reads the
 * return path from `readable`; a destination does the opposite. Both
 * directions travel over the same connection, as in QEMU, where the return
 * path is the reverse direction of the main channel.
 *
 * @module
 */

/**
 * A duplex byte connection to a migration peer.
 *
 * - `readable` carries the bytes the peer writes. It ends when the peer
 *   closes its writing side or the whole connection.
 * - `writable` carries bytes to the peer. Closing it is a half-close: the
 *   peer's `readable` ends once the bytes written so far have arrived, while
 *   this side's `readable` stays open, so a source can finish the stream and
 *   still read the return path until the destination closes.
 * - `close()` ends both directions at once: pending reads end, pending and
 *   later writes reject, the peer's `readable` ends.
 *
 * A chunk written to `writable` must not be modified afterwards: an
 * in-process transport hands the very same bytes to the peer.
 *
 * Transports with a single direction (`file:`) still have both streams:
 * the missing one errors with a {@linkcode NotSupportedError} naming the
 * transport on the first read or write, the way QEMU refuses to open a
 * return path on a channel that has none. Opening it costs nothing, and
 * closing or cancelling it without using it succeeds.
 *
 * @example Usage
 * ```ts
 * import { createMemoryTransportPair, type Transport } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const [source, destination]: Transport[] = createMemoryTransportPair();
 * const writer = source.writable.getWriter();
 * await writer.write(new Uint8Array([1, 2, 3]));
 * await writer.close();
 *
 * const received = await Array.fromAsync(destination.readable);
 * assert.deepEqual(received, [new Uint8Array([1, 2, 3])]);
 * await Promise.all([source.close(), destination.close()]);
 * ```
 */
export interface Transport {
  /** Bytes from the peer. */
  readonly readable: ReadableStream<Uint8Array>;
  /** Bytes to the peer; closing it half-closes the connection. */
  readonly writable: WritableStream<Uint8Array>;
  /** What this transport is connected to, for messages and logs. */
  readonly description: string;
  /**
   * Whether the transport has copied a chunk once its write resolved, so
   * the writer may reuse the chunk's memory (true for sockets; an
   * in-process transport hands the very chunk to its peer).
   */
  readonly copiesWrites?: boolean;
  /**
   * Reads the next bytes from the peer straight into `view` (which may be
   * over a `SharedArrayBuffer`), bypassing `readable`: for a reader that
   * manages its own memory. Resolves to how many bytes were read (at least
   * one), or `null` at the end. Present on socket transports; do not mix
   * with reading `readable`.
   */
  readonly readInto?: (view: Uint8Array) => Promise<number | null>;
  /**
   * Closes both directions and releases the connection, process or file.
   * Safe to call more than once and while the streams are locked.
   */
  close(): Promise<void>;
}

/**
 * Waits for incoming connections on an address, like QEMU's
 * `-incoming tcp:…`.
 *
 * @example Usage
 * ```ts
 * import { connectTransport, listenTransport } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const listener = await listenTransport("tcp:127.0.0.1:0");
 * try {
 *   assert.match(listener.address, /^tcp:127\.0\.0\.1:[1-9][0-9]*$/);
 *   const [client, server] = await Promise.all([
 *     connectTransport(listener.address),
 *     listener.accept(),
 *   ]);
 *   await Promise.all([client.close(), server.close()]);
 * } finally {
 *   await listener.close();
 * }
 * ```
 */
export interface TransportListener {
  /**
   * The URI a peer connects to. When port 0 was asked for, it carries the
   * port the system picked.
   */
  readonly address: string;
  /**
   * Waits for the next connection.
   *
   * @param signal Rejects the wait with `signal.reason` when aborted.
   * @returns The connection.
   */
  accept(signal?: AbortSignal): Promise<Transport>;
  /**
   * Stops listening. Pending {@linkcode TransportListener.accept} calls
   * reject; connections already accepted stay open.
   */
  close(): Promise<void>;
}

/**
 * A file read and written at explicit offsets, as the mapped-ram layout
 * needs: each page has a fixed place in the file.
 *
 * Operations run one at a time in the order they were called, so callers may
 * issue several without awaiting each.
 *
 * @example Usage
 * ```ts
 * import { openRandomAccessFile } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile();
 * const file = await openRandomAccessFile(path);
 * try {
 *   await file.writeAt(4096, new Uint8Array([7, 8]));
 *   assert.equal(await file.size(), 4098);
 *   assert.deepEqual(await file.readAt(4095, 3), new Uint8Array([0, 7, 8]));
 * } finally {
 *   await file.close();
 *   await Deno.remove(path);
 * }
 * ```
 */
export interface RandomAccessFile {
  /**
   * Reads exactly `size` bytes starting at `offset`.
   *
   * @param offset Where to start, in bytes from the start of the file.
   * @param size How many bytes to read.
   * @returns A new buffer the caller owns.
   * @throws {UnexpectedEndOfStreamError} If the file ends first.
   */
  readAt(offset: number, size: number): Promise<Uint8Array>;
  /**
   * Writes all of `bytes` starting at `offset`, growing the file if needed.
   *
   * @param offset Where to start, in bytes from the start of the file.
   * @param bytes What to write; not kept after the promise settles.
   */
  writeAt(offset: number, bytes: Uint8Array): Promise<void>;
  /** Resolves to the file's current size in bytes. */
  size(): Promise<number>;
  /**
   * Cuts or extends the file to `size` bytes; new bytes read as zero.
   *
   * @param size The new size in bytes.
   */
  truncate(size: number): Promise<void>;
  /** Closes the file after the operations already issued. */
  close(): Promise<void>;
}
