import type { Transport, TransportListener } from "./transport.ts";
import {
  formatTransportUri,
  parseTransportUri,
  type TransportUri,
} from "./transport_uri.ts";
import { connectTcp, listenTcp } from "./tcp_transport.ts";
import { connectUnix, listenUnix } from "./unix_transport.ts";
import { spawnExecTransport } from "./exec_transport.ts";
import { openFileTransport } from "./file_transport.ts";
import { SingleTransportListener } from "./_single_listener.ts";
import type { ListenOptions } from "./listen_options.ts";
import { connectTls, listenTls, type TlsOptions } from "./tls_transport.ts";
import { NotSupportedError } from "../errors.ts";

/** Options for {@linkcode connectTransport}. */
export interface ConnectTransportOptions {
  /**
   * Aborts opening the transport; the returned promise rejects with
   * `signal.reason`. Has no effect once the transport is open.
   */
  signal?: AbortSignal;
  /** Runs TLS over the connection, as a client (`tcp:` only). */
  tls?: TlsOptions;
}

/**
 * Options for {@linkcode listenTransport}: see {@linkcode ListenOptions};
 * only the signal applies to `exec:` and `file:`.
 */
export type ListenTransportOptions = ListenOptions;

/**
 * Opens the outgoing side of a migration URI, as QEMU's `migrate URI` does:
 * connects to a `tcp:` or `unix:` listener, spawns an `exec:` command that
 * receives the stream on its standard input, or opens a `file:` for
 * writing (cut to its `offset`).
 *
 * @example Usage
 * ```ts
 * import { connectTransport, listenTransport } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const listener = await listenTransport("tcp:127.0.0.1:0");
 * try {
 *   const [source, destination] = await Promise.all([
 *     connectTransport(listener.address),
 *     listener.accept(),
 *   ]);
 *   const writer = source.writable.getWriter();
 *   await writer.write(new Uint8Array([0x51, 0x45, 0x56, 0x4d]));
 *   await writer.close(); // half-close: the return path stays open
 *
 *   const stream = new Uint8Array(await new Response(destination.readable).arrayBuffer());
 *   assert.deepEqual(stream, new Uint8Array([0x51, 0x45, 0x56, 0x4d]));
 *
 *   const returnPath = destination.writable.getWriter();
 *   await returnPath.write(new Uint8Array([0, 3, 0, 4]));
 *   await returnPath.close();
 *   const reply = new Uint8Array(await new Response(source.readable).arrayBuffer());
 *   assert.deepEqual(reply, new Uint8Array([0, 3, 0, 4]));
 *   await Promise.all([source.close(), destination.close()]);
 * } finally {
 *   await listener.close();
 * }
 * ```
 *
 * @param uri The URI, as a string or parsed by {@linkcode parseTransportUri}.
 * @param options An abort signal.
 * @returns The open transport.
 * @throws {TypeError} If the URI is malformed.
 * @throws {NotSupportedError} For `vsock:`, `rdma:` and `fd:`, and for TLS
 * on anything but `tcp:`.
 * @throws {TransportError} If the transport cannot be opened.
 */
export async function connectTransport(
  uri: string | TransportUri,
  options: ConnectTransportOptions = {},
): Promise<Transport> {
  const parsed = typeof uri === "string" ? parseTransportUri(uri) : uri;
  const { tls, ...rest } = options;
  if (tls !== undefined) {
    refuseTlsOn(parsed);
    return await connectTls(parsed, { ...rest, tls });
  }
  switch (parsed.scheme) {
    case "tcp":
      return await connectTcp(parsed, options);
    case "unix":
      return await connectUnix(parsed.path, options);
    case "exec":
      return spawnExecTransport(parsed.command, options);
    case "file":
      return await openFileTransport(parsed.path, {
        ...options,
        direction: "outgoing",
        offset: parsed.offset,
      });
  }
}

/**
 * Opens the incoming side of a migration URI, as QEMU's
 * `migrate-incoming URI` does: listens on `tcp:` (port 0 picks a free port,
 * reported in {@linkcode TransportListener.address}) or `unix:`; for
 * `exec:` and `file:`, which have nothing to listen on, the command is
 * started or the file opened right away and the listener's first
 * `accept()` yields it (a second one rejects with
 * {@linkcode NotSupportedError}).
 *
 * @example Usage
 * ```ts
 * import { listenTransport } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile();
 * await Deno.writeFile(path, new Uint8Array([0, 0, 0x51, 0x45]));
 * const listener = await listenTransport(`file:${path},offset=2`);
 * const transport = await listener.accept();
 * assert.deepEqual(await Array.fromAsync(transport.readable), [new Uint8Array([0x51, 0x45])]);
 * await transport.close();
 * await listener.close();
 * await Deno.remove(path);
 * ```
 *
 * @param uri The URI, as a string or parsed by {@linkcode parseTransportUri}.
 * @param options An abort signal that closes the listener; for `tcp:` and
 *   `unix:` an idle timeout and how many spare connections to keep.
 * @returns The listener.
 * @throws {TypeError} If the URI is malformed.
 * @throws {NotSupportedError} For `vsock:`, `rdma:` and `fd:`, and for TLS
 * on anything but `tcp:`.
 * @throws {TransportError} If the address cannot be listened on, the command
 * not started or the file not opened.
 */
export async function listenTransport(
  uri: string | TransportUri,
  options: ListenTransportOptions = {},
): Promise<TransportListener> {
  const parsed = typeof uri === "string" ? parseTransportUri(uri) : uri;
  const { tls } = options;
  if (tls !== undefined) {
    refuseTlsOn(parsed);
    return await listenTls(parsed, { ...options, tls });
  }
  switch (parsed.scheme) {
    case "tcp":
      return await listenTcp(parsed, options);
    case "unix":
      return await listenUnix(parsed.path, options);
    case "exec":
      return new SingleTransportListener(
        formatTransportUri(parsed),
        spawnExecTransport(parsed.command, options),
        options.signal,
      );
    case "file":
      return new SingleTransportListener(
        formatTransportUri(parsed),
        await openFileTransport(parsed.path, {
          ...options,
          direction: "incoming",
          offset: parsed.offset,
        }),
        options.signal,
      );
  }
}

function refuseTlsOn(
  uri: TransportUri,
): asserts uri is Extract<TransportUri, { scheme: "tcp" }> {
  if (uri.scheme === "tcp") return;
  throw new NotSupportedError(
    `Cannot use TLS on "${
      formatTransportUri(uri)
    }": livemig runs TLS over tcp: only`,
  );
}
