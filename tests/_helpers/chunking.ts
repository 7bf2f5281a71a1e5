/**
 * Re-chunks bytes three ways so every decoder is tested whatever the
 * transport's chunk boundaries are: whole, one byte per chunk, and seeded
 * random chunk sizes.
 *
 * @module
 */
import { createPrng } from "./prng.ts";

/** How to cut a byte array into chunks. */
export type Chunking = "whole" | "bytewise" | "random";

/** Every chunking, for test loops. */
export const CHUNKINGS: readonly Chunking[] = ["whole", "bytewise", "random"];

/**
 * Cuts `bytes` into chunks.
 *
 * @param bytes The bytes.
 * @param chunking How to cut them.
 * @param seed Seed for `"random"` chunk sizes (1..2*mean bytes).
 * @param meanChunk Mean random chunk size.
 * @returns The chunks.
 */
export function chunks(
  bytes: Uint8Array,
  chunking: Chunking,
  seed = 1,
  meanChunk = 4096,
): Uint8Array[] {
  if (chunking === "whole") return [bytes];
  const out: Uint8Array[] = [];
  if (chunking === "bytewise") {
    for (let i = 0; i < bytes.byteLength; i++) {
      out.push(bytes.subarray(i, i + 1));
    }
    return out;
  }
  const prng = createPrng(seed);
  for (let at = 0; at < bytes.byteLength;) {
    const size = 1 + prng.nextInt(2 * meanChunk);
    out.push(bytes.subarray(at, at + size));
    at += size;
  }
  return out;
}

/**
 * A readable stream of `bytes` cut by `chunking`.
 *
 * @param bytes The bytes.
 * @param chunking How to cut them.
 * @param seed Seed for random chunk sizes.
 * @returns The stream.
 */
export function chunked(
  bytes: Uint8Array,
  chunking: Chunking,
  seed = 1,
): ReadableStream<Uint8Array> {
  return ReadableStream.from(chunks(bytes, chunking, seed));
}

/**
 * A readable stream of `bytes` that never closes, like a live connection
 * kept open for the return path.
 *
 * @param bytes The bytes.
 * @returns The stream and a function that closes it.
 */
export function neverEnding(
  bytes: Uint8Array,
): { readable: ReadableStream<Uint8Array>; close(): void } {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const readable = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
      c.enqueue(bytes);
    },
  });
  return { readable, close: () => controller.close() };
}
