import assert from "node:assert/strict";
import {
  connectTransport,
  listenTransport,
} from "../../lib/transport/open_transport.ts";
import { parseTransportUri } from "../../lib/transport/transport_uri.ts";
import { TransportError } from "../../lib/transport/transport_error.ts";
import { NotSupportedError } from "../../lib/errors.ts";
import { assertSameBytes, readAll } from "../_helpers/transport_conformance.ts";

Deno.test("connectTransport() and listenTransport() carry a stream and its return path over tcp:", async () => {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  try {
    const [source, destination] = await Promise.all([
      connectTransport(parseTransportUri(listener.address)),
      listener.accept(),
    ]);
    try {
      const stream = source.writable.getWriter();
      await stream.write(new Uint8Array([1, 2, 3]));
      await stream.close();
      assertSameBytes(
        await readAll(destination.readable),
        new Uint8Array([1, 2, 3]),
      );
      const returnPath = destination.writable.getWriter();
      await returnPath.write(new Uint8Array([4]));
      await returnPath.close();
      assertSameBytes(await readAll(source.readable), new Uint8Array([4]));
    } finally {
      await Promise.all([source.close(), destination.close()]);
    }
  } finally {
    await listener.close();
  }
});

for (const uri of ["rdma:host:4444", "vsock:3:4444", "fd:migfd"]) {
  Deno.test(`connectTransport() refuses "${uri}"`, async () => {
    await assert.rejects(connectTransport(uri), NotSupportedError);
  });
  Deno.test(`listenTransport() refuses "${uri}"`, async () => {
    await assert.rejects(listenTransport(uri), NotSupportedError);
  });
}

Deno.test("connectTransport() rejects a malformed URI with a TypeError", async () => {
  await assert.rejects(connectTransport("tcp:localhost"), {
    name: "TypeError",
    message: 'Cannot parse migration URI "tcp:localhost": a port is required',
  });
});

for (const uri of ["tcp:127.0.0.1:1", "file:/nonexistent/vm.mig"]) {
  Deno.test(`connectTransport() rejects "${uri}" with the reason of an aborted signal`, async () => {
    const controller = new AbortController();
    const reason = new Error("Cancelled by the user");
    controller.abort(reason);
    await assert.rejects(
      connectTransport(uri, { signal: controller.signal }),
      reason,
    );
  });
}

Deno.test("listenTransport() closes a tcp: listener when its signal aborts", async () => {
  const controller = new AbortController();
  const listener = await listenTransport("tcp:127.0.0.1:0", {
    signal: controller.signal,
  });
  const accepting = listener.accept();
  controller.abort();
  await assert.rejects(accepting, TransportError);
});

Deno.test("listenTransport() closes a file: listener when its signal aborts", async () => {
  const path = await Deno.makeTempFile();
  try {
    const controller = new AbortController();
    const listener = await listenTransport(`file:${path}`, {
      signal: controller.signal,
    });
    controller.abort();
    await assert.rejects(listener.accept(), {
      name: "TransportError",
      message:
        `Cannot accept a connection on "file:${path}": the listener is closed`,
    });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("listenTransport() names the URI when a file: source is missing", async () => {
  await assert.rejects(
    listenTransport("file:/nonexistent/vm.mig"),
    (error: Error) => {
      assert.ok(error instanceof TransportError);
      assert.equal(error.uri, "file:/nonexistent/vm.mig");
      return true;
    },
  );
});
