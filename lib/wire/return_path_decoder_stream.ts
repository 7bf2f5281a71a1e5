import { StreamFormatError } from "../errors.ts";
import { ByteReader } from "../streams/byte_reader.ts";
import {
  MAX_RP_MESSAGE_LENGTH,
  MIG_RP_MSG,
  RECV_BITMAP_ENDING,
  type ReturnPathMessage,
} from "./return_path_message.ts";

/** Options for {@linkcode ReturnPathDecoderStream}. */
export interface ReturnPathDecoderStreamOptions {
  /**
   * The bitmap size a RECV_BITMAP dump must have for a block, in bytes; a
   * dump of another size, or for an unknown block (`undefined`), is
   * refused as QEMU's source does.
   */
  bitmapBytes?: (block: string) => number | undefined;
  /**
   * Largest bitmap accepted when `bitmapBytes` is not given.
   *
   * @default {64 * 1024 * 1024}
   */
  maxBitmapBytes?: number;
}

const FIXED: Partial<Record<number, number>> = {
  [MIG_RP_MSG.SHUT]: 4,
  [MIG_RP_MSG.PONG]: 4,
  [MIG_RP_MSG.REQ_PAGES]: 12,
  [MIG_RP_MSG.RESUME_ACK]: 4,
  [MIG_RP_MSG.SWITCHOVER_ACK]: 0,
};

/**
 * Decodes the return path (destination → source) into messages, with the
 * checks QEMU's source applies: a type of 0 or past the table, a length
 * other than the type's fixed one, a length over 512 bytes, a bitmap dump
 * of the wrong size or without its end mark are errors naming the offset.
 *
 * @example Usage
 * ```ts
 * import { encodeReturnPathMessage, ReturnPathDecoderStream } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const bytes = encodeReturnPathMessage({ type: "REQ_PAGES_ID", start: 0xc0000, length: 4096, block: "pc.ram" });
 * const messages = await Array.fromAsync(
 *   ReadableStream.from([bytes]).pipeThrough(new ReturnPathDecoderStream()),
 * );
 * assert.deepEqual(messages, [{ type: "REQ_PAGES_ID", start: 0xc0000, length: 4096, block: "pc.ram" }]);
 * ```
 */
export class ReturnPathDecoderStream
  implements TransformStream<Uint8Array, ReturnPathMessage> {
  readonly #writable: WritableStream<Uint8Array>;
  readonly #readable: ReadableStream<ReturnPathMessage>;

  /**
   * Constructs a new instance.
   *
   * @param options How to check bitmap dumps.
   */
  constructor(options: ReturnPathDecoderStreamOptions = {}) {
    const { readable, writable } = new TransformStream<
      Uint8Array,
      Uint8Array
    >();
    this.#writable = writable;
    this.#readable = ReadableStream.from(
      decode(new ByteReader(readable), options),
    );
  }

  /** Return-path bytes go in here. */
  get writable(): WritableStream<Uint8Array> {
    return this.#writable;
  }

  /** Messages come out here. */
  get readable(): ReadableStream<ReturnPathMessage> {
    return this.#readable;
  }
}

async function* decode(
  reader: ByteReader,
  options: ReturnPathDecoderStreamOptions,
): AsyncGenerator<ReturnPathMessage> {
  try {
    while (true) {
      const at = reader.offset;
      const header = await reader.readExactOrEnd(4, "a return-path header");
      if (header === undefined) return;
      const type = (header[0]! << 8) | header[1]!;
      const length = (header[2]! << 8) | header[3]!;
      checkHeader(type, length, at);
      const payload = await reader.readExact(length, "a return-path payload");
      if (type === MIG_RP_MSG.RECV_BITMAP) {
        yield await readRecvBitmap(reader, payload, at, options);
      } else {
        yield decodePayload(type, payload, at);
      }
    }
  } catch (error) {
    await reader.cancel(error).catch(() => {});
    throw error;
  }
}

/** Checks a message's type and length, as QEMU's source does. */
function checkHeader(type: number, length: number, at: number): void {
  if (type === MIG_RP_MSG.INVALID || type > MIG_RP_MSG.SWITCHOVER_ACK) {
    throw messageError(
      at,
      `type ${type} is ${type === 0 ? "INVALID" : "unknown"}`,
    );
  }
  if (length > MAX_RP_MESSAGE_LENGTH) {
    throw messageError(at, `length ${length} exceeds ${MAX_RP_MESSAGE_LENGTH}`);
  }
  const fixed = FIXED[type];
  if (fixed !== undefined && length !== fixed) {
    throw messageError(
      at,
      `length ${length} differs from ${fixed} for type ${type}`,
    );
  }
}

/** Decodes the payload of any message but RECV_BITMAP. */
function decodePayload(
  type: number,
  payload: Uint8Array,
  at: number,
): ReturnPathMessage {
  switch (type) {
    case MIG_RP_MSG.SHUT:
      return { type: "SHUT", value: be32(payload, 0) };
    case MIG_RP_MSG.PONG:
      return { type: "PONG", value: be32(payload, 0) };
    case MIG_RP_MSG.RESUME_ACK:
      return { type: "RESUME_ACK", value: be32(payload, 0) };
    case MIG_RP_MSG.SWITCHOVER_ACK:
      return { type: "SWITCHOVER_ACK" };
    case MIG_RP_MSG.REQ_PAGES:
      return {
        type: "REQ_PAGES",
        start: be64(payload, 0, at),
        length: be32(payload, 8),
      };
    default: {
      const length = payload.byteLength;
      if (length < 13 || payload[12]! + 13 !== length) {
        throw messageError(
          at,
          `REQ_PAGES_ID length ${length} does not match its block name`,
        );
      }
      const block = new TextDecoder().decode(payload.subarray(13));
      return {
        type: "REQ_PAGES_ID",
        start: be64(payload, 0, at),
        length: be32(payload, 8),
        block,
      };
    }
  }
}

/**
 * Reads the bitmap dump that follows a RECV_BITMAP message's payload,
 * outside the message framing.
 */
async function readRecvBitmap(
  reader: ByteReader,
  payload: Uint8Array,
  at: number,
  options: ReturnPathDecoderStreamOptions,
): Promise<ReturnPathMessage> {
  const length = payload.byteLength;
  if (length < 1 || payload[0]! + 1 !== length) {
    throw messageError(
      at,
      `RECV_BITMAP length ${length} does not match its block name`,
    );
  }
  const block = new TextDecoder().decode(payload.subarray(1));
  const sizeAt = reader.offset;
  const size64 = await reader.readBigUint64("a bitmap size");
  const expected = options.bitmapBytes?.(block);
  if (options.bitmapBytes && expected === undefined) {
    throw messageError(at, `RECV_BITMAP names unknown block "${block}"`);
  }
  const limit = expected ?? options.maxBitmapBytes ?? 64 * 1024 * 1024;
  if (
    expected !== undefined
      ? size64 !== BigInt(expected)
      : size64 > BigInt(limit)
  ) {
    throw messageError(
      sizeAt,
      `bitmap size ${size64} for "${block}" ${
        expected !== undefined ? `differs from ${expected}` : `exceeds ${limit}`
      }`,
    );
  }
  const bitmap = (await reader.readExact(Number(size64), "a bitmap")).slice();
  const endAt = reader.offset;
  if (
    await reader.readBigUint64("the bitmap end mark") !== RECV_BITMAP_ENDING
  ) {
    throw messageError(endAt, `the bitmap for "${block}" lacks its end mark`);
  }
  return { type: "RECV_BITMAP", block, bitmap };
}

function messageError(offset: number, what: string): StreamFormatError {
  return new StreamFormatError(
    `Cannot decode return-path message at offset ${offset}: ${what}`,
    { offset },
  );
}

function be32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) |
    bytes[at + 3]!) >>> 0;
}

/** The be64 at `at`; `at` + 4 is the payload offset for errors. */
function be64(bytes: Uint8Array, at: number, messageAt: number): number {
  const high = be32(bytes, at);
  if (high >= 0x20_0000) {
    throw messageError(messageAt + 4 + at, "an address exceeds 2^53");
  }
  return high * 0x1_0000_0000 + be32(bytes, at + 4);
}
