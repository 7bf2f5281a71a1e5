import assert from "node:assert/strict";
import { createMemoryTransportPair } from "../../lib/transport/memory_transport.ts";
import { runTransportConformance } from "../_helpers/transport_conformance.ts";

runTransportConformance({
  name: "memory",
  newPair: () => {
    const [a, b] = createMemoryTransportPair({ highWaterMarkBytes: 1 << 20 });
    return Promise.resolve({ a, b });
  },
  abortReachesPeerAs: "the same error",
  maxBufferedBytes: (1 << 20) + (128 << 10),
  settleMs: 0,
});

Deno.test("createMemoryTransportPair() holds a writer once highWaterMarkBytes wait unread", async () => {
  const [a, b] = createMemoryTransportPair({ highWaterMarkBytes: 10 });
  const writer = a.writable.getWriter();
  let accepted = 0;
  const first = writer.write(new Uint8Array(6)).then(() => accepted++);
  await first;
  const second = writer.write(new Uint8Array(6)).then(() => accepted++);
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(accepted, 1);
  const reader = b.readable.getReader();
  await reader.read();
  await second;
  assert.equal(accepted, 2);
  await Promise.all([a.close(), b.close()]);
});

Deno.test("createMemoryTransportPair() hands chunks over without copying", async () => {
  const [a, b] = createMemoryTransportPair();
  const chunk = new Uint8Array([1, 2, 3]);
  const writer = a.writable.getWriter();
  writer.write(chunk);
  const { value } = await b.readable.getReader().read();
  assert.equal(value, chunk);
  await Promise.all([a.close(), b.close()]);
});

Deno.test("createMemoryTransportPair() errors the peer's writes with the cancel reason", async () => {
  const [a, b] = createMemoryTransportPair();
  const reason = new Error("Destination gave up");
  await b.readable.cancel(reason);
  await assert.rejects(a.writable.getWriter().write(new Uint8Array(1)), reason);
  await Promise.all([a.close(), b.close()]);
});

Deno.test("createMemoryTransportPair() rejects a negative highWaterMarkBytes", () => {
  assert.throws(() => createMemoryTransportPair({ highWaterMarkBytes: -1 }), {
    name: "RangeError",
    message:
      "Cannot create memory transports as highWaterMarkBytes must be >= 0: received -1",
  });
});

Deno.test("createMemoryTransportPair() names both sides", async () => {
  const [a, b] = createMemoryTransportPair({
    descriptions: ["source", "destination"],
  });
  assert.deepEqual([a.description, b.description], ["source", "destination"]);
  await Promise.all([a.close(), b.close()]);
});
