/**
 * One long-lived zlib or zstd stream from `node:zlib`, driven one packet at
 * a time: write the packet's input, flush, take what came out. multifd
 * keeps one such stream per channel and direction for the whole migration
 * (a packet may refer back to bytes of earlier packets), which neither the
 * one-shot `*Sync` functions nor `CompressionStream` can do.
 *
 * @module
 */

import { concatBytes } from "../bytes/concat_bytes.ts";
import zlib from "node:zlib";

/** Which `node:zlib` stream a session drives. */
export type NodeZlibSessionKind =
  | "deflate"
  | "inflate"
  | "zstd-compress"
  | "zstd-decompress";

/** The part of a `node:zlib` stream a session uses. */
interface FlushableStream {
  write(chunk: Uint8Array): boolean;
  flush(kind: number, callback: () => void): void;
  on(event: "data", listener: (chunk: Uint8Array) => void): unknown;
  on(event: "error", listener: (error: unknown) => void): unknown;
  destroy(): unknown;
}

/** A zlib/zstd stream that turns input into output one flush at a time. */
export class NodeZlibSession {
  readonly #stream: FlushableStream;
  readonly #flushKind: number;
  #chunks: Uint8Array[] = [];
  #error: unknown = undefined;
  #failed = false;
  #reject: ((error: unknown) => void) | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  /**
   * Constructs a new instance.
   *
   * @param kind Which stream.
   * @param level The compression level (compressors only).
   */
  constructor(kind: NodeZlibSessionKind, level: number = 1) {
    const constants = zlib.constants;
    switch (kind) {
      case "deflate":
        this.#stream = zlib.createDeflate({ level });
        this.#flushKind = constants.Z_SYNC_FLUSH;
        break;
      case "inflate":
        this.#stream = zlib.createInflate();
        this.#flushKind = constants.Z_SYNC_FLUSH;
        break;
      case "zstd-compress":
        this.#stream = zlib.createZstdCompress({
          params: { [constants.ZSTD_c_compressionLevel]: level },
        });
        this.#flushKind = constants.ZSTD_e_flush;
        break;
      case "zstd-decompress":
        this.#stream = zlib.createZstdDecompress();
        this.#flushKind = constants.ZSTD_e_flush;
        break;
    }
    this.#stream.on("data", (chunk: Uint8Array) => this.#chunks.push(chunk));
    this.#stream.on("error", (error: unknown) => {
      if (!this.#failed) {
        this.#failed = true;
        this.#error = error;
      }
      this.#reject?.(error);
    });
  }

  /**
   * Writes `inputs`, flushes, and returns everything the stream produced.
   * Calls run one after the other, in call order.
   *
   * @param inputs The bytes to feed, in order; they must not change until
   *   the promise settles.
   * @returns The output, in a new array.
   * @throws {Error} What zlib or zstd reported (corrupt data); the session
   *   stays failed.
   */
  process(inputs: readonly Uint8Array[]): Promise<Uint8Array<ArrayBuffer>> {
    const run = this.#queue.then(() => this.#process(inputs));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #process(
    inputs: readonly Uint8Array[],
  ): Promise<Uint8Array<ArrayBuffer>> {
    if (this.#failed) throw this.#error;
    await new Promise<void>((resolve, reject) => {
      this.#reject = reject;
      for (const input of inputs) this.#stream.write(input);
      this.#stream.flush(this.#flushKind, () => resolve());
    }).finally(() => this.#reject = undefined);
    if (this.#failed) throw this.#error;
    const chunks = this.#chunks;
    this.#chunks = [];
    return concatBytes(chunks);
  }

  /** Frees the stream; later calls fail. */
  close(): void {
    if (!this.#failed) {
      this.#failed = true;
      this.#error = new TypeError("Cannot process data: the session is closed");
    }
    this.#stream.destroy();
  }
}
