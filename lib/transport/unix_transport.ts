import { describeError } from "../errors.ts";
import type { Transport, TransportListener } from "./transport.ts";
import { ConnTransport } from "./_conn_transport.ts";
import { SocketListener } from "./_socket_listener.ts";
import type { ListenOptions } from "./listen_options.ts";
import { abortable } from "./_abortable.ts";
import { TransportError } from "./transport_error.ts";

/** Options for {@linkcode connectUnix}. */
export interface ConnectUnixOptions {
  /** Aborts the connection attempt; has no effect once connected. */
  signal?: AbortSignal;
}

/** Options for {@linkcode listenUnix}: see {@linkcode ListenOptions}. */
export type ListenUnixOptions = ListenOptions;

/**
 * Connects to a Unix domain socket, as `unix:PATH` does.
 *
 * Deno asks for net permission on the exact socket path
 * (`--allow-net=unix:/run/vm.sock`) besides read and write permission.
 * `writable.close()` is a half-close, as for {@linkcode connectTcp}.
 *
 * @example Usage
 * ```ts ignore
 * import { connectUnix } from "@livemig/livemig";
 *
 * const transport = await connectUnix("/run/livemig/vm.sock");
 * await transport.close();
 * ```
 *
 * @param path File system path of the socket.
 * @param options An abort signal.
 * @returns The connected transport.
 * @throws {TransportError} If nothing listens on `path`.
 */
export async function connectUnix(
  path: string,
  options: ConnectUnixOptions = {},
): Promise<Transport> {
  const { signal } = options;
  signal?.throwIfAborted();
  const uri = `unix:${path}`;
  let conn: Deno.UnixConn;
  try {
    conn = await abortable(
      Deno.connect({ transport: "unix", path }),
      signal,
      (late) => late.close(),
    );
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw new TransportError(
      `Cannot connect to "${uri}": ${describeError(error)}`,
      { uri, cause: error },
    );
  }
  return new ConnTransport(conn, uri);
}

/**
 * Listens on a Unix domain socket, as `unix:PATH` does for an incoming
 * migration. A stale socket file at `path` is removed first, as QEMU does
 * (any other kind of file is left alone and reported); the socket file is
 * removed again when the listener closes.
 *
 * @example Usage
 * ```ts ignore
 * import { listenUnix } from "@livemig/livemig";
 *
 * const listener = await listenUnix("/run/livemig/vm.sock");
 * const transport = await listener.accept();
 * await transport.close();
 * await listener.close();
 * ```
 *
 * @param path File system path of the socket.
 * @param options An abort signal that closes the listener, an idle
 *   timeout for connections, how many spare connections to keep.
 * @returns The listener; its address is `unix:PATH`.
 * @throws {TransportError} If the socket cannot be created.
 */
export async function listenUnix(
  path: string,
  options: ListenUnixOptions = {},
): Promise<TransportListener> {
  const { signal } = options;
  signal?.throwIfAborted();
  const uri = `unix:${path}`;
  let listener: Deno.UnixListener;
  try {
    await removeStaleSocket(path);
    listener = Deno.listen({ transport: "unix", path });
  } catch (error) {
    throw new TransportError(
      `Cannot listen on "${uri}": ${describeError(error)}`,
      { uri, cause: error },
    );
  }
  return new SocketListener(
    listener,
    uri,
    (conn) => new ConnTransport(conn, uri),
    { ...options, onClose: () => removeStaleSocket(path) },
  );
}

async function removeStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (!info.isSocket) {
    throw new Deno.errors.AlreadyExists(
      `"${path}" exists and is not a socket`,
    );
  }
  await Deno.remove(path).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
}
