/**
 * A connection whose first bytes were read to tell what it is (a main
 * stream or a multifd channel), given back with those bytes. Private to
 * the migration.
 *
 * @module
 */

import type { Transport } from "../transport/transport.ts";
import { concatBytes } from "../bytes/concat_bytes.ts";

/** Size of the buffers the readable side reads into. */
const CHUNK_BYTES = 64 * 1024;

/** A connection with its first bytes read ahead. */
export interface PeekedTransport extends Transport {
  /** The bytes read ahead (a buffer of their own). */
  readonly head: Uint8Array<ArrayBuffer>;
  /**
   * The connection's {@linkcode Transport.readInto}, for the bytes after
   * `head`. Use this or `readable` (which starts with `head`), not both.
   */
  readonly readInto?: (view: Uint8Array) => Promise<number | null>;
}

/**
 * Reads at least `bytes` bytes of `transport` (fewer if it ends), and
 * gives them back with a transport that reads them again.
 *
 * @param transport The connection.
 * @param bytes How many bytes to read ahead.
 * @returns The connection with its head.
 */
export async function peekTransport(
  transport: Transport,
  bytes: number,
): Promise<PeekedTransport> {
  let byob: ReadableStreamBYOBReader | undefined;
  try {
    byob = transport.readable.getReader({ mode: "byob" });
  } catch (error) {
    if (!(error instanceof TypeError)) throw error; // not a byte stream
  }
  const reader = byob ?? transport.readable.getReader();
  const [head, next] = byob === undefined
    ? await readHead(reader as ReadableStreamDefaultReader<Uint8Array>, bytes)
    : await readHeadInto(byob, bytes);
  let readable: ReadableStream<Uint8Array> | undefined;
  return {
    head,
    // The readable side reads only on demand: nothing is buffered there.
    ...(transport.readInto ? { readInto: transport.readInto } : {}),
    get readable() {
      readable ??= new ReadableStream<Uint8Array>({
        start(controller) {
          if (head.byteLength > 0) controller.enqueue(head);
        },
        async pull(controller) {
          const value = await next();
          if (value === undefined) controller.close();
          else controller.enqueue(value);
        },
        cancel: (reason) => reader.cancel(reason),
      }, { highWaterMark: 0 });
      return readable;
    },
    writable: transport.writable,
    description: transport.description,
    ...(transport.copiesWrites === undefined
      ? {}
      : { copiesWrites: transport.copiesWrites }),
    close: () => transport.close(),
  };
}

type Next = () => Promise<Uint8Array | undefined>;

async function readHeadInto(
  reader: ReadableStreamBYOBReader,
  bytes: number,
): Promise<[Uint8Array<ArrayBuffer>, Next]> {
  let buffer = new ArrayBuffer(Math.max(bytes, CHUNK_BYTES));
  let filled = 0;
  while (filled < bytes) {
    const { value, done } = await reader.read(new Uint8Array(buffer, filled));
    if (value !== undefined) buffer = value.buffer;
    if (done) break;
    filled += value!.byteLength;
  }
  const next: Next = async () => {
    const { value, done } = await reader.read(new Uint8Array(CHUNK_BYTES));
    return done ? undefined : value;
  };
  return [new Uint8Array(buffer, 0, filled), next];
}

async function readHead(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  bytes: number,
): Promise<[Uint8Array<ArrayBuffer>, Next]> {
  const chunks: Uint8Array[] = [];
  let length = 0;
  while (length < bytes) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    length += value.byteLength;
  }
  const head = concatBytes(chunks);
  const next: Next = async () => {
    const { value, done } = await reader.read();
    return done ? undefined : value;
  };
  return [head, next];
}
