/**
 * Offline reconstruction of a QEMU 7.2 multifd migration: the main stream
 * and every channel's bytes, recorded separately, give the RAM a 7.2
 * destination ends up with.
 *
 * The rule is 7.2's: the main stream carries the block list, ZERO records
 * and one RAM EOS per round; each channel carries its pages and, before
 * each of those EOS, one SYNC-flagged packet. A destination that reads
 * RAM EOS number k waits until every channel has delivered its SYNC number
 * k, so the pages of round k (on any channel, or ZERO on the main stream)
 * land before anything of round k + 1. Inside a round a page is sent at
 * most once, so the order of the channels does not matter; the helper
 * counts pages sent twice in one round (`conflicts`) so tests can check
 * that claim.
 *
 * @module
 */

import {
  MigrationDecoderStream,
  type MigrationRecord,
  MULTIFD_FLAG,
  MultifdChannelDecoderStream,
  type MultifdChannelRecord,
  type MultifdCompression,
  multifdCompressionOf,
  type MultifdPacket,
  MultifdPageDecompressor,
  RamImage,
  type RamRecord,
} from "../../mod.ts";

/** What was recorded of one multifd migration. */
export interface MultifdRecording {
  /** The main channel's bytes (starts with `QEVM`). */
  main: Uint8Array;
  /** Each multifd channel's bytes, in any order. */
  channels: readonly Uint8Array[];
  /** The migration's `multifd-compression`. */
  compression: MultifdCompression;
}

/** Counts gathered while rebuilding, to compare with QEMU's own. */
export interface MultifdRebuildStats {
  /** RAM EOS records on the main stream (= SYNC packets per channel). */
  rounds: number;
  /** ZERO records on the main stream. */
  mainZeroPages: number;
  /** PAGE records on the main stream. */
  mainNormalPages: number;
  /** Per channel id: packets (initial packet excluded), SYNC packets, pages. */
  channels: { id: number; packets: number; syncs: number; pages: number }[];
  /** Pages sent more than once within one round (0 for a sane stream). */
  conflicts: number;
}

/** Decoded channel: its id and its packets with their data decompressed. */
interface DecodedChannel {
  id: number;
  packets: { packet: MultifdPacket; pages: Uint8Array }[];
}

/**
 * Rebuilds the RAM of a recorded multifd migration.
 *
 * @param recording Main stream and channels.
 * @returns The RAM image and the counts.
 * @throws {Error} If a channel's SYNC count differs from the main stream's
 *   RAM EOS count, or channel ids repeat.
 */
export async function rebuildMultifdRam(
  recording: MultifdRecording,
): Promise<{ image: RamImage; stats: MultifdRebuildStats }> {
  const records = (await Array.fromAsync(
    ReadableStream.from([recording.main]).pipeThrough(
      new MigrationDecoderStream({ kind: "file" }),
    ),
  )).flat();
  const mainRounds = splitMainRounds(records);
  const channels = await Promise.all(
    recording.channels.map((bytes) =>
      decodeChannel(bytes, recording.compression)
    ),
  );
  const ids = channels.map((channel) => channel.id).sort((a, b) => a - b);
  if (ids.some((id, i) => id !== i)) {
    throw new Error(`Cannot rebuild RAM: channel ids are ${ids.join(", ")}`);
  }
  const image = new RamImage();
  const stats: MultifdRebuildStats = {
    rounds: mainRounds.length - 1,
    mainZeroPages: 0,
    mainNormalPages: 0,
    channels: [],
    conflicts: 0,
  };
  const channelRounds = channels.map((channel) => {
    const rounds = splitChannelRounds(channel);
    stats.channels.push({
      id: channel.id,
      packets: channel.packets.length,
      syncs: rounds.length - 1,
      pages: channel.packets.reduce(
        (sum, { packet }) => sum + packet.offsets.length,
        0,
      ),
    });
    if (rounds.length - 1 !== stats.rounds) {
      throw new Error(
        `Cannot rebuild RAM: channel ${channel.id} has ${
          rounds.length - 1
        } SYNC packets, the main stream ${stats.rounds} RAM EOS`,
      );
    }
    return rounds;
  });
  stats.channels.sort((a, b) => a.id - b.id);
  const size = image.pageSize;
  for (let round = 0; round < mainRounds.length; round++) {
    const seen = new Set<string>();
    const note = (block: string, offset: number) => {
      const key = `${block}:${offset}`;
      if (seen.has(key)) stats.conflicts++;
      seen.add(key);
    };
    for (const record of mainRounds[round]!) {
      if (record.type === "ram-zero") stats.mainZeroPages++;
      if (record.type === "ram-page") stats.mainNormalPages++;
      if (record.type === "ram-zero" || record.type === "ram-page") {
        note(record.block, record.offset);
      }
      image.apply(record);
    }
    for (const rounds of channelRounds) {
      for (const { packet, pages } of rounds[round] ?? []) {
        packet.offsets.forEach((offset, i) => {
          note(packet.ramBlock, offset);
          image.apply({
            type: "ram-page",
            block: packet.ramBlock,
            offset,
            data: pages.subarray(i * size, (i + 1) * size),
          });
        });
      }
    }
  }
  return { image, stats };
}

/** RAM records of the main stream, one list per round (the last after the final EOS). */
function splitMainRounds(records: MigrationRecord[]): RamRecord[][] {
  const rounds: RamRecord[][] = [[]];
  for (const record of records) {
    if (!record.type.startsWith("ram-")) continue;
    if (record.type === "ram-eos") rounds.push([]);
    else rounds.at(-1)!.push(record as RamRecord);
  }
  return rounds;
}

/** A channel's packets, one list per round; a SYNC packet closes its round. */
function splitChannelRounds(
  channel: DecodedChannel,
): DecodedChannel["packets"][] {
  const rounds: DecodedChannel["packets"][] = [[]];
  for (const entry of channel.packets) {
    rounds.at(-1)!.push(entry);
    if (entry.packet.flags & MULTIFD_FLAG.SYNC) rounds.push([]);
  }
  return rounds;
}

/**
 * Decodes one channel and decompresses each packet's data with one
 * decompressor for the whole channel.
 *
 * @param bytes The channel's bytes.
 * @param compression The migration's method.
 * @returns Its id and packets.
 */
export async function decodeChannel(
  bytes: Uint8Array,
  compression: MultifdCompression,
): Promise<DecodedChannel> {
  const records: MultifdChannelRecord[] = await Array.fromAsync(
    ReadableStream.from([bytes]).pipeThrough(
      new MultifdChannelDecoderStream({ compression }),
    ),
  );
  const [initial, ...rest] = records;
  if (initial?.type !== "multifd-initial") {
    throw new Error("Cannot decode channel: it has no initial packet");
  }
  const decompressor = new MultifdPageDecompressor(compression);
  try {
    const packets = [];
    for (const record of rest) {
      const packet = record as MultifdPacket;
      if (
        packet.offsets.length > 0 &&
        multifdCompressionOf(packet.flags) !== compression
      ) {
        throw new Error(
          `Cannot decode channel ${initial.channelId}: packet ${packet.packetNum} is not ${compression}`,
        );
      }
      packets.push({
        packet,
        pages: await decompressor.decompress(
          packet.data,
          packet.offsets.length,
        ),
      });
    }
    return { id: initial.channelId, packets };
  } finally {
    decompressor.close();
  }
}
