/**
 * multifd on either side of a {@linkcode MigrationProxy}: the source's
 * channel pages merged into the record stream, and pages split off to the
 * destination's channels. Private to the proxy.
 *
 * ```
 * source main records ──┐                    ┌─► main stream (ZERO, EOS, …)
 *                       ├─► merged records ──┤
 * source channels pages ┘  (a RAM EOS waits   └─► destination channels
 *                           for every SYNC)       (SYNC before each EOS)
 * ```
 *
 * @module
 */

import type { RateLimitStream } from "../streams/rate_limit_stream.ts";
import type { Transport } from "../transport/transport.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import type { Clock } from "../streams/clock.ts";
import {
  acceptMultifdConnections,
  MultifdReceiver,
  type MultifdReceiveSettings,
  multifdSettings,
} from "./_multifd_receive.ts";
import {
  MultifdSender,
  openMultifdChannels,
  writeMultifd,
} from "./_multifd_send.ts";
import type { DestinationMultifdOptions } from "./destination_migration.ts";
import type { ProxyMultifdOptions } from "./migration_proxy.ts";
import type { MigrationParameters } from "./migration_parameters.ts";

/** The connections of a proxy run. */
export interface ProxyConnections {
  source: Transport;
  destination: Transport;
  sourceChannels: Transport[];
  destinationChannels: Transport[];
}

/**
 * Takes the source's channel connections (with `accept`, after `source`)
 * and opens the destination's (with `connect`, after `destination`).
 *
 * @throws {TypeError} If multifd is on for a side without a way to take
 *   more connections there.
 */
export async function openProxyConnections(
  first: { source: Transport; destination: Transport },
  options: ProxyMultifdOptions & {
    accept: (() => Promise<Transport>) | undefined;
    connect: (() => Promise<Transport>) | undefined;
    clock: Clock;
  },
): Promise<ProxyConnections> {
  let { source, destination } = first;
  let sourceChannels: Transport[] = [];
  const sourceSettings = multifdSettings(options.source);
  if (sourceSettings !== undefined) {
    const { accept } = options;
    if (accept === undefined) {
      throw new TypeError(
        "Cannot take the source's multifd channels: no accept",
      );
    }
    const connections = await acceptMultifdConnections(
      (first) => first ? Promise.resolve(source) : accept(),
      { ...sourceSettings, clock: options.clock },
    );
    source = connections.main;
    sourceChannels = connections.channels;
  }
  const destinationChannels = options.destination === undefined
    ? []
    : await openMultifdChannels(
      destination,
      options.connect,
      multifdSettings(options.destination)!.channels,
    );
  return { source, destination, sourceChannels, destinationChannels };
}

/** How many batches the merged stream holds before the inputs wait. */
const HIGH_WATER_MARK = 64;

/**
 * Merges the pages of the source's multifd `channels` into `main`'s
 * records: a channel page comes out as a `ram-page` record, only inside
 * the RAM section (after its START, PART or END, before its EOS), and a RAM
 * EOS only once every channel sent its SYNC of that round, so the pages
 * of a round always come before its EOS.
 *
 * @param main The main stream's records.
 * @param channels The source's channel connections.
 * @param settings `multifd-channels` and `multifd-compression`.
 * @returns The merged records.
 */
export function mergeMultifdChannels(
  main: ReadableStream<MigrationRecord[]>,
  channels: Transport[],
  options: DestinationMultifdOptions,
): ReadableStream<MigrationRecord[]> {
  const settings: MultifdReceiveSettings = multifdSettings(options)!;
  let drained = Promise.withResolvers<void>();
  let controller!: ReadableStreamDefaultController<MigrationRecord[]>;
  const put = async (batch: MigrationRecord[]) => {
    controller.enqueue(batch);
    if ((controller.desiredSize ?? 1) <= 0) await drained.promise;
  };
  // Open while the main stream is inside the RAM section.
  let gate = Promise.withResolvers<void>();
  let ramSection: number | undefined;
  const receiver = new MultifdReceiver(channels, {
    settings,
    place: async (record) => {
      await gate.promise;
      await put([{ ...record, data: record.data.slice() }]);
    },
    count: () => {},
  });
  const pump = async () => {
    for await (const batch of main) {
      let pending: MigrationRecord[] = [];
      for (const record of batch) {
        if (record.type === "ram-eos") {
          if (pending.length > 0) await put(pending);
          pending = [];
          await receiver.sync(() => gate = Promise.withResolvers<void>());
        }
        pending.push(record);
        if (record.type === "section-start" && record.idstr === "ram") {
          ramSection = record.sectionId;
        }
        if (
          (record.type === "section-start" || record.type === "section-part" ||
            record.type === "section-end") && record.sectionId === ramSection
        ) {
          await put(pending);
          pending = [];
          gate.resolve();
        }
      }
      if (pending.length > 0) await put(pending);
    }
  };
  const merged = new ReadableStream<MigrationRecord[]>({
    start(c) {
      controller = c;
      Promise.race([pump(), receiver.failure]).then(
        () => {
          controller.close();
          void receiver.close();
        },
        (error) => {
          controller.error(receiver.error ?? error);
          void receiver.close();
        },
      );
    },
    pull() {
      drained.resolve();
      drained = Promise.withResolvers<void>();
    },
    cancel: () => receiver.close(),
  }, { highWaterMark: HIGH_WATER_MARK });
  return merged;
}

/** Options for {@linkcode splitMultifdChannels}. */
export interface SplitMultifdOptions {
  /** `multifd-zlib-level` and `multifd-zstd-level` (QEMU: 1). */
  parameters?: Partial<MigrationParameters> | undefined;
  /** The limiter the channel bytes count against. */
  limiter: Pick<RateLimitStream, "pass">;
  /** Stops the limiter's waits. */
  signal: AbortSignal;
}

/**
 * Sends the `ram-page` records that pass to the destination's multifd
 * `channels` (4 KiB pages, as QEMU's x86 targets), passing everything
 * else on; a RAM EOS passes once every channel wrote its SYNC.
 *
 * @param channels The destination's channel connections, channel 0 first.
 * @param options Compression, the limiter.
 * @returns The stage.
 */
export function splitMultifdChannels(
  channels: Transport[],
  options: SplitMultifdOptions & DestinationMultifdOptions,
): TransformStream<MigrationRecord[], MigrationRecord[]> {
  const compression = options.compression ?? "none";
  const sender = new MultifdSender(channels, {
    ...options,
    compression,
    level: options.parameters?.[
      compression === "zlib" ? "multifd-zlib-level" : "multifd-zstd-level"
    ] ?? 1,
    pageSize: 4096,
  });
  return new TransformStream<MigrationRecord[], MigrationRecord[]>({
    transform: (batch, controller) =>
      writeMultifd(batch, sender, (main) => {
        controller.enqueue([...main]);
        return Promise.resolve();
      }, true),
    // The channels close after the last SYNC went out, or when the proxy
    // stops (which also stops their workers).
    flush: () => sender.close(),
    cancel: () => sender.close(),
  });
}
