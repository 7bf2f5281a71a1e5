/**
 * The first bytes on every multifd channel (QEMU 7.2 `MultiFDInit_t`,
 * `migration/multifd.c`): the source names itself and the channel before
 * any page packet. Big-endian and packed, 64 bytes:
 *
 * ```
 * +0   be32      magic       0x11223344 (MULTIFD_MAGIC)
 * +4   be32      version     1 (MULTIFD_VERSION)
 * +8   16 bytes  uuid        the source VM's UUID (-uuid; all zero without it)
 * +24  u8        channel id  0 .. multifd-channels - 1
 * +25  7 bytes   reserved    zero
 * +32  4 × be64  reserved    zero
 * ```
 *
 * A 7.2 destination refuses a wrong magic or version, and a UUID other than
 * its own (so both ends must agree on `-uuid`, or both leave it unset). It
 * ignores the reserved bytes. The main channel sends no such packet: it
 * starts with the stream header (`QEVM`), see multifd_packet.ts.
 *
 * @module
 */

import { formatUuid } from "../bytes/parse_uuid.ts";
import { StreamFormatError, UnexpectedEndOfStreamError } from "../errors.ts";

/**
 * The magic number that opens every multifd initial packet and page packet.
 *
 * @example Usage
 * ```ts
 * import { encodeMultifdInitialPacket, MULTIFD_MAGIC } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeMultifdInitialPacket({ type: "multifd-initial", uuid: "00000000-0000-0000-0000-000000000000", channelId: 0 });
 * assert.equal(new DataView(bytes.buffer).getUint32(0), MULTIFD_MAGIC);
 * ```
 */
export const MULTIFD_MAGIC = 0x11223344;

/**
 * The multifd format version QEMU 7.2 writes and the only one it reads.
 *
 * @example Usage
 * ```ts
 * import { encodeMultifdInitialPacket, MULTIFD_VERSION } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeMultifdInitialPacket({ type: "multifd-initial", uuid: "00000000-0000-0000-0000-000000000000", channelId: 1 });
 * assert.equal(new DataView(bytes.buffer).getUint32(4), MULTIFD_VERSION);
 * ```
 */
export const MULTIFD_VERSION = 1;

/**
 * Size of the multifd initial packet in bytes.
 *
 * @example Usage
 * ```ts
 * import { encodeMultifdInitialPacket, MULTIFD_INITIAL_PACKET_SIZE } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeMultifdInitialPacket({ type: "multifd-initial", uuid: "00000000-0000-0000-0000-000000000000", channelId: 3 });
 * assert.equal(bytes.byteLength, MULTIFD_INITIAL_PACKET_SIZE);
 * ```
 */
export const MULTIFD_INITIAL_PACKET_SIZE = 64;

/** The packet that opens a multifd channel. */
export interface MultifdInitialPacket {
  /** Discriminant. */
  type: "multifd-initial";
  /**
   * The source VM's UUID in its usual text form, lower case
   * (`"00000000-0000-0000-0000-000000000000"` when QEMU runs without
   * `-uuid`).
   */
  uuid: string;
  /** Which channel this connection is, from 0. */
  channelId: number;
}

const UUID_PATTERN =
  /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Encodes a multifd initial packet into its 64 bytes; the reserved bytes
 * are zero.
 *
 * @example Usage
 * ```ts
 * import { encodeMultifdInitialPacket } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeMultifdInitialPacket({
 *   type: "multifd-initial",
 *   uuid: "12345678-9abc-def0-1234-56789abcdef0",
 *   channelId: 2,
 * });
 * assert.deepEqual(bytes.subarray(0, 12), new Uint8Array([0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1, 0x12, 0x34, 0x56, 0x78]));
 * assert.equal(bytes[24], 2);
 * ```
 *
 * @param packet The packet.
 * @returns A new 64-byte array.
 * @throws {RangeError} If the channel id is not a byte.
 * @throws {TypeError} If the UUID is not in its text form.
 */
export function encodeMultifdInitialPacket(
  packet: MultifdInitialPacket,
): Uint8Array<ArrayBuffer> {
  const { uuid, channelId } = packet;
  if (!Number.isInteger(channelId) || channelId < 0 || channelId > 0xff) {
    throw new RangeError(
      `Cannot encode multifd initial packet as channelId must be an integer from 0 to 255: received ${channelId}`,
    );
  }
  if (!UUID_PATTERN.test(uuid)) {
    throw new TypeError(
      `Cannot encode multifd initial packet as uuid must look like "00000000-0000-0000-0000-000000000000": received "${uuid}"`,
    );
  }
  const bytes = new Uint8Array(MULTIFD_INITIAL_PACKET_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, MULTIFD_MAGIC);
  view.setUint32(4, MULTIFD_VERSION);
  const hex = uuid.replaceAll("-", "");
  for (let i = 0; i < 16; i++) {
    bytes[8 + i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  bytes[24] = channelId;
  return bytes;
}

/**
 * Decodes a multifd initial packet, checking magic and version as a QEMU
 * 7.2 destination does. Whether the UUID and channel id suit this
 * destination is the caller's business.
 *
 * @example Usage
 * ```ts
 * import { decodeMultifdInitialPacket, encodeMultifdInitialPacket } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const packet = { type: "multifd-initial", uuid: "00000000-0000-0000-0000-000000000000", channelId: 1 } as const;
 * assert.deepEqual(decodeMultifdInitialPacket(encodeMultifdInitialPacket(packet)), packet);
 * ```
 *
 * @example The main channel is not a multifd channel
 * ```ts
 * import { decodeMultifdInitialPacket, StreamFormatError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const qevm = new Uint8Array(64);
 * qevm.set([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]);
 * assert.throws(
 *   () => decodeMultifdInitialPacket(qevm, 0),
 *   (error) => error instanceof StreamFormatError && error.offset === 0 && /magic 0x5145564d/.test(error.message),
 * );
 * ```
 *
 * @param bytes At least 64 bytes; the packet is the first 64.
 * @param offset Stream offset of `bytes[0]`, for error messages.
 * @returns The packet.
 * @throws {UnexpectedEndOfStreamError} If fewer than 64 bytes are given.
 * @throws {StreamFormatError} If the magic or the version is wrong.
 */
export function decodeMultifdInitialPacket(
  bytes: Uint8Array,
  offset: number = 0,
): MultifdInitialPacket {
  if (bytes.byteLength < MULTIFD_INITIAL_PACKET_SIZE) {
    throw new UnexpectedEndOfStreamError(MULTIFD_INITIAL_PACKET_SIZE, {
      offset,
      what: "a multifd initial packet",
      receivedBytes: bytes.byteLength,
    });
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0);
  if (magic !== MULTIFD_MAGIC) {
    throw new StreamFormatError(
      `Cannot decode multifd initial packet at offset ${offset}: magic ${
        hex32(magic)
      } is not ${hex32(MULTIFD_MAGIC)}`,
      { offset },
    );
  }
  const version = view.getUint32(4);
  if (version !== MULTIFD_VERSION) {
    throw new StreamFormatError(
      `Cannot decode multifd initial packet at offset ${offset}: version ${version} is not ${MULTIFD_VERSION}`,
      { offset: offset + 4 },
    );
  }
  return {
    type: "multifd-initial",
    uuid: formatUuid(bytes.subarray(8, 24)),
    channelId: bytes[24]!,
  };
}

function hex32(value: number): string {
  return `0x${value.toString(16).padStart(8, "0")}`;
}
