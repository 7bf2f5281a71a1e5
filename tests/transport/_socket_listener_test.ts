import assert from "node:assert/strict";
import { createManualClock } from "../_helpers/manual_clock.ts";
import {
  connectTransport,
  listenTransport,
  type Transport,
  TransportError,
} from "../../mod.ts";

async function closeAll(...transports: Transport[]): Promise<void> {
  await Promise.all(transports.map((t) => t.close()));
}

for (const scheme of ["tcp", "unix"] as const) {
  const uri = scheme === "tcp"
    ? "tcp:127.0.0.1:0"
    : "unix:/tmp/livemig-test.sock";

  Deno.test(`listenTransport(${scheme}:) with spareConnections 0 refuses a second connection at once`, async () => {
    const refused: string[] = [];
    const listener = await listenTransport(uri, {
      spareConnections: 0,
      onRefused: (peer) => refused.push(peer),
    });
    try {
      const [first, accepted] = await Promise.all([
        connectTransport(listener.address),
        listener.accept(),
      ]);
      const second = await connectTransport(listener.address);
      assert.deepEqual(await Array.fromAsync(second.readable), []);
      assert.equal(refused.length, 1);
      assert.match(refused[0]!, new RegExp(`^${scheme}:`));
      // A connection that an accept() waits for is handed over.
      const [third, next] = await Promise.all([
        connectTransport(listener.address),
        listener.accept(),
      ]);
      const writer = third.writable.getWriter();
      await writer.write(new Uint8Array([7]));
      await writer.close();
      assert.deepEqual(await Array.fromAsync(next.readable), [
        new Uint8Array([7]),
      ]);
      await closeAll(first, accepted, second, third, next);
    } finally {
      await listener.close();
    }
  });
}

Deno.test("listenTransport() keeps spareConnections for a later accept() and refuses the rest", async () => {
  const refused: string[] = [];
  const listener = await listenTransport("tcp:127.0.0.1:0", {
    spareConnections: 1,
    onRefused: (peer) => refused.push(peer),
  });
  try {
    const [first, accepted] = await Promise.all([
      connectTransport(listener.address),
      listener.accept(),
    ]);
    const spare = await connectTransport(listener.address);
    const extra = await connectTransport(listener.address);
    assert.deepEqual(await Array.fromAsync(extra.readable), []);
    assert.equal(refused.length, 1);
    const kept = await listener.accept();
    const writer = spare.writable.getWriter();
    await writer.write(new Uint8Array([1, 2]));
    await writer.close();
    assert.deepEqual(await Array.fromAsync(kept.readable), [
      new Uint8Array([1, 2]),
    ]);
    await closeAll(first, accepted, spare, extra, kept);
  } finally {
    await listener.close();
  }
});

Deno.test("listenTransport() without spareConnections leaves a second connection waiting", async () => {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  try {
    const [first, accepted] = await Promise.all([
      connectTransport(listener.address),
      listener.accept(),
    ]);
    const second = await connectTransport(listener.address);
    const later = await listener.accept();
    await closeAll(first, accepted, second, later);
  } finally {
    await listener.close();
  }
});

Deno.test("listenTransport() with idleTimeoutMs fails a read that waits that long", async () => {
  const clock = createManualClock();
  const listener = await listenTransport("tcp:127.0.0.1:0", {
    idleTimeoutMs: 100,
    clock,
  });
  try {
    const [client, server] = await Promise.all([
      connectTransport(listener.address),
      listener.accept(),
    ]);
    const reader = server.readable.getReader();
    const writer = client.writable.getWriter();
    // Bytes within the timeout keep the connection.
    const first = reader.read();
    await clock.untilSleeping();
    clock.advance(99);
    await writer.write(new Uint8Array([1]));
    assert.deepEqual((await first).value, new Uint8Array([1]));
    // A read that waits 100 ms fails and says why.
    const second = reader.read();
    await clock.untilSleeping();
    clock.advance(100);
    await assert.rejects(second, (error: unknown) => {
      assert.ok(error instanceof TransportError, String(error));
      assert.match(
        error.message,
        /^Cannot read from "tcp:127\.0\.0\.1:\d+ \(peer 127\.0\.0\.1:\d+\)": nothing arrived for 100 ms \(idle timeout\), so the connection was closed$/,
      );
      return true;
    });
    await closeAll(client, server);
  } finally {
    await listener.close();
  }
});
