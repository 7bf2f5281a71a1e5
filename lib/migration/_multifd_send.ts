/**
 * The source's multifd channels (QEMU 7.2 `migration/multifd.c`, see
 * lib/wire/multifd.md). Private to the source.
 *
 * ```
 * open             initial packet on each channel (id, zero UUID)
 * page             into the batch: up to 128 pages of one block, by their
 *                  place in shared guest RAM (others copied)
 * batch full, other block, or sync
 *                  → the next free channel, round-robin from the last one
 *                    used; while every channel is busy the migration
 *                    thread waits (a channel is free once its socket took
 *                    its last packet); the channel's worker gathers the
 *                    pages and compresses them with the channel's own
 *                    zlib/zstd session; counted against max-bandwidth
 * RAM EOS          → sync(): the batch, then one SYNC packet on every
 *                    channel, each written, before the EOS goes out on
 *                    the main stream
 * ```
 *
 * @module
 */

import { concatBytes } from "../bytes/concat_bytes.ts";
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
import {
  MultifdSendWorker,
  PageBatch,
  pageRuns,
  startSendWorkers,
} from "./_multifd_send_channel.ts";

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
  /** Loaded workers for the channels' compression, one per channel. */
  workers?: Worker[] | undefined;
}

/** More runs of pages than this in a packet are copied into one write. */
const MAX_RUN_WRITES = 8;

const ZERO_UUID = "00000000-0000-0000-0000-000000000000";

/** One channel: its connection, its encoding worker, its last packet. */
interface SendChannel {
  id: number;
  transport: Transport;
  writer: WritableStreamDefaultWriter<Uint8Array>;
  /** Compresses the channel's packets (zlib, zstd). */
  encoder: MultifdSendWorker | undefined;
  /** The last packet, until the socket took it. */
  busy: Promise<void> | undefined;
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
  readonly #batch: PageBatch;
  #last = -1;
  #packetNum = 0n;
  #multifdBytes = 0;
  #error: { reason: unknown } | undefined;
  /** Rejects when the run is aborted: a peer that takes nothing is left. */
  readonly #aborted: Promise<never>;

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
    this.#batch = new PageBatch(pageSize, this.#slots);
    const { signal } = options;
    this.#aborted = new Promise<never>((_, reject) => {
      if (signal.aborted) reject(signal.reason);
      signal.addEventListener("abort", () => reject(signal.reason), {
        once: true,
      });
    });
    this.#aborted.catch(() => {});
    this.#channels = transports.map((transport, id) => ({
      id,
      transport,
      writer: transport.writable.getWriter(),
      encoder: compression === "none" ? undefined : new MultifdSendWorker(
        { compression, level, pageSize },
        options.workers?.[id],
      ),
      busy: undefined,
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
   * Queues one page: a page in shared guest RAM by its place (a channel's
   * worker reads it there), any other by a copy made now.
   *
   * @param record The page.
   * @returns When the page is queued (a full batch went to a channel).
   */
  async queue(record: RamPageRecord): Promise<void> {
    this.#throwIfFailed();
    const batch = this.#batch;
    if (batch.length > 0 && record.block !== batch.block) await this.#flush();
    batch.add(record.block, record.offset, record.data);
    if (batch.length === this.#slots) await this.#flush();
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
      await this.#sendSync(channel);
    }
    await Promise.all(this.#channels.map((c) => this.#settle(c)));
  }

  /**
   * Closes every channel connection (after the last sync, or on failure:
   * a write the peer does not take then fails instead of waiting).
   */
  async close(): Promise<void> {
    await Promise.all(this.#channels.map(async (channel) => {
      channel.encoder?.stop();
      await channel.transport.close().catch(() => {});
      await channel.busy?.catch(() => {});
    }));
  }

  /**
   * Sends the batch on the next free channel: written from where the pages
   * are, or compressed by the channel's worker; the channel is busy until
   * its socket took it.
   */
  async #flush(): Promise<void> {
    const batch = this.#batch;
    if (batch.length === 0) return;
    const channel = await this.#freeChannel();
    const { pageSize, compression, limiter, signal } = this.#options;
    const { offsets, block } = batch;
    const pages = batch.take();
    this.#multifdBytes += this.#headerSize + offsets.length * pageSize;
    const header = {
      type: "multifd-packet",
      flags: multifdCompressionFlag(compression),
      pagesAlloc: this.#slots,
      packetNum: this.#packetNum++,
      ramBlock: block,
      offsets,
    } as const;
    if (compression === "none") {
      // Nothing to encode: the header, then the pages written from where
      // they are (runs of adjacent pages as one write), as QEMU's
      // zero-copy send does. A transport that does not copy what it is
      // given gets copies.
      const runs = pageRuns(pages, pageSize);
      const bytes = encodeMultifdPacketHeader({
        ...header,
        nextPacketSize: offsets.length * pageSize,
      }, { pageSize });
      await limiter.pass(bytes.byteLength + offsets.length * pageSize, signal);
      this.#write(channel, bytes);
      const copies = channel.transport.copiesWrites ?? false;
      if (copies && runs.length <= MAX_RUN_WRITES) {
        for (const run of runs) this.#write(channel, run);
      } else this.#write(channel, concatBytes(runs));
      return;
    }
    // zlib and zstd: the channel's worker gathers and compresses the pages
    // (off this thread); the limiter then counts what goes out, as it
    // paces the pages that come in.
    let bytes: Uint8Array;
    try {
      bytes = await channel.encoder!.encode({
        type: "encode",
        header,
        ...pages,
      });
    } catch (error) {
      this.#fail(channel, error);
      throw this.#error!.reason;
    }
    await limiter.pass(bytes.byteLength, signal);
    this.#write(channel, bytes);
  }

  /** Writes a SYNC packet without pages. */
  async #sendSync(channel: SendChannel): Promise<void> {
    const { pageSize, limiter, signal } = this.#options;
    const header = encodeMultifdPacketHeader({
      type: "multifd-packet",
      flags: MULTIFD_FLAG.SYNC,
      pagesAlloc: this.#slots,
      nextPacketSize: 0,
      packetNum: this.#packetNum++,
      ramBlock: "",
      offsets: [],
    }, { pageSize });
    this.#multifdBytes += this.#headerSize;
    await limiter.pass(header.byteLength, signal);
    this.#write(channel, header);
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
      await Promise.race([...channels.map((c) => c.busy), this.#aborted]);
    }
  }

  async #settle(channel: SendChannel): Promise<void> {
    await Promise.race([channel.busy, this.#aborted]);
    this.#throwIfFailed();
  }

  #write(channel: SendChannel, bytes: Uint8Array): void {
    this.#track(channel, channel.writer.write(bytes));
  }

  /** The channel is busy until `work` is done; its failure fails all. */
  #track(channel: SendChannel, work: Promise<void>): void {
    const busy = work.then(
      () => {
        if (channel.busy === busy) channel.busy = undefined;
      },
      (error) => {
        this.#fail(channel, error);
      },
    );
    channel.busy = busy;
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
    "multifd-compression"?: MultifdCompression;
    start: (open: Open) => Promise<MigrationInfo>;
  },
): Promise<MigrationInfo> {
  const channels = await openMultifdChannels(
    transport,
    options.connect,
    options["multifd-channels"],
  );
  let sender: MultifdSender | undefined;
  let workers: Worker[] = [];
  try {
    // Compression runs in a worker per channel, started before the first
    // round (as QEMU starts its channel threads in setup).
    if ((options["multifd-compression"] ?? "none") !== "none") {
      workers = await startSendWorkers(channels.length);
    }
    return await options.start((run) => {
      const channel = run.openChannel(transport, run.usesReturnPath);
      sender = startMultifd(run, channels, workers);
      return channel;
    });
  } finally {
    if (sender === undefined) {
      for (const worker of workers) worker.terminate();
    }
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
  workers: Worker[],
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
    workers,
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
