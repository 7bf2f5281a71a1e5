/**
 * The destination's connection: a reply resolves once the transport took
 * it, which for a small write may mean "held back to go with the next";
 * finishing the connection must still send it.
 */
import assert from "node:assert/strict";
import type { Transport } from "../../mod.ts";
import { IncomingConnection } from "../../lib/migration/_incoming_connection.ts";
import { delay } from "../_helpers/delay.ts";

/**
 * A transport like a socket's: writes resolve at once and reach the peer
 * one macrotask later; close() drops what has not gone out yet.
 */
function coalescingTransport() {
  const delivered: number[] = [];
  let pending: Uint8Array[] = [];
  let closed = false;
  const send = () =>
    setTimeout(() => {
      if (closed) return;
      for (const bytes of pending) delivered.push(...bytes);
      pending = [];
    }, 0);
  const transport: Transport = {
    description: "coalescing",
    readable: new ReadableStream<Uint8Array>(),
    writable: new WritableStream<Uint8Array>({
      write(chunk) {
        pending.push(chunk.slice());
        send();
      },
      close: () =>
        new Promise<void>((resolve) => setTimeout(() => resolve(), 1)),
    }),
    close() {
      closed = true;
      return Promise.resolve();
    },
  };
  return { transport, delivered };
}

const SHUT_0 = [0, 1, 0, 4, 0, 0, 0, 0];

Deno.test("IncomingConnection.finish() sends the last reply before closing", async () => {
  const { transport, delivered } = coalescingTransport();
  const connection = new IncomingConnection(transport, { recovery: false });
  connection.returnPath = true;
  await connection.reply({ type: "SHUT", value: 0 });
  await connection.finish();
  assert.deepEqual(delivered, SHUT_0);
});

Deno.test("IncomingConnection.close() is abrupt: a reply held back is lost (why finish() exists)", async () => {
  const { transport, delivered } = coalescingTransport();
  const connection = new IncomingConnection(transport, { recovery: false });
  connection.returnPath = true;
  await connection.reply({ type: "SHUT", value: 0 });
  await connection.close();
  await delay(0); // after the transport's send, scheduled before
  assert.deepEqual(delivered, []);
});
