import assert from "node:assert/strict";
import { connectUnix, listenUnix } from "../../lib/transport/unix_transport.ts";
import { TransportError } from "../../lib/transport/transport_error.ts";
import { runTransportConformance } from "../_helpers/transport_conformance.ts";

/**
 * Deno grants Unix sockets per exact path (`--allow-net=unix:PATH`, no
 * directories or wildcards), so the tests use one fixed path and are
 * skipped when it is not granted.
 */
const SOCKET = "/tmp/livemig-test.sock";
const GRANTED = Deno.permissions.querySync({
  name: "net",
  host: `unix:${SOCKET}`,
}).state === "granted";
const ignore = !GRANTED;

runTransportConformance({
  name: "Unix socket",
  async newPair() {
    const listener = await listenUnix(SOCKET);
    try {
      const [a, b] = await Promise.all([
        connectUnix(SOCKET),
        listener.accept(),
      ]);
      return { a, b, dispose: () => listener.close() };
    } catch (error) {
      await listener.close();
      throw error;
    }
  },
  abortReachesPeerAs: "an error or the end",
  maxBufferedBytes: 64 << 20,
  settleMs: 200,
  ignore,
});

Deno.test({
  name: "listenUnix() reports unix:PATH and removes the socket when closed",
  ignore,
  async fn() {
    const listener = await listenUnix(SOCKET);
    try {
      assert.equal(listener.address, `unix:${SOCKET}`);
      assert.ok((await Deno.lstat(SOCKET)).isSocket);
    } finally {
      await listener.close();
    }
    await assert.rejects(Deno.lstat(SOCKET), Deno.errors.NotFound);
  },
});

Deno.test({
  name: "listenUnix() replaces a stale socket file",
  ignore,
  async fn() {
    // A socket file left behind by a listener nobody will accept on.
    const stale = Deno.listen({ transport: "unix", path: SOCKET });
    try {
      const listener = await listenUnix(SOCKET);
      try {
        const [a, b] = await Promise.all([
          connectUnix(SOCKET),
          listener.accept(),
        ]);
        await Promise.all([a.close(), b.close()]);
      } finally {
        await listener.close();
      }
    } finally {
      stale.close();
    }
  },
});

Deno.test("listenUnix() leaves a file that is not a socket alone", async () => {
  const path = await Deno.makeTempFile();
  try {
    await assert.rejects(listenUnix(path), (error: TransportError) => {
      assert.ok(error instanceof TransportError);
      assert.equal(
        error.message,
        `Cannot listen on "unix:${path}": "${path}" exists and is not a socket`,
      );
      return true;
    });
    assert.ok((await Deno.lstat(path)).isFile);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test({
  name: "connectUnix() names the URI when nothing listens",
  ignore,
  async fn() {
    await Deno.remove(SOCKET).catch(() => {});
    await assert.rejects(connectUnix(SOCKET), (error: TransportError) => {
      assert.ok(error instanceof TransportError);
      assert.equal(error.uri, `unix:${SOCKET}`);
      assert.match(
        error.message,
        /^Cannot connect to "unix:\/tmp\/livemig-test\.sock": /,
      );
      return true;
    });
  },
});
