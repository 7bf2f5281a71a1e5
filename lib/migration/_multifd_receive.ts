/**
 * The destination's multifd channels (QEMU 7.2 `migration/multifd.c`, see
 * lib/wire/multifd.md). Private to the destination.
 *
 * ```
 * accept           → main connection (QEVM) + one connection per channel
 *                    (the 0x11223344 initial packet names its id)
 * channel packet   → its worker decompresses it (one session per channel)
 *                    and places the pages in shared RAM, or hands them
 *                    back to be placed here (see _multifd_channel.ts)
 * channel SYNC     → the channel has finished round k; it waits until the
 *                    main stream's RAM EOS of round k collected every
 *                    channel's SYNC
 * main RAM EOS     → sync(): waits for the SYNC of every channel, then
 *                    lets them all go on with round k + 1
 * ```
 *
 * @module
 */

import { MigrationProtocolError } from "../errors.ts";
import type { GuestMemory } from "../guest/guest_memory.ts";
import type { Clock } from "../streams/clock.ts";
import type { Transport } from "../transport/transport.ts";
import { MULTIFD_MAGIC } from "../wire/multifd_initial_packet.ts";
import { MultifdChannel } from "./_multifd_channel.ts";
import { peekTransport } from "./_peeked_transport.ts";
import type {
  ChannelPages,
  SharedRamBlock,
} from "./_multifd_channel_worker.ts";
import type { RamPageRecord } from "../ram/ram_record.ts";
import type { RecordLoader } from "./_record_loader.ts";
import type { DestinationMultifdOptions } from "./destination_migration.ts";

/** How a destination takes multifd channels (QEMU's defaults filled in). */
export type MultifdReceiveSettings = Required<DestinationMultifdOptions>;

/**
 * The settings of `options`, QEMU's defaults filled in.
 *
 * @returns Undefined when multifd is off.
 */
export function multifdSettings(
  options: DestinationMultifdOptions | undefined,
): MultifdReceiveSettings | undefined {
  if (options === undefined) return undefined;
  return {
    channels: options.channels ?? 2,
    compression: options.compression ?? "none",
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
  };
}

/**
 * Starts reading `channels` into `loader`. Unless `inPlace` is false, the
 * channels' workers write pages straight into the guest's RAM once it
 * exists and is shared; otherwise (postcopy possible, where a page may
 * only land while still missing; RAM not shared) the loader places them.
 *
 * @returns Undefined when multifd is off.
 * @throws {TypeError} If the channel count is not the settings'.
 */
export function startMultifd(
  settings: MultifdReceiveSettings | undefined,
  channels: Transport[],
  loader: RecordLoader,
  inPlace: boolean = true,
): MultifdReceiver | undefined {
  if (settings === undefined) {
    if (channels.length === 0) return undefined;
    throw new TypeError(
      "Cannot load multifd channels: the destination has multifd off",
    );
  }
  if (channels.length !== settings.channels) {
    throw new TypeError(
      `Cannot load ${channels.length} multifd channels: the destination has multifd-channels=${settings.channels}`,
    );
  }
  return new MultifdReceiver(channels, {
    settings,
    place: (record) => loader.placeChannelPage(record),
    count: (bytes, multifd) => loader.countChannelBytes(bytes, multifd),
    memory: () => inPlace ? sharedBlocks(loader.guest?.memory) : undefined,
    placed: (pages) => loader.countChannelBytes(0, 0, pages),
  });
}

/** The blocks of `memory` when every one is over a `SharedArrayBuffer`. */
function sharedBlocks(
  memory: GuestMemory | undefined,
): SharedRamBlock[] | undefined {
  const blocks = memory?.blocks;
  if (blocks === undefined) return undefined;
  if (!blocks.every((b) => b.bytes.buffer instanceof SharedArrayBuffer)) {
    return undefined;
  }
  return blocks.map(({ idstr, bytes }) => ({ idstr, bytes }));
}

/**
 * Waits for `load` of the main connection; a multifd channel that fails
 * first fails it with its own error (the caller then closes the main
 * connection, which ends the load).
 */
export async function loadWithChannels(
  load: Promise<void>,
  multifd: MultifdReceiver | undefined,
): Promise<void> {
  if (multifd === undefined) return await load;
  load.catch(() => {});
  try {
    await Promise.race([load, multifd.failure]);
  } catch (error) {
    throw multifd.error ?? error;
  }
}

/** The connections of one multifd migration, told apart. */
export interface MultifdConnections {
  /** The main connection (the stream starting with QEVM). */
  main: Transport;
  /** The channel connections, in the order they arrived. */
  channels: Transport[];
}

const QEVM = 0x5145564d;

/**
 * Accepts the main connection and `settings.channels` channel connections,
 * in any order: each is told by its first four bytes.
 *
 * @throws {MigrationProtocolError} If a connection starts with something
 *   else, two claim to be the main one, or the channels do not all connect
 *   in time (the source's `multifd-channels` differs, or it has multifd off).
 */
export async function acceptMultifdConnections(
  accept: (first: boolean) => Promise<Transport>,
  settings: MultifdReceiveSettings & { clock: Clock },
): Promise<MultifdConnections> {
  const wanted = settings.channels + 1;
  const accepted: Transport[] = [];
  let main: Transport | undefined;
  const channels: Transport[] = [];
  const timer = new AbortController();
  try {
    const first = await accept(true);
    accepted.push(first);
    const deadline = settings.clock.sleep(
      settings.connectTimeoutMs,
      timer.signal,
    ).then(() => {
      throw new MigrationProtocolError(
        `Cannot start the multifd migration: ${accepted.length} of ${wanted} connections arrived within ${settings.connectTimeoutMs} ms (the source must have multifd on with multifd-channels=${settings.channels})`,
      );
    });
    deadline.catch(() => {});
    let next: Transport | undefined = first;
    while (true) {
      const transport = await Promise.race([peekTransport(next, 4), deadline]);
      const head = transport.head;
      const magic = head.byteLength >= 4
        ? new DataView(head.buffer, head.byteOffset).getUint32(0)
        : undefined;
      if (magic === QEVM && main === undefined) main = transport;
      else if (magic === MULTIFD_MAGIC) channels.push(transport);
      else {
        throw new MigrationProtocolError(
          `Cannot start the multifd migration: connection ${accepted.length} from ${next.description} is ${
            magic === QEVM
              ? "a second main stream"
              : "neither a migration stream nor a multifd channel"
          }`,
        );
      }
      if (accepted.length === wanted) break;
      next = await Promise.race([accept(false), deadline]);
      accepted.push(next);
    }
    return { main: main!, channels };
  } catch (error) {
    await Promise.all(accepted.map((t) => t.close().catch(() => {})));
    throw error;
  } finally {
    timer.abort();
  }
}

/** What {@linkcode MultifdReceiver} does with what arrives. */
export interface MultifdReceiverOptions {
  /** `multifd-channels` and `multifd-compression`. */
  settings: MultifdReceiveSettings;
  /**
   * Places one page (a view of the packet's data, valid during the call);
   * the channel waits for a returned promise.
   */
  place(record: RamPageRecord): void | Promise<void>;
  /**
   * Counts channel bytes: all of them, and those QEMU counts as
   * `multifd-bytes` (headers and uncompressed pages).
   */
  count(bytes: number, multifdBytes: number): void;
  /**
   * The target page size.
   *
   * @default {4096}
   */
  pageSize?: number;
  /**
   * The RAM blocks the channels' workers may write pages into themselves
   * (each over a `SharedArrayBuffer`), or undefined while there are none:
   * their pages then come to `place`. Asked at each channel's SYNC.
   */
  memory?: () => SharedRamBlock[] | undefined;
  /** Counts pages a channel's worker placed in shared RAM. */
  placed?: (pages: number) => void;
}

/** One round's barrier: how many channels sent their SYNC. */
interface Round {
  arrived: number;
  all: PromiseWithResolvers<void>;
  release: PromiseWithResolvers<void>;
}

/**
 * Reads every channel, places its pages and keeps the rounds in step with
 * the main stream's RAM EOS records.
 */
export class MultifdReceiver {
  readonly #options: MultifdReceiverOptions;
  readonly #pageSize: number;
  readonly #transports: Transport[];
  readonly #ids = new Set<number>();
  readonly #channels: MultifdChannel[] = [];
  readonly #failure = Promise.withResolvers<never>();
  #error: unknown;
  #round: Round = newRound();
  #ended = 0;
  #syncing = false;
  #closed = false;

  /**
   * Starts reading `channels`.
   *
   * @param channels The channel connections.
   * @param options Settings, where pages go.
   */
  constructor(channels: Transport[], options: MultifdReceiverOptions) {
    this.#options = options;
    this.#pageSize = options.pageSize ?? 4096;
    this.#transports = channels;
    this.#failure.promise.catch(() => {});
    for (const channel of channels) {
      this.#read(channel).catch((error) => this.#fail(error));
    }
  }

  /**
   * Resolves once every channel's worker has loaded; rejects with the first
   * channel error.
   */
  get ready(): Promise<void> {
    return Promise.race([
      Promise.all(this.#channels.map((c) => c.ready)).then(() => {}),
      this.#failure.promise,
    ]);
  }

  /** Rejects with the first channel error. */
  get failure(): Promise<never> {
    return this.#failure.promise;
  }

  /** The first channel error, if any. */
  get error(): unknown {
    return this.#error;
  }

  /**
   * A RAM EOS on the main stream: waits until every channel sent its SYNC
   * of this round, then lets the channels go on.
   *
   * @param beforeRelease Called once all arrived, before the channels go on.
   * @throws The first channel error, or a {@linkcode MigrationProtocolError}
   *   when a channel closed before its SYNC.
   */
  async sync(beforeRelease?: () => void): Promise<void> {
    const round = this.#round;
    this.#syncing = true;
    try {
      this.#checkEnded();
      await Promise.race([round.all.promise, this.#failure.promise]);
    } finally {
      this.#syncing = false;
    }
    this.#round = newRound();
    beforeRelease?.();
    round.release.resolve();
  }

  /**
   * Stops every channel's worker and closes every channel; a RAM EOS still
   * waiting for their SYNC fails.
   */
  async close(): Promise<void> {
    if (!this.#closed && this.#error === undefined) {
      this.#failure.reject(
        new MigrationProtocolError(
          "Cannot sync the multifd channels: they were closed",
        ),
      );
    }
    this.#closed = true;
    for (const channel of this.#channels) void channel.stop();
    await Promise.all(this.#transports.map((t) => t.close().catch(() => {})));
  }

  #fail(error: unknown): void {
    if (this.#closed || this.#error !== undefined) return;
    this.#error = error;
    this.#failure.reject(error);
    void this.close();
  }

  /** A channel that closed can never send the SYNC a waiting RAM EOS needs. */
  #checkEnded(): void {
    if (this.#ended > 0 && this.#syncing) {
      this.#fail(
        new MigrationProtocolError(
          `Cannot sync the multifd channels: ${this.#ended} of them closed before their SYNC`,
        ),
      );
    }
  }

  async #read(transport: Transport): Promise<void> {
    const { compression, channels } = this.#options.settings;
    const channel = new MultifdChannel(transport, {
      pageSize: this.#pageSize,
      compression,
      memory: () => this.#options.memory?.(),
      handlers: {
        initial: (id) => {
          this.#claim(id, channels, transport);
          this.#options.count(64, 0);
        },
        packet: async (report, id) => {
          if (this.#closed) return;
          this.#options.count(report.bytes, report.multifdBytes);
          if (report.placed > 0) this.#options.placed?.(report.placed);
          if (report.pages !== undefined) await this.#place(report.pages, id);
          if (report.sync) await this.#arrive();
        },
      },
    });
    this.#channels.push(channel);
    await channel.done;
    this.#ended++;
    this.#checkEnded();
  }

  #claim(id: number, channels: number, transport: Transport): void {
    if (id >= channels) {
      throw new MigrationProtocolError(
        `Cannot accept multifd channel ${id} from ${transport.description}: this destination has multifd-channels=${channels} (ids 0 to ${
          channels - 1
        })`,
      );
    }
    if (this.#ids.has(id)) {
      throw new MigrationProtocolError(
        `Cannot accept multifd channel ${id} from ${transport.description}: a channel with that id is already set up`,
      );
    }
    this.#ids.add(id);
  }

  /** Places pages a channel's worker handed back (RAM not shared). */
  async #place(pages: ChannelPages, id: number): Promise<void> {
    const pageSize = this.#pageSize;
    const { block, offsets, data } = pages;
    for (const [i, offset] of offsets.entries()) {
      let placed;
      try {
        placed = this.#options.place({
          type: "ram-page",
          block,
          offset,
          data: data.subarray(i * pageSize, (i + 1) * pageSize),
        });
      } catch (cause) {
        if (!(cause instanceof RangeError)) throw cause;
        throw new MigrationProtocolError(
          `Cannot place a page of multifd channel ${id}: ${cause.message}`,
          { cause },
        );
      }
      if (placed !== undefined) await placed;
    }
  }

  /** This channel's SYNC: counts it, waits until the main stream took it. */
  async #arrive(): Promise<void> {
    const round = this.#round;
    round.arrived++;
    if (round.arrived === this.#options.settings.channels) {
      round.all.resolve();
    }
    await Promise.race([round.release.promise, this.#failure.promise]);
  }
}

function newRound(): Round {
  return {
    arrived: 0,
    all: Promise.withResolvers<void>(),
    release: Promise.withResolvers<void>(),
  };
}
