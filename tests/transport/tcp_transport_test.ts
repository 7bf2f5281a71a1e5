import assert from "node:assert/strict";
import { connectTcp, listenTcp } from "../../lib/transport/tcp_transport.ts";
import {
  parseTransportUri,
  type TcpTransportUri,
} from "../../lib/transport/transport_uri.ts";
import { TransportError } from "../../lib/transport/transport_error.ts";
import { runTransportConformance } from "../_helpers/transport_conformance.ts";

const LOOPBACK: TcpTransportUri = { scheme: "tcp", host: "127.0.0.1", port: 0 };

runTransportConformance({
  name: "TCP",
  async newPair() {
    const listener = await listenTcp(LOOPBACK);
    try {
      const [a, b] = await Promise.all([
        connectTcp(parseTransportUri(listener.address) as TcpTransportUri),
        listener.accept(),
      ]);
      return { a, b, dispose: () => listener.close() };
    } catch (error) {
      await listener.close();
      throw error;
    }
  },
  abortReachesPeerAs: "an error or the end",
  // Loopback socket buffers grow to a few MiB each way.
  maxBufferedBytes: 64 << 20,
  settleMs: 200,
});

Deno.test("listenTcp() reports the port the system picked for port 0", async () => {
  const listener = await listenTcp(LOOPBACK);
  try {
    const { port } = parseTransportUri(listener.address) as TcpTransportUri;
    assert.ok(port > 0 && port <= 65535, listener.address);
    assert.equal(listener.address, `tcp:127.0.0.1:${port}`);
  } finally {
    await listener.close();
  }
});

Deno.test("listenTcp() tries the next port up to to= when the port is busy", async () => {
  const busy = await listenTcp(LOOPBACK);
  const { port } = parseTransportUri(busy.address) as TcpTransportUri;
  try {
    // Ports above the busy one may be taken too; try a range of 20.
    const listener = await listenTcp({ ...LOOPBACK, port, to: port + 20 });
    try {
      const picked = (parseTransportUri(listener.address) as TcpTransportUri)
        .port;
      assert.ok(picked > port && picked <= port + 20, listener.address);
    } finally {
      await listener.close();
    }
  } finally {
    await busy.close();
  }
});

Deno.test("listenTcp() names the URI when the port is busy", async () => {
  const busy = await listenTcp(LOOPBACK);
  try {
    const uri = parseTransportUri(busy.address) as TcpTransportUri;
    await assert.rejects(listenTcp(uri), (error: TransportError) => {
      assert.ok(error instanceof TransportError);
      assert.equal(error.uri, busy.address);
      assert.match(error.message, /^Cannot listen on "tcp:127\.0\.0\.1:\d+": /);
      assert.ok(error.cause instanceof Deno.errors.AddrInUse);
      return true;
    });
  } finally {
    await busy.close();
  }
});

Deno.test("connectTcp() names the URI when the connection is refused", async () => {
  // Bind a port, then free it, so that nothing listens there.
  const listener = await listenTcp(LOOPBACK);
  const uri = parseTransportUri(listener.address) as TcpTransportUri;
  await listener.close();
  await assert.rejects(connectTcp(uri), (error: TransportError) => {
    assert.ok(error instanceof TransportError);
    assert.equal(error.uri, `tcp:127.0.0.1:${uri.port}`);
    assert.match(
      error.message,
      new RegExp(`^Cannot connect to "tcp:127\\.0\\.0\\.1:${uri.port}": `),
    );
    assert.ok(error.cause instanceof Deno.errors.ConnectionRefused);
    return true;
  });
});

Deno.test("connectTcp() rejects with the reason of an aborted signal", async () => {
  const controller = new AbortController();
  const reason = new Error("Cancelled by the user");
  controller.abort(reason);
  await assert.rejects(
    connectTcp({ ...LOOPBACK, port: 1 }, { signal: controller.signal }),
    reason,
  );
});

Deno.test("TransportListener.accept() rejects with the reason of its signal", async () => {
  const listener = await listenTcp(LOOPBACK);
  try {
    const controller = new AbortController();
    const accepting = listener.accept(controller.signal);
    const reason = new Error("Gave up waiting");
    controller.abort(reason);
    await assert.rejects(accepting, reason);
  } finally {
    await listener.close();
  }
});

Deno.test("TransportListener.close() rejects a pending accept", async () => {
  const listener = await listenTcp(LOOPBACK);
  const accepting = listener.accept();
  await listener.close();
  await assert.rejects(accepting, {
    name: "TransportError",
    message:
      `Cannot accept a connection on "${listener.address}": the listener is closed`,
  });
});

Deno.test("listenTcp() closes the listener when its signal aborts", async () => {
  const controller = new AbortController();
  const listener = await listenTcp(LOOPBACK, { signal: controller.signal });
  const accepting = listener.accept();
  controller.abort();
  await assert.rejects(accepting, TransportError);
  await listener.close();
});

Deno.test("TCP transport descriptions name the address and the peer", async () => {
  const listener = await listenTcp(LOOPBACK);
  try {
    const [a, b] = await Promise.all([
      connectTcp(parseTransportUri(listener.address) as TcpTransportUri),
      listener.accept(),
    ]);
    assert.equal(a.description, listener.address);
    assert.match(
      b.description,
      new RegExp(`^${listener.address} \\(peer 127\\.0\\.0\\.1:\\d+\\)$`),
    );
    await Promise.all([a.close(), b.close()]);
  } finally {
    await listener.close();
  }
});

Deno.test("TCP transport readInto() reads into shared memory and returns null at the end", async () => {
  const listener = await listenTcp(LOOPBACK);
  try {
    const [a, b] = await Promise.all([
      connectTcp(parseTransportUri(listener.address) as TcpTransportUri),
      listener.accept(),
    ]);
    const writer = a.writable.getWriter();
    await writer.write(new Uint8Array([1, 2, 3, 4, 5]));
    await writer.close();
    const ring = new Uint8Array(new SharedArrayBuffer(16));
    let filled = 0;
    while (true) {
      const count = await b.readInto!(ring.subarray(filled));
      if (count === null) break;
      filled += count;
    }
    assert.deepEqual([...ring.subarray(0, filled)], [1, 2, 3, 4, 5]);
    await Promise.all([a.close(), b.close()]);
  } finally {
    await listener.close();
  }
});
