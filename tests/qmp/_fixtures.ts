/**
 * Loads the QMP transcripts recorded from QEMU 7.2
 * (`fixtures/qmp/qemu-7.2/`, see its README).
 *
 * @module
 */

/** One line of a recorded transcript. */
export interface TranscriptEntry {
  /** Which client connection the line belongs to. */
  conn?: string;
  /** A client connected. */
  connect?: true;
  /** The client closed the connection. */
  close?: true;
  /** QEMU closed the connection. */
  closed?: true;
  /** The greeting QEMU sent. */
  greeting?: unknown;
  /** Bytes the client wrote. */
  send?: string;
  /** A reply, parsed with JSON.parse. */
  reply?: Record<string, unknown>;
  /** The greeting or reply exactly as QEMU wrote it, without `\r\n`. */
  raw?: string;
  /** An event name. */
  event?: string;
  /** The event's data, when QEMU sent some. */
  data?: Record<string, unknown>;
  /** A note of the script. */
  note?: string;
}

/** A recorded scenario file. */
export interface Transcript {
  /** `qemu-system-x86_64 --version`. */
  qemu: string;
  /** What the scenario pins. */
  description: string;
  /** The transcript, in the order things happened. */
  transcript: TranscriptEntry[];
}

const DIRECTORY = new URL("../../fixtures/qmp/qemu-7.2/", import.meta.url);

/** Every scenario file name, without `.json`, except `schema`. */
export const SCENARIOS: readonly string[] = [...Deno.readDirSync(DIRECTORY)]
  .map((entry) => entry.name)
  .filter((name) => name.endsWith(".json") && name !== "schema.json")
  .map((name) => name.slice(0, -".json".length))
  .sort();

/**
 * Reads one recorded scenario.
 *
 * @param name The file name without `.json`, e.g. `protocol`.
 * @returns The transcript.
 */
export function loadTranscript(name: string): Transcript {
  return JSON.parse(
    Deno.readTextFileSync(new URL(`${name}.json`, DIRECTORY)),
  ) as Transcript;
}

/** A command sent and the reply QEMU gave to it. */
export interface Exchange {
  /** The connection. */
  conn: string;
  /** The bytes sent. */
  send: string;
  /** The sent text parsed, when it is one JSON object. */
  request?: {
    execute?: string;
    arguments?: Record<string, unknown>;
    id?: unknown;
  };
  /** QEMU's reply, parsed. */
  reply: Record<string, unknown>;
  /** QEMU's reply as written. */
  raw: string;
}

/**
 * Pairs each send with the replies it got, for transcripts where every send
 * carries one or more whole commands (replies on a connection come in the
 * order of the sends). Sends with a number of replies other than one are
 * left out.
 *
 * @param transcript A recorded scenario.
 * @returns The exchanges, in order.
 */
export function exchanges(transcript: Transcript): Exchange[] {
  const sends: { conn: string; send: string; replies: Exchange[] }[] = [];
  const open = new Map<string, typeof sends>();
  for (const entry of transcript.transcript) {
    const conn = entry.conn ?? "";
    if (entry.send !== undefined) {
      const item = { conn, send: entry.send, replies: [] as Exchange[] };
      sends.push(item);
      open.set(conn, [...(open.get(conn) ?? []), item]);
    } else if (entry.reply !== undefined) {
      const queue = open.get(conn) ?? [];
      const item = queue[0];
      if (item === undefined) continue;
      item.replies.push({
        conn,
        send: item.send,
        reply: entry.reply,
        raw: entry.raw!,
      });
      if (commandsIn(item.send) <= item.replies.length) queue.shift();
    }
  }
  const result: Exchange[] = [];
  for (const item of sends) {
    if (item.replies.length !== 1) continue;
    const exchange = item.replies[0]!;
    try {
      const request = JSON.parse(item.send);
      if (request !== null && typeof request === "object") {
        exchange.request = request;
      }
    } catch {
      // not plain JSON: malformed on purpose
    }
    result.push(exchange);
  }
  return result;
}

function commandsIn(send: string): number {
  return Math.max(1, send.match(/\{"execute"/g)?.length ?? 0);
}
