/**
 * A TCP forwarder on a free loopback port whose connections can be cut,
 * to break a migration's connection on purpose.
 *
 * @module
 */

/** A forwarder started by {@linkcode startCuttableProxy}. */
export interface CuttableProxy {
  /** The port to connect to instead of the target. */
  readonly port: number;
  /** Closes every connection forwarded so far (new ones still go through). */
  cut(): void;
  /** Stops listening and cuts. */
  close(): void;
}

/**
 * Forwards every connection to 127.0.0.1:`targetPort`.
 *
 * @param targetPort Where to forward to.
 * @returns The forwarder.
 */
export function startCuttableProxy(targetPort: number): CuttableProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const close = (conn: Deno.Conn) => {
    open.delete(conn);
    try {
      conn.close();
    } catch {
      // closed already
    }
  };
  void (async () => {
    for await (const client of listener) {
      const target = await Deno.connect({
        hostname: "127.0.0.1",
        port: targetPort,
      });
      open.add(client);
      open.add(target);
      const pipe = (from: Deno.Conn, to: Deno.Conn) =>
        from.readable.pipeTo(to.writable).catch(() => {}).finally(() => {
          close(from);
          close(to);
        });
      void pipe(client, target);
      void pipe(target, client);
    }
  })().catch(() => {});
  const cut = () => {
    for (const conn of [...open]) close(conn);
  };
  return {
    port: (listener.addr as Deno.NetAddr).port,
    cut,
    close() {
      try {
        listener.close();
      } catch {
        // closed already
      }
      cut();
    },
  };
}
