/**
 * The source's multifd channels (QEMU 7.2 `migration/multifd.c`, see
 * lib/wire/multifd.md). Private to the source.
 *
 * ```
 * open             initial packet on each channel (id, zero UUID)
 * page             copied into the batch: up to 128 pages of one block
 * batch full, other block, or sync
 *                  → the next free channel, round-robin from the last one
 *                    used; while every channel is busy the migration
 *                    thread waits (a channel is free once its socket took
 *                    its last packet); compressed with the channel's own
 *                    zlib/zstd session; counted against max-bandwidth
 * RAM EOS          → sync(): the batch, then one SYNC packet on every
 *                    channel, each written, before the EOS goes out on
 *                    the main stream
 * ```
 *
 * @module
 */

import { describeError, MigrationAbortedError } from "../errors.ts";
import type { RamPageRecord } from "../ram/ram_record.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import type { OutgoingChannel } from "./_outgoing_channel.ts";
import type { SourceRun } from "./_source_run.ts";
import type { MigrationInfo } from "./migration_info.ts";
import type { RateLimitStream } from "../streams/rate_limit_stream.ts";
import type { Transport } from "../transport/transport.ts";
import {
  MULTIFD_FLAG,
  type MultifdCompression,
  multifdCompressionFlag,
} from "../wire/multifd_flags.ts";
import { encodeMultifdInitialPacket } from "../wire/multifd_initial_packet.ts";
import {
  encodeMultifdPacketHeader,
  multifdPacketHeaderSize,
  multifdPageSlots,
} from "../wire/multifd_packet.ts";
import { MultifdPageCompressor } from "../wire/multifd_page_compressor.ts";

/** Options for {@linkcode MultifdSender}. */
export interface MultifdSenderOptions {
  /** `multifd-compression`. */
  compression: MultifdCompression;
  /** `multifd-zlib-level` or `multifd-zstd-level`, for the method. */
  level: number;
  /** The target page size. */
  pageSize: number;
  /** The main stream's limiter: channel bytes count against it. */
  limiter: Pick<RateLimitStream, "pass">;
  /** Stops waits for the limiter. */
  signal: AbortSignal;
}

const ZERO_UUID = "00000000-0000-0000-0000-000000000000";

/** One channel: its connection, its compression session, its last write. */
interface SendChannel {
  id: number;
  transport: Transport;
  writer: WritableStreamDefaultWriter<Uint8Array>;
  compressor: MultifdPageCompressor;
  /** The last write, until the socket took it. */
  busy: Promise<void> | undefined;
  /** Page buffer: the last packet's pages, then the next batch's. */
  buffer: Uint8Array;
  /** Whether the socket copies what it took (else data is copied first). */
  copies: boolean;
}

/**
 * Sends pages in multifd packets over the channel connections and keeps
 * them in step with the main stream's RAM EOS records.
 */
export class MultifdSender {
  readonly #options: MultifdSenderOptions;
  readonly #channels: SendChannel[];
  readonly #slots: number;
  readonly #headerSize: number;
  #batch: Uint8Array;
  #batchBlock = "";
  #batchOffsets: number[] = [];
  #last = -1;
  #packetNum = 0n;
  #multifdBytes = 0;
  #error: { reason: unknown } | undefined;

  /**
   * Sends the initial packet on every channel.
   *
   * @param transports The channel connections, channel 0 first.
   * @param options Compression, page size, the main limiter.
   */
  constructor(transports: Transport[], options: MultifdSenderOptions) {
    this.#options = options;
    const { pageSize, compression, level } = options;
    this.#slots = multifdPageSlots(pageSize);
    this.#headerSize = multifdPacketHeaderSize(pageSize);
    this.#batch = new Uint8Array(this.#slots * pageSize);
    this.#channels = transports.map((transport, id) => ({
      id,
      transport,
      writer: transport.writable.getWriter(),
      compressor: new MultifdPageCompressor(compression, { level }),
      busy: undefined,
      buffer: new Uint8Array(this.#slots * pageSize),
      copies: transport.copiesWrites ?? false,
    }));
    for (const channel of this.#channels) {
      this.#write(
        channel,
        encodeMultifdInitialPacket({
          type: "multifd-initial",
          uuid: ZERO_UUID,
          channelId: channel.id,
        }),
      );
    }
  }

  /** QEMU's `multifd-bytes`: packet headers and uncompressed pages. */
  get multifdBytes(): number {
    return this.#multifdBytes;
  }

  /**
   * Queues one page (its bytes are copied now).
   *
   * @param record The page.
   * @returns When the page is queued (a full batch went to a channel).
   */
  async queue(record: RamPageRecord): Promise<void> {
    this.#throwIfFailed();
    const count = this.#batchOffsets.length;
    if (count > 0 && record.block !== this.#batchBlock) await this.#flush();
    const at = this.#batchOffsets.length * this.#options.pageSize;
    this.#batch.set(record.data, at);
    this.#batchOffsets.push(record.offset);
    this.#batchBlock = record.block;
    if (this.#batchOffsets.length === this.#slots) await this.#flush();
  }

  /**
   * Before a RAM EOS: sends the batch, then a SYNC packet on every
   * channel, and waits until every channel wrote it.
   *
   * @returns When every channel took its SYNC.
   */
  async sync(): Promise<void> {
    await this.#flush();
    for (const channel of this.#channels) {
      await this.#settle(channel);
      await this.#sendPacket(channel, MULTIFD_FLAG.SYNC, []);
    }
    await Promise.all(this.#channels.map((c) => this.#settle(c)));
  }

  /** Closes every channel connection (after the last sync, or on failure). */
  async close(): Promise<void> {
    await Promise.all(this.#channels.map(async (channel) => {
      await channel.busy?.catch(() => {});
      channel.compressor.close();
      await channel.transport.close().catch(() => {});
    }));
  }

  /** Sends the batch on the next free channel. */
  async #flush(): Promise<void> {
    if (this.#batchOffsets.length === 0) return;
    const channel = await this.#freeChannel();
    const offsets = this.#batchOffsets;
    this.#batchOffsets = [];
    // The channel's buffer is free (its socket took the last packet): it
    // takes the batch's pages, the batch goes on in the channel's buffer.
    const pages = this.#batch;
    this.#batch = channel.buffer;
    channel.buffer = pages;
    await this.#sendPacket(channel, 0, offsets);
  }

  /** Encodes and writes one packet; the pages are the batch's first ones. */
  async #sendPacket(
    channel: SendChannel,
    flags: number,
    offsets: number[],
  ): Promise<void> {
    const { pageSize, compression, limiter, signal } = this.#options;
    const pages = offsets.length;
    let data = channel.buffer.subarray(0, pages * pageSize);
    if (pages > 0 && compression !== "none") {
      const views = offsets.map((_, i) =>
        channel.buffer.subarray(i * pageSize, (i + 1) * pageSize)
      );
      data = await this.#guard(channel, channel.compressor.compress(views));
    } else if (!channel.copies) data = data.slice();
    const header = encodeMultifdPacketHeader({
      type: "multifd-packet",
      flags: flags | (pages > 0 ? multifdCompressionFlag(compression) : 0),
      pagesAlloc: this.#slots,
      nextPacketSize: pages > 0 ? data.byteLength : 0,
      packetNum: this.#packetNum++,
      ramBlock: pages > 0 ? this.#batchBlock : "",
      offsets,
    }, { pageSize });
    this.#multifdBytes += this.#headerSize + pages * pageSize;
    await limiter.pass(header.byteLength + data.byteLength, signal);
    this.#write(channel, header);
    if (pages > 0) this.#write(channel, data);
  }

  /** The next channel whose socket took its last packet, round-robin. */
  async #freeChannel(): Promise<SendChannel> {
    const channels = this.#channels;
    while (true) {
      this.#throwIfFailed();
      for (let k = 1; k <= channels.length; k++) {
        const channel = channels[(this.#last + k) % channels.length]!;
        if (channel.busy === undefined) {
          this.#last = channel.id;
          return channel;
        }
      }
      await Promise.race(channels.map((c) => c.busy));
    }
  }

  async #settle(channel: SendChannel): Promise<void> {
    await channel.busy;
    this.#throwIfFailed();
  }

  #write(channel: SendChannel, bytes: Uint8Array): void {
    const write = channel.writer.write(bytes).then(
      () => {
        if (channel.busy === write) channel.busy = undefined;
      },
      (error) => {
        this.#fail(channel, error);
      },
    );
    channel.busy = write;
  }

  async #guard<T>(channel: SendChannel, promise: Promise<T>): Promise<T> {
    try {
      return await promise;
    } catch (error) {
      this.#fail(channel, error);
      throw this.#error!.reason;
    }
  }

  #fail(channel: SendChannel, cause: unknown): void {
    if (this.#error !== undefined) return;
    this.#error = {
      reason: new MigrationAbortedError(
        `Cannot complete migration: multifd channel ${channel.id} (${channel.transport.description}) failed: ${
          describeError(cause)
        }`,
        { reason: "transport-failed", cause },
      ),
    };
    void this.close();
  }

  #throwIfFailed(): void {
    if (this.#error !== undefined) throw this.#error.reason;
  }
}

/** Opens a run's main connection. */
export type Open = (run: SourceRun) => OutgoingChannel;

/**
 * A multifd migration: with the main connection up, opens the channel
 * connections, runs the migration with pages on them, closes them.
 *
 * @param transport The main connection, established.
 * @param options How to connect more, how many, and how to run.
 * @returns The final info.
 */
export async function migrateMultifd(
  transport: Transport,
  options: {
    connect: (() => Promise<Transport>) | undefined;
    "multifd-channels": number;
    start: (open: Open) => Promise<MigrationInfo>;
  },
): Promise<MigrationInfo> {
  const channels = await openMultifdChannels(
    transport,
    options.connect,
    options["multifd-channels"],
  );
  let sender: MultifdSender | undefined;
  try {
    return await options.start((run) => {
      const channel = run.openChannel(transport, run.usesReturnPath);
      sender = startMultifd(run, channels);
      return channel;
    });
  } finally {
    await (sender?.close() ??
      Promise.all(channels.map((c) => c.close().catch(() => {}))));
  }
}

/**
 * Opens `count` channel connections once the main one is up, as QEMU 7.2
 * does (a 7.2 destination takes its first connection as the main one).
 *
 * @throws {MigrationAbortedError} If one cannot be opened; the main
 *   connection and the others are closed.
 */
export async function openMultifdChannels(
  main: Transport,
  connect: (() => Promise<Transport>) | undefined,
  count: number,
): Promise<Transport[]> {
  const opened = await Promise.allSettled(
    Array.from(
      { length: count },
      () =>
        connect === undefined
          ? Promise.reject(new TypeError("no way to open more connections"))
          : connect(),
    ),
  );
  const failed = opened.find((r) => r.status === "rejected");
  const channels = opened.flatMap((r) =>
    r.status === "fulfilled" ? [r.value] : []
  );
  if (failed === undefined) return channels;
  await Promise.all(
    [main, ...channels].map((t) => t.close().catch(() => {})),
  );
  throw new MigrationAbortedError(
    `Cannot complete migration: cannot open the multifd channels: ${
      describeError(failed.reason)
    }`,
    { reason: "transport-failed", cause: failed.reason },
  );
}

/**
 * Sends `run`'s normal pages on multifd `channels` from now on.
 *
 * @returns The sender, to close at the end.
 */
function startMultifd(
  run: SourceRun,
  channels: Transport[],
): MultifdSender {
  const { guest, parameters } = run.config;
  const compression = parameters["multifd-compression"];
  const sender = new MultifdSender(channels, {
    compression,
    level: parameters[
      compression === "zstd" ? "multifd-zstd-level" : "multifd-zlib-level"
    ],
    pageSize: guest.memory.pageSize,
    limiter: run.channel.limiter,
    signal: run.signal,
  });
  run.multifd = sender;
  run.channel.useMultifd(sender);
  return sender;
}

/**
 * Writes `records` with multifd: normal pages (when `pages`) go to the
 * channels, everything else to the main stream in order; a RAM EOS waits
 * for the SYNC on every channel.
 *
 * @param records The records.
 * @param sender The channels.
 * @param main Writes records on the main stream.
 * @param pages Whether normal pages go on the channels.
 */
export async function writeMultifd(
  records: readonly MigrationRecord[],
  sender: MultifdSender,
  main: (records: readonly MigrationRecord[]) => Promise<void>,
  pages: boolean,
): Promise<void> {
  let pending: MigrationRecord[] = [];
  for (const record of records) {
    if (pages && record.type === "ram-page") {
      await sender.queue(record);
    } else if (record.type === "ram-eos") {
      if (pending.length > 0) await main(pending);
      pending = [];
      await sender.sync();
      pending.push(record);
    } else {
      pending.push(record);
    }
  }
  if (pending.length > 0) await main(pending);
}
