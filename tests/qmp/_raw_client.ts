/**
 * A QMP client at the byte level for server tests: writes text, reads lines.
 *
 * @module
 */

import { createMemoryTransportPair } from "../../lib/transport/memory_transport.ts";
import type { Transport } from "../../lib/transport/transport.ts";
import type { QmpServer } from "../../lib/qmp/qmp_server.ts";

/** A raw connection to a server. */
export interface RawClient {
  /** Writes `text` as it is. */
  send(text: string): Promise<void>;
  /** The next line, without `\r\n`; rejects after `timeoutMs`. */
  line(timeoutMs?: number): Promise<string>;
  /** The next line parsed as JSON, `timestamp` of events removed. */
  json(timeoutMs?: number): Promise<unknown>;
  /** Whether no line arrives within `ms`. */
  quiet(ms: number): Promise<boolean>;
  /** Closes the connection and waits for the server to let it go. */
  close(): Promise<void>;
  /** Resolves when the server is done with the connection. */
  readonly served: Promise<void>;
}

/**
 * Connects to `server` over an in-memory transport (or wraps `transport`).
 *
 * @param server The server, or undefined when `transport` is already served.
 * @param transport An open transport to use instead.
 * @returns The client; it has not read the greeting.
 */
export function rawClient(
  server: QmpServer | undefined,
  transport?: Transport,
): RawClient {
  let near = transport;
  let served = Promise.resolve();
  if (near === undefined) {
    const [a, b] = createMemoryTransportPair();
    near = a;
    served = server!.handle(b);
  }
  const reader = near.readable.getReader();
  const writer = near.writable.getWriter();
  const decoder = new TextDecoder();
  let text = "";
  let pending: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;
  const fill = async (timeoutMs: number): Promise<boolean> => {
    pending ??= reader.read();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const result = await Promise.race([pending, timeout]);
    clearTimeout(timer);
    if (result === "timeout") return false;
    pending = undefined;
    if (result.done) throw new Error("the server closed the connection");
    text += decoder.decode(result.value, { stream: true });
    return true;
  };
  const line = async (timeoutMs = 2000): Promise<string> => {
    const deadline = performance.now() + timeoutMs;
    while (!text.includes("\n")) {
      const left = deadline - performance.now();
      if (left <= 0 || !await fill(left)) {
        throw new Error(`no line within ${timeoutMs} ms`);
      }
    }
    const end = text.indexOf("\n");
    const result = text.slice(0, end);
    text = text.slice(end + 1);
    if (!result.endsWith("\r")) throw new Error(`no CRLF: ${result}`);
    return result.slice(0, -1);
  };
  return {
    send: (value) => writer.write(new TextEncoder().encode(value)),
    line,
    async json(timeoutMs) {
      const value = JSON.parse(await line(timeoutMs));
      if (value !== null && typeof value === "object") delete value.timestamp;
      return value;
    },
    async quiet(ms) {
      if (text.includes("\n")) return false;
      try {
        return !await fill(ms) || !text.includes("\n");
      } catch {
        return false;
      }
    },
    async close() {
      await near!.close();
      await served;
    },
    served,
  };
}
