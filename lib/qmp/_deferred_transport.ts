/**
 * A {@linkcode Transport} whose connection is still being opened: QEMU's
 * `migrate` answers `{}` before its socket connects, and a connection that
 * fails afterwards fails the migration (status `failed`, with the reason
 * in `error-desc`). Writes and reads wait for the connection; if it cannot
 * be opened, both streams error with that reason. Private to lib/qmp/.
 *
 * @module
 */

import type { Transport } from "../transport/transport.ts";

/** The connection of a {@linkcode deferTransport}, once it settled. */
export interface DeferredConnection {
  /** Resolves with the connection, or rejects with why it was not opened. */
  readonly opened: Promise<Transport>;
}

/**
 * Wraps a connection that is being opened.
 *
 * @param opening The connection attempt.
 * @param description What the transport connects to, for messages.
 * @returns A transport usable at once.
 */
export function deferTransport(
  opening: Promise<Transport>,
  description: string,
): Transport & DeferredConnection {
  let inner: Transport | undefined;
  let closed = false;
  const opened = opening.then((transport) => {
    inner = transport;
    if (closed) void transport.close();
    return transport;
  });
  opened.catch(() => {}); // the streams report it
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  let writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  const readable = new ReadableStream<Uint8Array>({
    async pull(controller) {
      reader ??= (await opened).readable.getReader();
      const { done, value } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    async cancel(reason) {
      if (reader) await reader.cancel(reason);
      else if (inner) await inner.readable.cancel(reason);
    },
  }, { highWaterMark: 0 });
  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      writer ??= (await opened).writable.getWriter();
      await writer.write(chunk);
    },
    async close() {
      writer ??= (await opened).writable.getWriter();
      await writer.close();
    },
    async abort(reason) {
      if (writer) await writer.abort(reason);
      else if (inner) await inner.writable.abort(reason);
    },
  });
  return {
    readable,
    writable,
    description,
    // Each write waits for the connection's own write, which copies the
    // bytes for sockets; anything else gets its chunks untouched.
    copiesWrites: /^(tcp|unix):/.test(description),
    opened,
    async close() {
      closed = true;
      await inner?.close();
    },
  };
}
