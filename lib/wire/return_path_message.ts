/**
 * Return-path messages: what a destination sends back to the source over
 * the reverse direction of the migration connection (QEMU's
 * `MIG_RP_MSG_*`, `migration/migration.c`).
 *
 * ```
 * be16 type  be16 len  payload[len]                      len <= 512
 *   1 SHUT            4   be32 0 = loaded, 1 = error
 *   2 PONG            4   be32 the PING value
 *   3 REQ_PAGES_ID  13+n  be64 start, be32 len, u8 n, block name
 *   4 REQ_PAGES      12   be64 start, be32 len (on the last named block)
 *   5 RECV_BITMAP   1+n   u8 n, block name; then, outside the framing:
 *                         be64 size, size bytes of bitmap (64-bit
 *                         little-endian words), be64 0x0123456789abcdef
 *   6 RESUME_ACK      4   be32 1
 *   7 SWITCHOVER_ACK  0   (QEMU 8.1+)
 * ```
 *
 * @module
 */

import { ByteWriter } from "../bytes/byte_writer.ts";

/**
 * Return-path message types, as QEMU numbers them.
 *
 * @example Usage
 * ```ts
 * import { MIG_RP_MSG } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(MIG_RP_MSG.REQ_PAGES_ID, 3);
 * ```
 */
export const MIG_RP_MSG = {
  INVALID: 0,
  SHUT: 1,
  PONG: 2,
  REQ_PAGES_ID: 3,
  REQ_PAGES: 4,
  RECV_BITMAP: 5,
  RESUME_ACK: 6,
  SWITCHOVER_ACK: 7,
} as const;

/**
 * The end mark after a RECV_BITMAP dump (`RAMBLOCK_RECV_BITMAP_ENDING`).
 *
 * @example Usage
 * ```ts
 * import { RECV_BITMAP_ENDING } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(RECV_BITMAP_ENDING.toString(16), "123456789abcdef");
 * ```
 */
export const RECV_BITMAP_ENDING = 0x0123456789abcdefn;

/**
 * QEMU's receive buffer for one return-path message: longer ones are fatal.
 *
 * @example Usage
 * ```ts
 * import { MAX_RP_MESSAGE_LENGTH } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(MAX_RP_MESSAGE_LENGTH, 512);
 * ```
 */
export const MAX_RP_MESSAGE_LENGTH = 512;

/** One return-path message. */
export type ReturnPathMessage =
  | { type: "SHUT"; value: number }
  | { type: "PONG"; value: number }
  | { type: "REQ_PAGES_ID"; start: number; length: number; block: string }
  | { type: "REQ_PAGES"; start: number; length: number }
  | {
    type: "RECV_BITMAP";
    block: string;
    /** The received-pages bitmap: 64-bit little-endian words. */
    bitmap: Uint8Array;
  }
  | { type: "RESUME_ACK"; value: number }
  | { type: "SWITCHOVER_ACK" };

/**
 * Encodes one return-path message (with the bitmap dump after a
 * RECV_BITMAP message).
 *
 * @example Usage
 * ```ts
 * import { encodeReturnPathMessage } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(
 *   encodeReturnPathMessage({ type: "PONG", value: 1 }),
 *   new Uint8Array([0, 2, 0, 4, 0, 0, 0, 1]),
 * );
 * ```
 *
 * @param message The message.
 * @returns The bytes.
 */
export function encodeReturnPathMessage(
  message: ReturnPathMessage,
): Uint8Array {
  const writer = new ByteWriter(64);
  writer.uint16(MIG_RP_MSG[message.type]);
  switch (message.type) {
    case "SHUT":
    case "PONG":
    case "RESUME_ACK":
      writer.uint16(4).uint32(message.value);
      break;
    case "REQ_PAGES":
      writer.uint16(12).uint64(message.start).uint32(message.length);
      break;
    case "REQ_PAGES_ID": {
      const name = new TextEncoder().encode(message.block);
      writer.uint16(13 + name.byteLength).uint64(message.start)
        .uint32(message.length).countedString(message.block);
      break;
    }
    case "RECV_BITMAP": {
      const name = new TextEncoder().encode(message.block);
      if (message.bitmap.byteLength % 8 !== 0) {
        throw new RangeError(
          `Cannot encode RECV_BITMAP for "${message.block}": the bitmap must be whole 64-bit words: received ${message.bitmap.byteLength} bytes`,
        );
      }
      writer.uint16(1 + name.byteLength).countedString(message.block)
        .uint64(message.bitmap.byteLength).write(message.bitmap)
        .bigUint64(RECV_BITMAP_ENDING);
      break;
    }
    case "SWITCHOVER_ACK":
      writer.uint16(0);
      break;
  }
  return writer.takeBytes();
}
