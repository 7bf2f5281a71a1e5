/**
 * Field access for step decoders: pure functions that decode a value from
 * the bytes buffered so far and, when a field is not there yet, say how
 * many bytes they need instead of throwing (a decoder over a stream then
 * waits for them and calls again). Only when no more bytes can come is a
 * field cut short an error, {@linkcode UnexpectedEndOfStreamError}, naming
 * the field and its offset. {@linkcode readStep} drives a step decoder
 * over a {@linkcode ByteReader}.
 *
 * @module
 */

import { UnexpectedEndOfStreamError } from "../errors.ts";
import type { ByteReader } from "../streams/byte_reader.ts";

/** A step decoder's request: call again with at least `bytes` bytes. */
export interface NeedBytes {
  /** Discriminant. */
  type: "need";
  /** How many bytes, from the value's first, to have before calling again. */
  bytes: number;
}

/** Reads the fields of one value that starts at `bytes[0]`. */
export class StepCursor {
  readonly #bytes: Uint8Array;
  readonly #offset: number;
  readonly #ended: boolean;
  #more: NeedBytes = { type: "need", bytes: 0 };

  /**
   * Constructs a new instance.
   *
   * @param bytes The bytes from the value's first on.
   * @param options Stream offset of `bytes[0]`, and whether `bytes` is all
   *   there is.
   */
  constructor(
    bytes: Uint8Array,
    options: { offset?: number; ended?: boolean },
  ) {
    this.#bytes = bytes;
    this.#offset = options.offset ?? 0;
    this.#ended = options.ended ?? false;
  }

  /** The bytes, from the value's first. */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  /** The request to return after {@linkcode StepCursor.need} said no. */
  get more(): NeedBytes {
    return this.#more;
  }

  /**
   * Stream offset of value byte `at`.
   *
   * @param at The byte's index in the value.
   * @returns Its stream offset.
   */
  at(at: number): number {
    return this.#offset + at;
  }

  /**
   * Whether the `size` bytes of a required field at `at` are there; when
   * not, `more` asks for them.
   *
   * @param at The field's index in the value.
   * @param size The field's size.
   * @param what The field, for the error message.
   * @returns Whether the field can be read.
   * @throws {UnexpectedEndOfStreamError} If no more bytes can come.
   */
  need(at: number, size: number, what: string): boolean {
    if (this.#bytes.byteLength >= at + size) return true;
    if (this.#ended) {
      throw new UnexpectedEndOfStreamError(size, {
        offset: this.#offset + at,
        receivedBytes: Math.max(0, this.#bytes.byteLength - at),
        what,
      });
    }
    this.#more = { type: "need", bytes: at + size };
    return false;
  }

  /**
   * Whether `size` bytes at `at` are there or never will be, for an
   * optional field that the bytes themselves announce: when neither,
   * `more` asks for them.
   *
   * @param at The field's index in the value.
   * @param size The field's size.
   * @returns Whether the caller can decide now.
   */
  settled(at: number, size: number): boolean {
    if (this.#bytes.byteLength >= at + size || this.#ended) return true;
    this.#more = { type: "need", bytes: at + size };
    return false;
  }

  /**
   * Whether `size` bytes at `at` are there.
   *
   * @param at The field's index in the value.
   * @param size The field's size.
   * @returns Whether they are.
   */
  has(at: number, size: number): boolean {
    return this.#bytes.byteLength >= at + size;
  }

  /**
   * The be32 at `at`.
   *
   * @param at The field's index in the value.
   * @returns The integer.
   */
  uint32(at: number): number {
    return be32(this.#bytes, at);
  }

  /**
   * The be64 at `at` as a number, or `undefined` when it exceeds 2^53.
   *
   * @param at The field's index in the value.
   * @returns The integer.
   */
  safeUint64(at: number): number | undefined {
    const high = be32(this.#bytes, at);
    if (high >= 0x20_0000) return undefined;
    return high * 0x1_0000_0000 + be32(this.#bytes, at + 4);
  }

  /**
   * The be64 at `at` in hex, for messages.
   *
   * @param at The field's index in the value.
   * @returns The hex digits.
   */
  hex64(at: number): string {
    return `${be32(this.#bytes, at).toString(16)}${
      be32(this.#bytes, at + 4).toString(16).padStart(8, "0")
    }`;
  }
}

/**
 * Feeds the buffered bytes (at most `limit` of them) to a step decoder
 * until it has what it needs, waiting for more bytes in between, and takes
 * the bytes of what it decoded.
 *
 * @param reader The bytes, positioned at the value.
 * @param limit The most bytes the value can take.
 * @param step The step decoder: the bytes, their stream offset, and
 *   whether no more can come.
 * @returns What the step decoder decoded.
 * @throws {StreamFormatError} Whatever the step decoder throws.
 */
export async function readStep<T extends { size: number }>(
  reader: ByteReader,
  limit: number,
  step: (bytes: Uint8Array, offset: number, ended: boolean) => T | NeedBytes,
): Promise<T> {
  let ended = false;
  while (true) {
    const bytes = reader.peek(Math.min(reader.buffered, limit));
    const result = step(bytes, reader.offset, ended);
    if (!isNeed(result)) {
      reader.take(result.size);
      return result;
    }
    ended = !await reader.ensure(result.bytes);
  }
}

function isNeed(step: object): step is NeedBytes {
  return (step as { type?: string }).type === "need";
}

function be32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) |
    bytes[at + 3]!) >>> 0;
}
