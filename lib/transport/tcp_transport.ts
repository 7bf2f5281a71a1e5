import { describeError } from "../errors.ts";
import type { Transport, TransportListener } from "./transport.ts";
import { formatTransportUri, type TcpTransportUri } from "./transport_uri.ts";
import { ConnTransport } from "./_conn_transport.ts";
import { SocketListener } from "./_socket_listener.ts";
import type { ListenOptions } from "./listen_options.ts";
import { abortable } from "./_abortable.ts";
import { TransportError } from "./transport_error.ts";

/** Options for {@linkcode connectTcp}. */
export interface ConnectTcpOptions {
  /**
   * Aborts the connection attempt; the returned promise rejects with
   * `signal.reason`. Has no effect once connected.
   */
  signal?: AbortSignal;
}

/** Options for {@linkcode listenTcp}: see {@linkcode ListenOptions}. */
export type ListenTcpOptions = ListenOptions;

/**
 * Connects to a `tcp:` address, with `TCP_NODELAY` set (and keep-alive when
 * the URI asks for it). An empty host means the local host.
 *
 * The transport's `writable.close()` is a half-close (`shutdown(SHUT_WR)`):
 * the peer reads to its end while this side can still read what the peer
 * sends back.
 *
 * @example Usage
 * ```ts
 * import { connectTcp, listenTcp, parseTransportUri, type TcpTransportUri } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const listener = await listenTcp({ scheme: "tcp", host: "127.0.0.1", port: 0 });
 * try {
 *   const address = parseTransportUri(listener.address) as TcpTransportUri;
 *   const [client, server] = await Promise.all([connectTcp(address), listener.accept()]);
 *   const writer = client.writable.getWriter();
 *   await writer.write(new TextEncoder().encode("QEVM"));
 *   await writer.close();
 *   const received = new Uint8Array(await new Response(server.readable).arrayBuffer());
 *   assert.equal(new TextDecoder().decode(received), "QEVM");
 *   await Promise.all([client.close(), server.close()]);
 * } finally {
 *   await listener.close();
 * }
 * ```
 *
 * @param uri Where to connect.
 * @param options An abort signal.
 * @returns The connected transport.
 * @throws {TransportError} If the connection is refused or fails.
 */
export async function connectTcp(
  uri: TcpTransportUri,
  options: ConnectTcpOptions = {},
): Promise<Transport> {
  const { signal } = options;
  signal?.throwIfAborted();
  const text = formatTransportUri(uri);
  let conn: Deno.TcpConn;
  try {
    conn = await abortable(
      Deno.connect({
        hostname: connectHost(uri),
        port: uri.port,
        ...(signal === undefined ? {} : { signal }),
      }),
      signal,
      (late) => late.close(),
    );
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw new TransportError(
      `Cannot connect to "${text}": ${describeError(error)}`,
      { uri: text, cause: error },
    );
  }
  configure(conn, uri);
  return new ConnTransport(conn, text);
}

/**
 * Listens on a `tcp:` address. Port 0 asks the system for a free port,
 * reported in {@linkcode TransportListener.address}; `to=` tries each port up
 * to that one until one is free, as QEMU does. An empty host listens on every
 * address.
 *
 * @example Usage
 * ```ts
 * import { listenTcp } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const listener = await listenTcp({ scheme: "tcp", host: "127.0.0.1", port: 0 });
 * assert.notEqual(listener.address, "tcp:127.0.0.1:0");
 * await listener.close();
 * ```
 *
 * @param uri Where to listen.
 * @param options An abort signal that closes the listener, an idle
 *   timeout for connections, how many spare connections to keep.
 * @returns The listener.
 * @throws {TransportError} If no port in the range can be bound.
 */
export function listenTcp(
  uri: TcpTransportUri,
  options: ListenTcpOptions = {},
): Promise<TransportListener> {
  try {
    return Promise.resolve(bindTcp(uri, options));
  } catch (error) {
    return Promise.reject(error);
  }
}

function bindTcp(
  uri: TcpTransportUri,
  options: ListenTcpOptions,
): TransportListener {
  const { signal } = options;
  signal?.throwIfAborted();
  const text = formatTransportUri(uri);
  const hostname = listenHost(uri);
  const last = uri.port === 0 ? 0 : uri.to ?? uri.port;
  let listener: Deno.TcpListener | undefined;
  for (let port = uri.port; listener === undefined; port++) {
    try {
      listener = Deno.listen({ hostname, port });
    } catch (error) {
      if (error instanceof Deno.errors.AddrInUse && port < last) continue;
      throw new TransportError(
        `Cannot listen on "${text}": ${describeError(error)}`,
        { uri: text, cause: error },
      );
    }
  }
  const address = formatTransportUri({
    scheme: "tcp",
    host: uri.host,
    port: listener.addr.port,
  });
  return new SocketListener(listener, address, (conn) => {
    configure(conn as Deno.TcpConn, uri);
    const peer = conn.remoteAddr as Deno.NetAddr;
    return new ConnTransport(
      conn,
      `${address} (peer ${formatHostPort(peer.hostname, peer.port)})`,
    );
  }, options);
}

function configure(conn: Deno.TcpConn, uri: TcpTransportUri): void {
  conn.setNoDelay(true);
  if (uri.keepAlive !== undefined) conn.setKeepAlive(uri.keepAlive);
}

function connectHost(uri: TcpTransportUri): string {
  if (uri.host !== "") return uri.host;
  return uri.ipv4 === false ? "::1" : "127.0.0.1";
}

function listenHost(uri: TcpTransportUri): string {
  if (uri.host !== "") return uri.host;
  return uri.ipv4 === false ? "::" : "0.0.0.0";
}

function formatHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
