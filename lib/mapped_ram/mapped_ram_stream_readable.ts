import type { RandomAccessFile } from "../transport/transport.ts";
import type { RamBlockInfo } from "../ram/ram_record.ts";

/** Options for {@linkcode createMappedRamStreamReadable}. */
export interface CreateMappedRamStreamReadableOptions {
  /**
   * File offset of the first byte to deliver (where the stream starts).
   *
   * @default {0}
   */
  offset?: number;
  /**
   * Largest chunk read from the file at once.
   *
   * @default {256 * 1024}
   */
  chunkBytes?: number;
}

/**
 * The bytes of a mapped-ram file as the sequential migration stream sees
 * them: the file from `offset` to its end, except that each block's region
 * (from `bitmap_offset` to the end of its pages) is not read but delivered
 * as zeros, since a stream decoder only skips over it. Reading a mapped-ram
 * file through a decoder therefore costs its metadata, not its RAM.
 *
 * Zero chunks are views of one shared buffer: consumers must not modify
 * the chunks they receive.
 *
 * @example Usage
 * ```ts
 * import { createMappedRamStreamReadable, type RandomAccessFile } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const data = new Uint8Array(16).fill(1);
 * const reads: number[] = [];
 * const file = {
 *   async readAt(offset: number, size: number) {
 *     reads.push(offset);
 *     return data.slice(offset, offset + size);
 *   },
 *   async size() { return data.byteLength; },
 * } as RandomAccessFile;
 * const blocks = [{
 *   idstr: "pc.ram",
 *   usedLength: 4,
 *   mappedRam: { version: 1, pageSize: 4, bitmapOffset: 4, pagesOffset: 8 },
 * }];
 * const chunks = await Array.fromAsync(createMappedRamStreamReadable(file, blocks));
 * assert.deepEqual(
 *   chunks.map((chunk) => [...chunk]),
 *   [[1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1]],
 * );
 * assert.deepEqual(reads, [0, 12]);
 * ```
 *
 * @param file The mapped-ram file.
 * @param blocks The blocks with their `mappedRam` headers; blocks without
 *   one are read in full.
 * @param options Where to start and how much to read at once.
 * @returns The stream bytes.
 * @throws {RangeError} If an option is out of range.
 */
export function createMappedRamStreamReadable(
  file: RandomAccessFile,
  blocks: readonly RamBlockInfo[],
  options: CreateMappedRamStreamReadableOptions = {},
): ReadableStream<Uint8Array> {
  const { offset = 0, chunkBytes = 256 * 1024 } = options;
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new RangeError(
      `Cannot create mapped-ram stream readable as offset must be a non-negative safe integer: received ${offset}`,
    );
  }
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) {
    throw new RangeError(
      `Cannot create mapped-ram stream readable as chunkBytes must be a positive integer: received ${chunkBytes}`,
    );
  }
  const regions = blocks.flatMap((block) =>
    block.mappedRam === undefined ? [] : [{
      start: block.mappedRam.bitmapOffset,
      end: block.mappedRam.pagesOffset + block.usedLength,
    }]
  ).sort((a, b) => a.start - b.start);
  let position = offset;
  let size: number | undefined;
  let zeros: Uint8Array | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      size ??= await file.size();
      if (position >= size) {
        controller.close();
        return;
      }
      const region = regions.find((r) => r.end > position);
      let limit = Math.min(size, position + chunkBytes);
      if (region !== undefined && region.start <= position) {
        zeros ??= new Uint8Array(ZERO_CHUNK_BYTES);
        const count = Math.min(region.end, size, position + zeros.byteLength) -
          position;
        position += count;
        controller.enqueue(zeros.subarray(0, count));
        return;
      }
      if (region !== undefined) limit = Math.min(limit, region.start);
      const bytes = await file.readAt(position, limit - position);
      position = limit;
      controller.enqueue(bytes);
    },
  }, { highWaterMark: 0 });
}

const ZERO_CHUNK_BYTES = 1024 * 1024;
