/**
 * Replays a transcript recorded from QEMU 7.2 against livemig's QmpServer:
 * every client connects, sends and disconnects as it did with QEMU, and
 * every line the server writes is compared with the line QEMU wrote.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createMemoryTransportPair } from "../../lib/transport/memory_transport.ts";
import type { Transport } from "../../lib/transport/transport.ts";
import type { QmpServer } from "../../lib/qmp/qmp_server.ts";
import type { Transcript } from "./_fixtures.ts";

/** How one recorded line compares with livemig's. */
export interface ReplayLine {
  /** The connection. */
  conn: string;
  /** What the client had sent last (the command this line answers, usually). */
  after: string;
  /** QEMU's line. */
  qemu: string;
  /** livemig's line. */
  livemig: string;
}

/** Options for {@linkcode replay}. */
export interface ReplayOptions {
  /** The server (one per VM) a connection talks to. */
  serverFor(conn: string): QmpServer;
  /**
   * Whether a reply is left out of the comparison (still read, in order):
   * for commands the replay does not model.
   */
  skip?(send: string): boolean;
  /** How long to wait for a line, in ms. */
  timeoutMs?: number;
}

class LineReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #decoder = new TextDecoder();
  #text = "";

  constructor(transport: Transport) {
    this.#reader = transport.readable.getReader();
  }

  async next(timeoutMs: number): Promise<string> {
    while (true) {
      const newline = this.#text.indexOf("\n");
      if (newline !== -1) {
        const line = this.#text.slice(0, newline);
        this.#text = this.#text.slice(newline + 1);
        assert.ok(line.endsWith("\r"), `line without CRLF: ${line}`);
        return line.slice(0, -1);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no line within ${timeoutMs} ms`)),
          timeoutMs,
        );
      });
      try {
        const { done, value } = await Promise.race([
          this.#reader.read(),
          timeout,
        ]);
        if (done) throw new Error("the server closed the connection");
        this.#text += this.#decoder.decode(value, { stream: true });
      } finally {
        clearTimeout(timer);
      }
    }
  }

  async ended(timeoutMs: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    try {
      while (true) {
        const result = await Promise.race([this.#reader.read(), timeout]);
        if (result === "timeout") return false;
        if (result.done) return true;
      }
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Replays `transcript`; returns every compared line. Event lines are
 * compared without their timestamps.
 *
 * @param transcript The recording.
 * @param options Which server each connection talks to, what to skip.
 * @returns The compared lines (equal or not), in order.
 */
export async function replay(
  transcript: Transcript,
  options: ReplayOptions,
): Promise<ReplayLine[]> {
  const { serverFor, skip = () => false, timeoutMs = 2000 } = options;
  const clients = new Map<
    string,
    { transport: Transport; reader: LineReader; served: Promise<void> }
  >();
  const lastSend = new Map<string, string[]>();
  const lines: ReplayLine[] = [];
  try {
    for (const entry of transcript.transcript) {
      const conn = entry.conn ?? "";
      if (entry.connect) {
        const [near, far] = createMemoryTransportPair();
        clients.set(conn, {
          transport: near,
          reader: new LineReader(near),
          served: serverFor(conn).handle(far),
        });
        continue;
      }
      const client = clients.get(conn);
      if (client === undefined) continue;
      if (entry.send !== undefined) {
        lastSend.set(conn, [...(lastSend.get(conn) ?? []), entry.send]);
        const writer = client.transport.writable.getWriter();
        await writer.write(new TextEncoder().encode(entry.send));
        writer.releaseLock();
      } else if (entry.raw !== undefined || entry.event !== undefined) {
        const line = await client.reader.next(timeoutMs);
        const sends = lastSend.get(conn) ?? [];
        const after = sends.at(-1) ?? "(connect)";
        if (entry.event !== undefined) {
          const event = JSON.parse(line);
          delete event.timestamp;
          const expected: Record<string, unknown> = { event: entry.event };
          if (entry.data !== undefined) expected.data = entry.data;
          lines.push({
            conn,
            after,
            qemu: JSON.stringify(expected),
            livemig: JSON.stringify(event),
          });
        } else if (!skip(after)) {
          lines.push({ conn, after, qemu: entry.raw!, livemig: line });
        }
      } else if (entry.close) {
        await client.transport.close();
        await client.served;
        clients.delete(conn);
      } else if (entry.closed) {
        assert.ok(
          await client.reader.ended(timeoutMs),
          `the server did not close "${conn}"`,
        );
        await client.served;
        clients.delete(conn);
      }
    }
  } finally {
    for (const client of clients.values()) {
      await client.transport.close();
      await client.served;
    }
  }
  return lines;
}
