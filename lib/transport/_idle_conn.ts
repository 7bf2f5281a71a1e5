/**
 * A socket whose reads fail when nothing arrives for a while: the idle
 * timeout of an accepted connection. Private to lib/transport/.
 *
 * @module
 */

import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import type { ByteConn } from "./_conn_transport.ts";

/**
 * Returns `conn` with a `read()` that fails when no byte arrives within
 * `timeoutMs`: the connection is closed and the read rejects with an error
 * saying so (the transport reports it as the cause of its failed read).
 * Every other member is `conn`'s own.
 */
export function watchIdle<C extends ByteConn>(
  conn: C,
  timeoutMs: number,
  clock: Clock = SYSTEM_CLOCK,
): C {
  const read = (buffer: Uint8Array): Promise<number | null> => {
    const timer = new AbortController();
    let idle = false;
    clock.sleep(timeoutMs, timer.signal).then(() => {
      idle = true;
      conn.close();
    }, () => {});
    return conn.read(buffer).then((count) => {
      timer.abort();
      return count;
    }, (error) => {
      timer.abort();
      if (!idle) throw error;
      throw new Error(
        `nothing arrived for ${timeoutMs} ms (idle timeout), so the connection was closed`,
        { cause: error },
      );
    });
  };
  return new Proxy(conn, {
    get(target, property) {
      if (property === "read") return read;
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
