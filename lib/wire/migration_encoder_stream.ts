import { ByteWriter } from "../bytes/byte_writer.ts";
import {
  MigrationEncoder,
  type MigrationEncoderOptions,
} from "./migration_encoder.ts";
import type { MigrationRecord } from "./migration_record.ts";

/** Options for {@linkcode MigrationEncoderStream}. */
export interface MigrationEncoderStreamOptions extends MigrationEncoderOptions {
  /**
   * Output chunks are cut once they reach this size (a batch of records
   * becomes one chunk when it is smaller).
   *
   * @default {1024 * 1024}
   */
  chunkBytes?: number;
}

/**
 * A stream stage that encodes batches of {@linkcode MigrationRecord}s into
 * QEMU migration stream bytes, one large chunk per batch. Device tail bytes
 * pass through without a copy.
 *
 * @example Usage
 * ```ts
 * import { MigrationEncoderStream } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const chunks = await Array.fromAsync(
 *   ReadableStream.from([[{ type: "header", version: 3 } as const, { type: "eof" } as const]])
 *     .pipeThrough(new MigrationEncoderStream()),
 * );
 * assert.deepEqual(chunks, [new Uint8Array([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 0])]);
 * ```
 */
export class MigrationEncoderStream
  extends TransformStream<readonly MigrationRecord[], Uint8Array> {
  readonly #encoder: MigrationEncoder;
  readonly #writer: ByteWriter;

  /**
   * Constructs a new instance.
   *
   * @param options Page size and output chunk size.
   */
  constructor(options: MigrationEncoderStreamOptions = {}) {
    const chunkBytes = options.chunkBytes ?? 1024 * 1024;
    if (!(chunkBytes >= 1)) {
      throw new RangeError(
        `Cannot construct MigrationEncoderStream as chunkBytes must be >= 1: received ${chunkBytes}`,
      );
    }
    const encoder = new MigrationEncoder(options);
    const writer = new ByteWriter(Math.min(chunkBytes + 8192, 4 * 1024 * 1024));
    super({
      transform(batch, controller) {
        for (const record of batch) {
          if (record.type === "device-tail") {
            if (writer.length > 0) controller.enqueue(writer.takeBytes());
            controller.enqueue(record.data);
            continue;
          }
          encoder.encodeRecord(record, writer);
          if (writer.length >= chunkBytes) {
            controller.enqueue(writer.takeBytes());
          }
        }
        if (writer.length > 0) controller.enqueue(writer.takeBytes());
      },
    });
    this.#encoder = encoder;
    this.#writer = writer;
  }

  /** The encoder, for its state (current block) and to forget the block. */
  get encoder(): MigrationEncoder {
    return this.#encoder;
  }

  /**
   * Gives back a chunk this stream produced, once nothing reads it any
   * more: its memory is reused for a later chunk instead of a fresh
   * buffer, whose first touch is slow. Chunks never given back are simply
   * garbage-collected; chunks the stream did not allocate (device tail
   * bytes, small chunks, which are copies) are ignored.
   *
   * When that is depends on the consumer. A socket, pipe or file
   * transport has copied the bytes out once its `write()` resolved; the
   * in-process memory transport has not (it hands the chunk itself to the
   * reader), so its chunks must not be given back.
   *
   * @example Recycle chunks once they are written
   * ```ts
   * import { MigrationEncoderStream, type MigrationRecord } from "@livemig/livemig";
   * import assert from "node:assert/strict";
   *
   * const page = new Uint8Array(4096).fill(7);
   * const batch: MigrationRecord[] = [];
   * for (let offset = 0; offset < 64 * 4096; offset += 4096) {
   *   batch.push({ type: "ram-page", block: "pc.ram", offset, data: page });
   * }
   * const encoder = new MigrationEncoderStream();
   * const buffers = new Set<ArrayBufferLike>();
   * await ReadableStream.from([batch, batch, batch, batch]).pipeThrough(encoder).pipeTo(
   *   new WritableStream({
   *     write(chunk) {
   *       buffers.add(chunk.buffer); // stands for "send the bytes"
   *       encoder.release(chunk);
   *     },
   *   }),
   * );
   * assert.equal(buffers.size, 2); // two buffers take turns
   * ```
   *
   * @param chunk A chunk read from this stream; it must not be used after
   *   this call.
   */
  release(chunk: Uint8Array): void {
    this.#writer.recycle(chunk);
  }
}
