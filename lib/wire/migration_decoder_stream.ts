import { ByteReader } from "../streams/byte_reader.ts";
import {
  MigrationDecoder,
  type MigrationDecoderOptions,
} from "./migration_decoder.ts";
import type { MigrationRecord } from "./migration_record.ts";

/**
 * A stream stage that decodes QEMU migration stream bytes into batches of
 * {@linkcode MigrationRecord}s (see {@linkcode MigrationDecoder} for the
 * format and options).
 *
 * A decoding error errors the readable side and cancels the writable side,
 * so a producer piping into it sees the same error.
 *
 * @example Usage
 * ```ts
 * import { MigrationDecoderStream } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = new Uint8Array([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 0x00]);
 * const batches = await Array.fromAsync(
 *   ReadableStream.from([bytes.subarray(0, 5), bytes.subarray(5)])
 *     .pipeThrough(new MigrationDecoderStream()),
 * );
 * assert.deepEqual(batches.flat(), [{ type: "header", version: 3 }, { type: "eof" }]);
 * ```
 *
 * @example Bad bytes name their offset
 * ```ts
 * import { MigrationDecoderStream, StreamFormatError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = new Uint8Array([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 0x09]);
 * await assert.rejects(
 *   Array.fromAsync(ReadableStream.from([bytes]).pipeThrough(new MigrationDecoderStream())),
 *   (error) => error instanceof StreamFormatError && error.offset === 8,
 * );
 * ```
 */
export class MigrationDecoderStream
  implements TransformStream<Uint8Array, MigrationRecord[]> {
  readonly #writable: WritableStream<Uint8Array>;
  readonly #readable: ReadableStream<MigrationRecord[]>;
  readonly #decoder: MigrationDecoder;

  /**
   * Constructs a new instance.
   *
   * @param options What the stream looks like and the limits to enforce.
   */
  constructor(options: MigrationDecoderOptions = {}) {
    const { readable, writable } = new TransformStream<
      Uint8Array,
      Uint8Array
    >();
    this.#writable = writable;
    this.#decoder = new MigrationDecoder(options);
    const reader = new ByteReader(readable, options.startOffset ?? 0);
    this.#readable = ReadableStream.from(run(this.#decoder, reader));
  }

  /** Encoded bytes go in here. */
  get writable(): WritableStream<Uint8Array> {
    return this.#writable;
  }

  /** Record batches come out here. */
  get readable(): ReadableStream<MigrationRecord[]> {
    return this.#readable;
  }

  /** The decoder, for the context it learned (blocks, sections, vmdesc). */
  get decoder(): MigrationDecoder {
    return this.#decoder;
  }
}

async function* run(
  decoder: MigrationDecoder,
  reader: ByteReader,
): AsyncGenerator<MigrationRecord[]> {
  try {
    yield* decoder.decode(reader);
  } catch (error) {
    await reader.cancel(error).catch(() => {});
    throw error;
  }
}
