/**
 * One outgoing migration connection: records → encoder → byte counter →
 * rate limiter → transport, plus the return path read back from the same
 * connection. A migration uses one per connection (the main channel, the
 * postcopy-preempt channel, each postcopy recovery).
 *
 * @module
 */

import { MigrationAbortedError } from "../errors.ts";
import type { Clock } from "../streams/clock.ts";
import {
  RateLimitStream,
  type RateWindow,
} from "../streams/rate_limit_stream.ts";
import type { Transport } from "../transport/transport.ts";
import { MigrationEncoderStream } from "../wire/migration_encoder_stream.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import { ReturnPathDecoderStream } from "../wire/return_path_decoder_stream.ts";

/** Options for {@linkcode OutgoingChannel}. */
export interface OutgoingChannelOptions {
  clock: Clock;
  pageSize: number;
  bytesPerSecond: number;
  onWindow?: (window: RateWindow) => void;
  /** Read the return path; `onRequest` gets postcopy page requests. */
  returnPath?: {
    onRequest?: (block: string, start: number, length: number) => void;
    bitmapBytes?: (block: string) => number | undefined;
  };
}

/** The outgoing side of one connection. */
export class OutgoingChannel {
  readonly transport: Transport;
  readonly limiter: RateLimitStream;
  readonly encoder: MigrationEncoderStream;
  readonly #writer: WritableStreamDefaultWriter<readonly MigrationRecord[]>;
  readonly #abort = new AbortController();
  readonly #piped: Promise<void>;
  readonly #failure = Promise.withResolvers<never>();
  readonly #shut = Promise.withResolvers<number>();
  readonly #resumeAck = Promise.withResolvers<number>();
  readonly #bitmaps = new Map<string, PromiseWithResolvers<Uint8Array>>();
  #encodedBytes = 0;
  #reader: ReadableStreamDefaultReader | undefined;
  #closed = false;

  constructor(transport: Transport, options: OutgoingChannelOptions) {
    this.transport = transport;
    this.#failure.promise.catch(() => {});
    this.#shut.promise.catch(() => {});
    this.#resumeAck.promise.catch(() => {});
    this.limiter = new RateLimitStream({
      bytesPerSecond: options.bytesPerSecond,
      clock: options.clock,
      signal: this.#abort.signal,
      ...(options.onWindow ? { onWindow: options.onWindow } : {}),
    });
    this.encoder = new MigrationEncoderStream({ pageSize: options.pageSize });
    this.#piped = this.encoder.readable
      .pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform: (chunk, controller) => {
            this.#encodedBytes += chunk.byteLength;
            controller.enqueue(chunk);
          },
        }),
      )
      .pipeThrough(this.limiter)
      .pipeTo(transport.writable, {
        signal: this.#abort.signal,
        preventClose: true,
      });
    this.#piped.catch((error) => this.fail(error));
    this.#writer = this.encoder.writable.getWriter();
    if (options.returnPath) this.#readReturnPath(options.returnPath);
  }

  /** Bytes the encoder has produced so far. */
  get encodedBytes(): number {
    return this.#encodedBytes;
  }

  /** Rejects with the first error of the connection. */
  get failed(): Promise<never> {
    return this.#failure.promise;
  }

  /** The value of the destination's SHUT. */
  get shut(): Promise<number> {
    return this.#shut.promise;
  }

  /** The value of the destination's RESUME_ACK. */
  get resumeAck(): Promise<number> {
    return this.#resumeAck.promise;
  }

  /**
   * The destination's received-pages bitmap for `block` (RECV_BITMAP).
   *
   * @param block The block idstr.
   * @returns The bitmap bytes (64-bit little-endian words).
   */
  bitmap(block: string): Promise<Uint8Array> {
    let waiter = this.#bitmaps.get(block);
    if (waiter === undefined) {
      waiter = Promise.withResolvers<Uint8Array>();
      waiter.promise.catch(() => {});
      this.#bitmaps.set(block, waiter);
    }
    return waiter.promise;
  }

  /**
   * Writes records, resolving once the encoder took them (backpressure
   * from the transport holds it back).
   *
   * @param records The records.
   */
  async write(records: readonly MigrationRecord[]): Promise<void> {
    await Promise.race([this.#writer.write(records), this.#failure.promise]);
  }

  /** Sends everything written and closes this direction (a half-close). */
  async finish(): Promise<void> {
    await Promise.race([this.#writer.close(), this.#failure.promise]);
    await Promise.race([this.#piped, this.#failure.promise]);
    await this.transport.writable.close();
  }

  /**
   * Fails the channel: stops the pipeline and closes the connection.
   *
   * @param reason Why.
   */
  fail(reason: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#failure.reject(reason);
    this.#shut.reject(reason);
    this.#resumeAck.reject(reason);
    for (const waiter of this.#bitmaps.values()) waiter.reject(reason);
    this.#abort.abort(reason);
    this.#writer.releaseLock();
    this.#reader?.cancel().catch(() => {});
    this.transport.close().catch(() => {});
  }

  /** Closes the connection after a success. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#reader?.cancel().catch(() => {});
    await this.transport.close().catch(() => {});
  }

  #readReturnPath(
    handlers: NonNullable<OutgoingChannelOptions["returnPath"]>,
  ): void {
    const run = async () => {
      const messages = this.transport.readable.pipeThrough(
        new ReturnPathDecoderStream(
          handlers.bitmapBytes ? { bitmapBytes: handlers.bitmapBytes } : {},
        ),
      );
      this.#reader = messages.getReader();
      let lastBlock: string | undefined;
      while (true) {
        const { done, value } = await this.#reader.read();
        if (done) break;
        switch (value.type) {
          case "PONG":
          case "SWITCHOVER_ACK":
            break;
          case "SHUT":
            this.#shut.resolve(value.value);
            return;
          case "RESUME_ACK":
            this.#resumeAck.resolve(value.value);
            break;
          case "RECV_BITMAP": {
            this.bitmap(value.block);
            this.#bitmaps.get(value.block)!.resolve(value.bitmap);
            break;
          }
          case "REQ_PAGES_ID":
          case "REQ_PAGES": {
            const block = value.type === "REQ_PAGES_ID"
              ? value.block
              : lastBlock;
            if (block === undefined || handlers.onRequest === undefined) {
              throw new MigrationAbortedError(
                `Cannot serve ${value.type}: ${
                  block === undefined
                    ? "no block was named before"
                    : "the migration is not in postcopy"
                }`,
                { reason: "destination-failed" },
              );
            }
            lastBlock = block;
            handlers.onRequest(block, value.start, value.length);
            break;
          }
        }
      }
      throw new MigrationAbortedError(
        "Cannot complete migration: the destination closed the return path without SHUT",
        { reason: "destination-failed" },
      );
    };
    run().catch((error) => this.fail(error));
  }
}
