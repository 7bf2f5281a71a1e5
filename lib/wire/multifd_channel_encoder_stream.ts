/**
 * Encoding the records of one multifd channel into its bytes, the inverse
 * of multifd_channel_decoder_stream.ts.
 *
 * @module
 */

import type { MultifdChannelRecord } from "./multifd_channel_decoder_stream.ts";
import { encodeMultifdInitialPacket } from "./multifd_initial_packet.ts";
import {
  encodeMultifdPacket,
  type MultifdPacketOptions,
} from "./multifd_packet.ts";

/** Options for {@linkcode MultifdChannelEncoderStream}. */
export interface MultifdChannelEncoderStreamOptions {
  /**
   * The target page size; it fixes the packet header size.
   *
   * @default {4096}
   */
  pageSize?: number;
}

/**
 * Encodes one multifd channel record into its bytes: the 64-byte initial
 * packet, or a page packet's header followed by its data.
 *
 * @example Usage
 * ```ts
 * import { encodeMultifdChannelRecord } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeMultifdChannelRecord({ type: "multifd-initial", uuid: "00000000-0000-0000-0000-000000000000", channelId: 0 });
 * assert.equal(bytes.byteLength, 64);
 * ```
 *
 * @param record The record.
 * @param options The page size.
 * @returns A new array.
 * @throws {RangeError} If a field does not fit or the data length is wrong.
 * @throws {TypeError} If a UUID is malformed, or a packet with pages has
 *   unknown compression bits.
 */
export function encodeMultifdChannelRecord(
  record: MultifdChannelRecord,
  options: MultifdPacketOptions = {},
): Uint8Array<ArrayBuffer> {
  return record.type === "multifd-initial"
    ? encodeMultifdInitialPacket(record)
    : encodeMultifdPacket(record, options);
}

/**
 * A stream stage that encodes multifd channel records into the channel's
 * bytes, one chunk per record.
 *
 * @example Usage
 * ```ts
 * import { MULTIFD_FLAG, MultifdChannelDecoderStream, MultifdChannelEncoderStream } from "@livemig/livemig";
 * import type { MultifdChannelRecord } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const records: MultifdChannelRecord[] = [
 *   { type: "multifd-initial", uuid: "00000000-0000-0000-0000-000000000000", channelId: 1 },
 *   {
 *     type: "multifd-packet", flags: MULTIFD_FLAG.SYNC, pagesAlloc: 128, nextPacketSize: 4096,
 *     packetNum: 5n, ramBlock: "pc.ram", offsets: [0x3000], data: new Uint8Array(4096).fill(1),
 *   },
 * ];
 * const decoded = await Array.fromAsync(
 *   ReadableStream.from(records)
 *     .pipeThrough(new MultifdChannelEncoderStream())
 *     .pipeThrough(new MultifdChannelDecoderStream()),
 * );
 * assert.deepEqual(decoded, records);
 * ```
 */
export class MultifdChannelEncoderStream
  extends TransformStream<MultifdChannelRecord, Uint8Array> {
  /**
   * Constructs a new instance.
   *
   * @param options The page size.
   */
  constructor(options: MultifdChannelEncoderStreamOptions = {}) {
    super({
      transform: (record, controller) => {
        controller.enqueue(encodeMultifdChannelRecord(record, options));
      },
    });
  }
}
