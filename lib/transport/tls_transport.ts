import tls from "node:tls";
import { X509Certificate } from "node:crypto";
import type { Socket } from "node:net";
import type { Transport, TransportListener } from "./transport.ts";
import { formatTransportUri, type TcpTransportUri } from "./transport_uri.ts";
import { ConnTransport } from "./_conn_transport.ts";
import { type ConnListener, SocketListener } from "./_socket_listener.ts";
import { NodeSocketConn } from "./_node_socket_conn.ts";
import type { ListenOptions } from "./listen_options.ts";
import type { TlsCredentials } from "./tls_credentials.ts";
import { checkTlsAuthz, type TlsAuthz } from "./tls_authz.ts";
import { TransportError } from "./transport_error.ts";
import { describeTlsError } from "./_describe_tls_error.ts";

/**
 * TLS on a migration channel, as QEMU's `tls-creds`, `tls-hostname` and
 * `tls-authz` parameters ask for it. The whole connection is TLS from its
 * first byte; the destination is the server, the source the client.
 *
 * @example Usage
 * ```ts
 * import type { TlsOptions } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const tls: TlsOptions = {
 *   credentials: { dir: "/etc/pki/qemu", endpoint: "client", verifyPeer: true, caCert: "…" },
 *   hostname: "destination.example",
 * };
 * assert.equal(tls.authz, undefined);
 * ```
 */
export interface TlsOptions {
  /** The credentials; their `endpoint` must suit the side (client or server). */
  readonly credentials: TlsCredentials;
  /**
   * The name the server's certificate must carry (client side).
   *
   * @default {the host of the URI}
   */
  readonly hostname?: string;
  /**
   * Which client distinguished names may connect (server side).
   *
   * @default {any client whose certificate the CA signed}
   */
  readonly authz?: TlsAuthz;
}

/** Options for {@linkcode connectTls}. */
export interface ConnectTlsOptions {
  /** The credentials, host name to check. */
  tls: TlsOptions;
  /** Aborts the connection attempt and its handshake. */
  signal?: AbortSignal;
}

/** Options for {@linkcode listenTls}. */
export interface ListenTlsOptions extends ListenOptions {
  /** The credentials and authorized client names. */
  tls: TlsOptions;
}

/**
 * Connects to a `tcp:` address and runs the TLS handshake as a client:
 * the server's certificate must be signed by the CA and carry the host
 * name (`tls.hostname`, else the URI's host), unless `verifyPeer` is off;
 * the client certificate, if any, is offered to the server.
 *
 * @example Usage
 * ```ts ignore
 * import { connectTls, loadTlsCredentials, parseTransportUri, type TcpTransportUri } from "@livemig/livemig";
 *
 * const credentials = await loadTlsCredentials("/etc/pki/qemu", { endpoint: "client" });
 * const uri = parseTransportUri("tcp:destination.example:4444") as TcpTransportUri;
 * const transport = await connectTls(uri, { tls: { credentials } });
 * await transport.close();
 * ```
 *
 * @param uri Where to connect.
 * @param options The TLS settings and an abort signal.
 * @returns The transport, once the handshake succeeded.
 * @throws {TransportError} If the connection or the handshake fails.
 */
export function connectTls(
  uri: TcpTransportUri,
  options: ConnectTlsOptions,
): Promise<Transport> {
  const { credentials, hostname: name } = options.tls;
  const { signal } = options;
  signal?.throwIfAborted();
  const text = formatTransportUri(uri);
  const host = uri.host !== ""
    ? uri.host
    : uri.ipv4 === false
    ? "::1"
    : "127.0.0.1";
  const hostname = name !== undefined && name !== "" ? name : host;
  const verify = credentials.verifyPeer;
  const describe = (error: Error) => describeTlsError(error, credentials);
  return new Promise((resolve, reject) => {
    // allowHalfOpen: a half-close by the peer leaves this side writing.
    const connectOptions: tls.ConnectionOptions & { allowHalfOpen: boolean } = {
      host,
      port: uri.port,
      ca: credentials.caCert,
      ...(credentials.cert === undefined
        ? {}
        : { cert: credentials.cert, key: credentials.key }),
      ...(isIp(hostname) ? {} : { servername: hostname }),
      rejectUnauthorized: verify,
      checkServerIdentity: (_: string, cert: tls.PeerCertificate) =>
        verify ? tls.checkServerIdentity(hostname, cert) : undefined,
      allowHalfOpen: true,
    };
    const socket = tls.connect(connectOptions);
    const fail = (error: Error) => {
      socket.destroy();
      signal?.removeEventListener("abort", onAbort);
      reject(
        signal?.aborted ? signal.reason : new TransportError(
          `Cannot connect to "${text}" over TLS: ${describe(error).message}`,
          { uri: text, cause: error },
        ),
      );
    };
    const onAbort = () => fail(new Error("aborted"));
    signal?.addEventListener("abort", onAbort, { once: true });
    socket.once("error", fail);
    socket.once("secureConnect", () => {
      socket.off("error", fail);
      signal?.removeEventListener("abort", onAbort);
      socket.setNoDelay(true);
      if (uri.keepAlive !== undefined) socket.setKeepAlive(uri.keepAlive);
      resolve(
        new ConnTransport(
          new NodeSocketConn(socket, describe),
          `${text} (TLS)`,
        ),
      );
    });
  });
}

/**
 * Listens on a `tcp:` address and runs the TLS handshake as a server on
 * each connection: with `verifyPeer` on, a client must present a
 * certificate the CA signed, whose distinguished name `tls.authz` allows.
 * A connection that fails the handshake or the authz check is closed and
 * the pending `accept()` rejects with the reason (as QEMU fails the
 * incoming migration). With an idle timeout, a peer that sends no
 * handshake within it fails the same way.
 *
 * @example Usage
 * ```ts ignore
 * import { listenTls, loadTlsCredentials } from "@livemig/livemig";
 *
 * const credentials = await loadTlsCredentials("/etc/pki/qemu", { endpoint: "server" });
 * const listener = await listenTls({ scheme: "tcp", host: "", port: 4444 }, { tls: { credentials } });
 * const transport = await listener.accept();
 * ```
 *
 * @param uri Where to listen.
 * @param options The TLS settings, and the options of any listener.
 * @returns The listener.
 * @throws {TransportError} If no port in the range can be bound.
 */
export async function listenTls(
  uri: TcpTransportUri,
  options: ListenTlsOptions,
): Promise<TransportListener> {
  const { signal, tls: settings } = options;
  signal?.throwIfAborted();
  const text = formatTransportUri(uri);
  const listener = new TlsConnListener(settings, options.idleTimeoutMs ?? 0);
  const hostname = uri.host !== ""
    ? uri.host
    : uri.ipv4 === false
    ? "::"
    : "0.0.0.0";
  const last = uri.port === 0 ? 0 : uri.to ?? uri.port;
  let port = uri.port;
  for (;;) {
    try {
      port = await listener.listen(hostname, port);
      break;
    } catch (error) {
      if ((error as { code?: string }).code === "EADDRINUSE" && port < last) {
        port++;
        continue;
      }
      throw new TransportError(
        `Cannot listen on "${text}": ${(error as Error).message}`,
        { uri: text, cause: error },
      );
    }
  }
  const address = formatTransportUri({ scheme: "tcp", host: uri.host, port });
  return new SocketListener(listener, address, (conn: PeerConn) => {
    return new ConnTransport(conn, `${address} (TLS, peer ${conn.peer})`);
  }, options);
}

/** A server-side TLS connection and who is at the other end. */
class PeerConn extends NodeSocketConn {
  readonly peer: string;

  constructor(socket: Socket, describe: (error: Error) => Error) {
    super(socket, describe);
    this.peer = peerOf(socket);
  }
}

/** A `node:tls` server as a {@linkcode ConnListener}. */
class TlsConnListener implements ConnListener<PeerConn> {
  readonly #server: tls.Server;
  readonly #settings: TlsOptions;
  readonly #ready: (PeerConn | Error)[] = [];
  readonly #waiting: PromiseWithResolvers<PeerConn>[] = [];
  #closed = false;

  constructor(settings: TlsOptions, idleTimeoutMs: number) {
    this.#settings = settings;
    const { credentials } = settings;
    const verify = credentials.verifyPeer;
    this.#server = tls.createServer({
      ca: credentials.caCert,
      ...(credentials.cert === undefined ? {} : { cert: credentials.cert }),
      ...(credentials.key === undefined ? {} : { key: credentials.key }),
      requestCert: verify,
      rejectUnauthorized: verify,
      // TLS 1.3 servers send session tickets after the handshake, which
      // Deno's node:tls cannot be told not to do; a QEMU source without a
      // return path never reads them, so its close() becomes a reset and
      // the kernel drops the end of the stream not yet read here. In
      // TLS 1.2 everything the server sends is part of the handshake.
      maxVersion: "TLSv1.2",

      allowHalfOpen: true,
      ...(idleTimeoutMs > 0 ? { handshakeTimeout: idleTimeoutMs } : {}),
    });
    this.#server.on("secureConnection", (socket: tls.TLSSocket) => {
      this.#admit(socket);
    });
    this.#server.on("tlsClientError", (error: Error, socket: tls.TLSSocket) => {
      const peer = peerOf(socket);
      socket.destroy();
      this.#push(describeTlsError(error, credentials, peer));
    });
  }

  listen(hostname: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(port, hostname, () => {
        this.#server.off("error", reject);
        resolve((this.#server.address() as { port: number }).port);
      });
    });
  }

  accept(): Promise<PeerConn> {
    const next = this.#ready.shift();
    if (next instanceof Error) return Promise.reject(next);
    if (next !== undefined) return Promise.resolve(next);
    if (this.#closed) return Promise.reject(new Error("listener closed"));
    const waiter = Promise.withResolvers<PeerConn>();
    this.#waiting.push(waiter);
    return waiter.promise;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const waiter of this.#waiting.splice(0)) {
      waiter.reject(new Error("listener closed"));
    }
    for (const item of this.#ready.splice(0)) {
      if (!(item instanceof Error)) item.close();
    }
  }

  #admit(socket: tls.TLSSocket): void {
    const { credentials, authz } = this.#settings;
    if (authz !== undefined) {
      const dn = clientDn(socket);
      if (dn === undefined || !checkTlsAuthz(dn, authz)) {
        socket.destroy();
        this.#push(
          new Error(
            dn === undefined
              ? `TLS x509 authz check failed: peer ${
                peerOf(socket)
              } sent no client certificate`
              : `TLS x509 authz check for ${dn} is denied`,
          ),
        );
        return;
      }
    }
    const describe = (error: Error) =>
      describeTlsError(error, credentials, peerOf(socket));
    this.#push(new PeerConn(socket, describe));
  }

  #push(item: PeerConn | Error): void {
    if (this.#closed) {
      if (!(item instanceof Error)) item.close();
      return;
    }
    const waiter = this.#waiting.shift();
    if (waiter === undefined) this.#ready.push(item);
    else if (item instanceof Error) waiter.reject(item);
    else waiter.resolve(item);
  }
}

/**
 * The client certificate's distinguished name as QEMU prints it (GnuTLS's
 * `gnutls_x509_crt_get_dn()`): the certificate's order, joined by commas.
 */
function clientDn(socket: tls.TLSSocket): string | undefined {
  const raw = socket.getPeerCertificate()?.raw;
  if (raw === undefined || raw.length === 0) return undefined;
  return new X509Certificate(raw).subject.split("\n").join(",");
}

function peerOf(socket: Socket): string {
  // A TLS socket whose handshake failed knows its peer only through the
  // TCP socket under it (`_parent` in node:tls).
  const { remoteAddress: host = "?", remotePort: port = "?" } =
    socket.remoteAddress === undefined
      ? (socket as { _parent?: Socket })._parent ?? socket
      : socket;
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

function isIp(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(":");
}
