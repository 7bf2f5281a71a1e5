import assert from "node:assert/strict";
import nodeTls from "node:tls";
import {
  connectTransport,
  describeError,
  listenTransport,
  loadTlsCredentials,
  NotSupportedError,
  type TlsOptions,
  type Transport,
  TransportError,
} from "../../mod.ts";
import { createTlsCredentials, hasOpenssl } from "../_helpers/tls_certs.ts";

const ignore = !(await hasOpenssl());

async function options(
  dir: string,
  endpoint: "client" | "server",
  extra: Partial<TlsOptions> & { verifyPeer?: boolean } = {},
): Promise<TlsOptions> {
  const { verifyPeer = true, ...rest } = extra;
  return {
    credentials: await loadTlsCredentials(dir, { endpoint, verifyPeer }),
    ...rest,
  };
}

async function readAll(transport: Transport): Promise<Uint8Array> {
  return new Uint8Array(await new Response(transport.readable).arrayBuffer());
}

Deno.test({
  name:
    "TLS carries bytes both ways with half-close, client certificate checked",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials();
    const listener = await listenTransport("tcp:127.0.0.1:0", {
      tls: await options(creds.dir, "server", {
        authz: {
          policy: "deny",
          rules: [{ match: creds.clientDn, policy: "allow" }],
        },
      }),
    });
    try {
      const [client, server] = await Promise.all([
        connectTransport(listener.address, {
          tls: await options(creds.dir, "client", { hostname: "localhost" }),
        }),
        listener.accept(),
      ]);
      assert.match(server.description, /\(TLS, peer 127\.0\.0\.1:\d+\)$/);
      const big = new Uint8Array(3 * 1024 * 1024).map((_, i) => i * 7);
      const writer = client.writable.getWriter();
      await Promise.all([
        (async () => {
          await writer.write(big.slice(0, 1024 * 1024));
          await writer.write(big.slice(1024 * 1024));
          await writer.close();
        })(),
        readAll(server).then((got) => assert.deepEqual(got, big)),
      ]);
      const back = server.writable.getWriter();
      await back.write(new Uint8Array([0, 3, 0, 4]));
      await back.close();
      assert.deepEqual(await readAll(client), new Uint8Array([0, 3, 0, 4]));
      await Promise.all([client.close(), server.close()]);
    } finally {
      await listener.close();
    }
  },
});

/** Runs a handshake expected to fail on both sides; returns both errors. */
async function refused(
  server: TlsOptions | undefined,
  client: TlsOptions | undefined,
): Promise<{ serverError: unknown; clientError: unknown }> {
  const listener = await listenTransport(
    "tcp:127.0.0.1:0",
    server ? { tls: server, idleTimeoutMs: 2000 } : { idleTimeoutMs: 2000 },
  );
  try {
    const accepted = listener.accept().then(async (transport) => {
      // A plaintext listener reads what comes, as a destination would.
      try {
        return await readAll(transport);
      } finally {
        await transport.close();
      }
    });
    const connected = connectTransport(
      listener.address,
      client ? { tls: client } : {},
    ).then(async (transport) => {
      try {
        const writer = transport.writable.getWriter();
        await writer.write(new TextEncoder().encode("QEVM\0\0\0\x03"));
        return await readAll(transport);
      } finally {
        await transport.close();
      }
    });
    const [s, c] = await Promise.allSettled([accepted, connected]);
    return {
      serverError: s.status === "rejected" ? s.reason : s.value,
      clientError: c.status === "rejected" ? c.reason : c.value,
    };
  } finally {
    await listener.close();
  }
}

/** The other end got an error, or a connection that ended with no data. */
function assertNothingPassed(result: unknown): void {
  if (result instanceof Error) return;
  assert.deepEqual(result, new Uint8Array());
}

function message(error: unknown): string {
  assert.ok(error instanceof Error, `expected an error, got ${error}`);
  return error.message;
}

Deno.test({
  name: "TLS refuses a server certificate from another CA",
  ignore,
  async fn() {
    await using ours = await createTlsCredentials();
    await using theirs = await createTlsCredentials({ caName: "other CA" });
    const { serverError, clientError } = await refused(
      await options(theirs.dir, "server"),
      await options(ours.dir, "client"),
    );
    assert.ok(clientError instanceof TransportError);
    assert.match(
      message(clientError),
      new RegExp(`not signed by the CA in ${ours.dir}/ca-cert\\.pem`),
    );
    assert.match(message(serverError), /^Cannot accept a connection on .*: /);
  },
});

Deno.test({
  name: "TLS refuses a server certificate for another host name",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials();
    const { serverError, clientError } = await refused(
      await options(creds.dir, "server"),
      await options(creds.dir, "client", { hostname: "elsewhere.example" }),
    );
    assert.match(message(clientError), /expected host name \(tls-hostname\)/);
    assert.match(message(clientError), /elsewhere\.example/);
    // TLS 1.3: the server finished its handshake before the client
    // checked the name and hung up.
    assertNothingPassed(serverError);
  },
});

Deno.test({
  name: "TLS with verify-peer refuses a client without a certificate",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials();
    await using bare = await createTlsCredentials({ noClientCert: true });
    await Deno.copyFile(`${creds.dir}/ca-cert.pem`, `${bare.dir}/ca-cert.pem`);
    const { serverError, clientError } = await refused(
      await options(creds.dir, "server"),
      await options(bare.dir, "client"),
    );
    assert.match(
      message(serverError),
      /the client sent no certificate and verify-peer is on/,
    );
    assert.match(message(clientError), /requires a client certificate/);
  },
});

Deno.test({
  name:
    "TLS authz refuses a client whose DN is not listed, with QEMU's message",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials({ clientCn: "intruder" });
    const { serverError, clientError } = await refused(
      await options(creds.dir, "server", {
        authz: {
          policy: "deny",
          rules: [{
            match: "C=GB,O=livemig,CN=source.example",
            policy: "allow",
          }],
        },
      }),
      await options(creds.dir, "client"),
    );
    assert.match(
      message(serverError),
      /TLS x509 authz check for C=GB,O=livemig,CN=intruder is denied/,
    );
    // The client finished its handshake before the server checked its
    // name; the connection ends before any byte reaches the server.
    assertNothingPassed(clientError);
  },
});

Deno.test({
  name: "TLS listener names a plaintext client, which sees the connection end",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials();
    const { serverError, clientError } = await refused(
      await options(creds.dir, "server"),
      undefined,
    );
    assert.match(message(serverError), /did not speak TLS/);
    // The plaintext side reads a TLS alert at most: a record of type 0x15.
    if (!(clientError instanceof Error)) {
      assert.ok(clientError instanceof Uint8Array);
      assert.ok(clientError.length === 0 || clientError[0] === 0x15);
    }
  },
});

Deno.test({
  name: "TLS client to a plaintext listener fails the handshake, named",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials();
    const listener = await listenTransport("tcp:127.0.0.1:0");
    try {
      const accepted = listener.accept().then(async (transport) => {
        // A plaintext destination reads the ClientHello, finds no "QEVM"
        // and closes.
        const reader = transport.readable.getReader();
        const { value } = await reader.read();
        await transport.close();
        return value;
      });
      const error = await connectTransport(listener.address, {
        tls: await options(creds.dir, "client"),
      }).catch((e) => e);
      assert.deepEqual(
        (await accepted)?.subarray(0, 2),
        new Uint8Array([0x16, 3]),
      );
      assert.ok(error instanceof TransportError);
      assert.match(error.message, /over TLS: the server closed the connection/);
    } finally {
      await listener.close();
    }
  },
});

Deno.test({
  name: "TLS is refused on URIs other than tcp:",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials();
    await assert.rejects(
      connectTransport("exec:cat", { tls: await options(creds.dir, "client") }),
      NotSupportedError,
    );
  },
});

Deno.test({
  name: "TLS listener loses nothing when a client that never reads closes",
  ignore,
  async fn() {
    // A QEMU source without a return path never reads its socket: any
    // byte the server sends after the handshake (TLS 1.3 session tickets)
    // stays unread there, its close() becomes a reset, and the kernel
    // drops what this side had not read yet.
    await using creds = await createTlsCredentials();
    const listener = await listenTransport("tcp:127.0.0.1:0", {
      tls: await options(creds.dir, "server"),
    });
    try {
      const port = Number(listener.address.split(":").at(-1));
      const dir = creds.dir;
      // Less than this side buffers, so every write completes unread.
      const sent = new Uint8Array(512 << 10).map((_, i) => i * 31);
      const client = nodeTls.connect({
        host: "127.0.0.1",
        port,
        servername: "localhost",
        ca: await Deno.readTextFile(`${dir}/ca-cert.pem`),
        cert: await Deno.readTextFile(`${dir}/client-cert.pem`),
        key: await Deno.readTextFile(`${dir}/client-key.pem`),
      });
      const secure = new Promise((resolve) =>
        client.once("secureConnect", resolve)
      );
      const server = await listener.accept();
      await secure;
      client.pause(); // reads nothing from here on
      for (let at = 0; at < sent.length; at += 64 << 10) {
        await new Promise((resolve) =>
          client.write(sent.subarray(at, at + (64 << 10)), resolve)
        );
      }
      client.destroy();
      await new Promise((resolve) => setTimeout(resolve, 200));
      const got = await readAll(server);
      assert.equal(got.length, sent.length);
      assert.deepEqual(got, sent);
      await server.close();
    } finally {
      await listener.close();
    }
  },
});

Deno.test({
  name: "TLS listener's idle timeout fails a silent client's read, named",
  ignore,
  async fn() {
    await using creds = await createTlsCredentials();
    const listener = await listenTransport("tcp:127.0.0.1:0", {
      tls: await options(creds.dir, "server"),
      idleTimeoutMs: 200,
    });
    try {
      const [client, server] = await Promise.all([
        connectTransport(listener.address, {
          tls: await options(creds.dir, "client"),
        }),
        listener.accept(),
      ]);
      const error = await readAll(server).catch((e) => e);
      assert.ok(error instanceof Error, `expected an error, got ${error}`);
      assert.match(describeError(error), /idle timeout/);
      await Promise.all([client.close(), server.close()]);
    } finally {
      await listener.close();
    }
  },
});
