/**
 * One outgoing migration connection: records → encoder → byte counter →
 * rate limiter → transport, plus the return path read back from the same
 * connection. A migration uses one per connection (the main channel, the
 * postcopy-preempt channel, each postcopy recovery).
 *
 * @module
 */

import { MigrationAbortedError } from "../errors.ts";
import {
  MappedRamWriter,
  type MappedRamWriterItem,
} from "../mapped_ram/mapped_ram_writer.ts";
import { ByteCounterStream } from "../streams/byte_counter_stream.ts";
import type { Clock } from "../streams/clock.ts";
import {
  RateLimitStream,
  type RateWindow,
} from "../streams/rate_limit_stream.ts";
import type { RandomAccessFile, Transport } from "../transport/transport.ts";
import { MappedRamEncoderStream } from "../mapped_ram/mapped_ram_encoder_stream.ts";
import { MigrationEncoderStream } from "../wire/migration_encoder_stream.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import { type MultifdSender, writeMultifd } from "./_multifd_send.ts";
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

/** Where a channel's records end up. */
interface ChannelSink {
  /** Records go in here. */
  writable: WritableStream<readonly MigrationRecord[]>;
  /** Everything written has reached the target. */
  piped: Promise<void>;
  /** The rate limiter on the way. */
  limiter: RateLimitStream<never>;
  /** Closes our direction of the target once everything is written. */
  finish(): Promise<void>;
  /** Releases the target. */
  close(): Promise<void>;
  /** The return path, when the target has one. */
  readable?: ReadableStream<Uint8Array>;
  /** Makes the next page record name its block. */
  forgetCurrentBlock(): void;
  /** Bytes encoded so far, when the target is a byte stream. */
  encodedBytes?: () => number;
}

/** The outgoing side of one connection (or of one mapped-ram file). */
export class OutgoingChannel {
  readonly limiter: RateLimitStream<never>;
  readonly #sink: ChannelSink;
  readonly #writer: WritableStreamDefaultWriter<readonly MigrationRecord[]>;
  readonly #abort: AbortController;
  readonly #piped: Promise<void>;
  readonly #failure = Promise.withResolvers<never>();
  readonly #shut = Promise.withResolvers<number>();
  readonly #resumeAck = Promise.withResolvers<number>();
  readonly #switchoverAck = Promise.withResolvers<void>();
  #switchoverAcked = false;
  readonly #bitmaps = new Map<string, PromiseWithResolvers<Uint8Array>>();
  #reader: ReadableStreamDefaultReader | undefined;
  #closed = false;
  /** Why the channel failed, once it did. */
  #failedWith: { reason: unknown } | undefined;
  /** Whether finish() started: every record has been written. */
  #finishing = false;
  /** Set once the return path ended: no answer will come. */
  #answers: Error | undefined;
  /** The multifd channels, and whether pages go on them. */
  #multifd: { sender: MultifdSender; pages: boolean } | undefined;

  /**
   * A channel over a byte connection: records → encoder → byte counter →
   * rate limiter → transport.
   */
  static toTransport(
    transport: Transport,
    options: OutgoingChannelOptions,
  ): OutgoingChannel {
    const abort = new AbortController();
    const limiter = new RateLimitStream({
      bytesPerSecond: options.bytesPerSecond,
      clock: options.clock,
      signal: abort.signal,
      ...(options.onWindow ? { onWindow: options.onWindow } : {}),
    });
    const encoder = new MigrationEncoderStream({ pageSize: options.pageSize });
    const encoded = new ByteCounterStream();
    const piped = encoder.readable
      .pipeThrough(encoded)
      .pipeThrough(limiter)
      .pipeTo(
        transport.copiesWrites
          ? releasingSink(transport.writable, encoder)
          : transport.writable,
        // The releasing sink never closes the transport: its close only
        // lets go of it, so finish() can half-close it.
        { signal: abort.signal, preventClose: !transport.copiesWrites },
      );
    return new OutgoingChannel(
      {
        writable: encoder.writable,
        piped,
        limiter: limiter as unknown as RateLimitStream<never>,
        finish: () => transport.writable.close(),
        close: () => transport.close(),
        readable: transport.readable,
        forgetCurrentBlock: () => encoder.encoder.forgetCurrentBlock(),
        encodedBytes: () => encoded.bytes,
      },
      abort,
      options,
    );
  }

  /**
   * A channel into a mapped-ram file (QEMU 10.0's layout): pages go to
   * their fixed offsets, the rest of the stream in order; no return path.
   */
  static toMappedRamFile(
    file: RandomAccessFile,
    offset: number,
    options: OutgoingChannelOptions,
  ): OutgoingChannel {
    const abort = new AbortController();
    const limiter = new RateLimitStream<MappedRamWriterItem[]>({
      bytesPerSecond: options.bytesPerSecond,
      clock: options.clock,
      signal: abort.signal,
      size: (items) => {
        let bytes = 0;
        for (const item of items) {
          if (item.type === "ram-page") bytes += item.data.byteLength;
          else if (item.type === "stream-bytes") bytes += item.data.byteLength;
        }
        return bytes;
      },
      ...(options.onWindow ? { onWindow: options.onWindow } : {}),
    });
    const encoder = new MappedRamEncoderStream({ pageSize: options.pageSize });
    const piped = encoder.readable.pipeThrough(limiter).pipeTo(
      new MappedRamWriter(file, { offset, pageSize: options.pageSize }),
      { signal: abort.signal },
    );
    return new OutgoingChannel(
      {
        writable: encoder.writable,
        piped,
        limiter: limiter as unknown as RateLimitStream<never>,
        finish: () => Promise.resolve(),
        close: () => Promise.resolve(),
        forgetCurrentBlock: () => {},
      },
      abort,
      options,
    );
  }

  private constructor(
    sink: ChannelSink,
    abort: AbortController,
    options: OutgoingChannelOptions,
  ) {
    this.#sink = sink;
    this.#abort = abort;
    this.limiter = sink.limiter;
    this.#failure.promise.catch(() => {});
    this.#shut.promise.catch(() => {});
    this.#resumeAck.promise.catch(() => {});
    this.#piped = sink.piped;
    this.#piped.catch((error) => this.fail(error));
    this.#writer = sink.writable.getWriter();
    if (options.returnPath && sink.readable) {
      this.#readReturnPath(sink.readable, options.returnPath);
    }
  }

  /** Makes the next page record name its block (a new postcopy phase). */
  forgetCurrentBlock(): void {
    this.#sink.forgetCurrentBlock();
  }

  /** Bytes the encoder has produced so far. */
  get encodedBytes(): number {
    return this.#sink.encodedBytes?.() ?? this.limiter.bytesPassed;
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

  /** Whether the destination sent SWITCHOVER_ACK (switchover-ack). */
  get switchoverAcked(): boolean {
    return this.#switchoverAcked;
  }

  /** Resolves when the destination sends SWITCHOVER_ACK. */
  get switchoverAck(): Promise<void> {
    return this.#switchoverAck.promise;
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
      if (this.#answers) waiter.reject(this.#answers);
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
    this.#throwIfFailed();
    const multifd = this.#multifd;
    if (multifd === undefined) return await this.#put(records);
    await writeMultifd(
      records,
      multifd.sender,
      (main) => this.#put(main),
      multifd.pages,
    );
  }

  /**
   * Sends pages on multifd channels from now on (`pages` false: only the
   * SYNC before each RAM EOS, as in postcopy).
   *
   * @param sender The channels.
   * @param pages Whether normal pages go on the channels.
   */
  useMultifd(sender: MultifdSender | undefined, pages = true): void {
    this.#multifd = sender && { sender, pages };
  }

  async #put(records: readonly MigrationRecord[]): Promise<void> {
    this.#throwIfFailed();
    await Promise.race([this.#failure.promise, this.#writer.write(records)]);
  }

  /** Sends everything written and closes this direction (a half-close). */
  async finish(): Promise<void> {
    this.#throwIfFailed();
    this.#finishing = true;
    await Promise.race([this.#failure.promise, this.#writer.close()]);
    await Promise.race([this.#failure.promise, this.#piped]);
    this.#throwIfFailed();
    await this.#sink.finish();
  }

  /**
   * Fails the channel: stops the pipeline and closes the connection.
   *
   * @param reason Why.
   */
  fail(reason: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#failedWith = { reason };
    this.#failure.reject(reason);
    this.#shut.reject(reason);
    this.#resumeAck.reject(reason);
    for (const waiter of this.#bitmaps.values()) waiter.reject(reason);
    // The writer stays locked: aborting the pipe errors the encoder's
    // side, so a write still in flight rejects with `reason` too, and a
    // later one never reaches the writer (see #throwIfFailed).
    this.#abort.abort(reason);
    this.#reader?.cancel().catch(() => {});
    this.#sink.close().catch(() => {});
  }

  /**
   * The return path ended without SHUT. While the stream is still being
   * written, the writes that follow fail with the real cause (a reset, a
   * broken pipe, the exit status of an `exec:` command), so only the
   * waits for an answer fail here; they fail the run once it waits.
   */
  #returnPathEnded(): void {
    const error = new MigrationAbortedError(
      this.#finishing
        ? "Cannot complete migration: the destination closed the connection without SHUT, so it never confirmed that it loaded the stream"
        : "Cannot complete migration: the destination closed its side of the connection before the end of the stream, without SHUT",
      { reason: "destination-failed" },
    );
    this.#shut.reject(error);
    this.#resumeAck.reject(error);
    for (const waiter of this.#bitmaps.values()) waiter.reject(error);
    this.#answers = error;
  }

  /** Throws why the channel failed, once it did: the real cause. */
  #throwIfFailed(): void {
    if (this.#failedWith !== undefined) throw this.#failedWith.reason;
  }

  /** Closes the connection after a success. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#reader?.cancel().catch(() => {});
    await this.#sink.close().catch(() => {});
  }

  #readReturnPath(
    readable: ReadableStream<Uint8Array>,
    handlers: NonNullable<OutgoingChannelOptions["returnPath"]>,
  ): void {
    const run = async () => {
      const messages = readable.pipeThrough(
        new ReturnPathDecoderStream(
          handlers.bitmapBytes ? { bitmapBytes: handlers.bitmapBytes } : {},
        ),
      );
      const reader = messages.getReader();
      this.#reader = reader;
      let lastBlock: string | undefined;
      while (true) {
        const { done, value } = await reader.read();
        if (done) break;
        switch (value.type) {
          case "PONG":
            break;
          case "SWITCHOVER_ACK":
            this.#switchoverAcked = true;
            this.#switchoverAck.resolve();
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
      this.#returnPathEnded();
    };
    run().catch((error) => this.fail(error));
  }
}

/**
 * Writes to `writable` and gives each chunk back to the encoder once the
 * transport copied it, so the encoder reuses its buffers instead of
 * touching fresh memory for every chunk. Only for transports that copy
 * their writes.
 */
function releasingSink(
  writable: WritableStream<Uint8Array>,
  encoder: MigrationEncoderStream,
): WritableStream<Uint8Array> {
  const writer = writable.getWriter();
  return new WritableStream({
    async write(chunk) {
      await writer.write(chunk);
      encoder.release(chunk);
    },
    close() {
      writer.releaseLock(); // finish() closes the transport's writable
    },
    async abort(reason) {
      await writer.abort(reason);
    },
  });
}
