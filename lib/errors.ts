/**
 * The error classes livemig throws.
 *
 * ```
 * SyntaxError
 *   └─ StreamFormatError { offset }       bytes cannot be decoded
 *        └─ UnexpectedEndOfStreamError    the stream ended inside a value
 * Error
 *   └─ MigrationAbortedError { reason }   a migration ended without completing
 * built-ins                               RangeError / TypeError for bad arguments
 * ```
 *
 * @module
 */

/** Options for {@linkcode StreamFormatError}. */
export interface StreamFormatErrorOptions extends ErrorOptions {
  /** Byte offset, from the start of the stream, where decoding failed. */
  offset: number;
}

/**
 * The bytes of a migration stream cannot be decoded: wrong magic, unknown
 * record type, impossible length, bad flags. `offset` points at the first
 * byte of the value that could not be decoded.
 *
 * @example Usage
 * ```ts
 * import { StreamFormatError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const error = new StreamFormatError("Cannot decode section at offset 8: type 0x09 is unknown", { offset: 8 });
 * assert.equal(error.offset, 8);
 * assert.ok(error instanceof SyntaxError);
 * ```
 */
export class StreamFormatError extends SyntaxError {
  /** Byte offset, from the start of the stream, where decoding failed. */
  readonly offset: number;

  /**
   * Constructs a new instance.
   *
   * @param message What could not be decoded, in sentence case, no period.
   * @param options Where it failed, and the underlying cause if any.
   */
  constructor(message: string, options: StreamFormatErrorOptions) {
    super(message, options);
    this.name = "StreamFormatError";
    this.offset = options.offset;
  }
}

/**
 * The stream ended in the middle of a value.
 *
 * @example Usage
 * ```ts
 * import { UnexpectedEndOfStreamError, StreamFormatError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const error = new UnexpectedEndOfStreamError(8, { offset: 100, what: "a RAM record header" });
 * assert.ok(error instanceof StreamFormatError);
 * assert.equal(error.offset, 100);
 * assert.match(error.message, /offset 100/);
 * ```
 */
export class UnexpectedEndOfStreamError extends StreamFormatError {
  /** How many bytes the value needed. */
  readonly expectedBytes: number;

  /**
   * Constructs a new instance.
   *
   * @param expectedBytes How many bytes the truncated value needed.
   * @param options Where the value started, and what it was.
   */
  constructor(
    expectedBytes: number,
    options: StreamFormatErrorOptions & {
      what?: string;
      receivedBytes?: number;
    },
  ) {
    const what = options.what ?? `${expectedBytes} bytes`;
    const got = options.receivedBytes === undefined
      ? ""
      : `: received ${options.receivedBytes} of ${expectedBytes} bytes`;
    super(
      `Cannot read ${what} at offset ${options.offset} as the stream ended${got}`,
      options,
    );
    this.name = "UnexpectedEndOfStreamError";
    this.expectedBytes = expectedBytes;
  }
}

/** Why a migration ended without completing. */
export type MigrationAbortReason =
  | "cancelled"
  | "not-converging"
  | "transport-failed"
  | "destination-failed"
  | "source-failed"
  | "stream-error"
  | "postcopy-refused"
  /** Given up in postcopy: the status stays `postcopy-paused`. */
  | "abandoned";

/** Options for {@linkcode MigrationAbortedError}. */
export interface MigrationAbortedErrorOptions extends ErrorOptions {
  /** Why the migration ended. */
  reason: MigrationAbortReason;
}

/**
 * A migration ended without completing: cancelled, failed on the transport,
 * refused by the destination. The one domain error callers catch.
 *
 * @example Usage
 * ```ts
 * import { MigrationAbortedError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const error = new MigrationAbortedError("Cannot complete migration: cancelled by the user", { reason: "cancelled" });
 * assert.equal(error.reason, "cancelled");
 * ```
 */
export class MigrationAbortedError extends Error {
  /** Why the migration ended. */
  readonly reason: MigrationAbortReason;

  /**
   * Constructs a new instance.
   *
   * @param message What happened, in sentence case, no period.
   * @param options The reason, and the underlying cause if any.
   */
  constructor(message: string, options: MigrationAbortedErrorOptions) {
    super(message, options);
    this.name = "MigrationAbortedError";
    this.reason = options.reason;
  }
}

/**
 * A feature that QEMU has but livemig does not implement was asked for: a
 * transport (`rdma:`, `vsock:`, `fd:`), a capability, a stream feature.
 *
 * @example Usage
 * ```ts
 * import { NotSupportedError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const error = new NotSupportedError('Cannot open "rdma:host:1": RDMA transports are not supported');
 * assert.equal(error.name, "NotSupportedError");
 * ```
 */
export class NotSupportedError extends Error {
  /**
   * Constructs a new instance.
   *
   * @param message What is not supported, in sentence case, no period.
   * @param options The underlying cause, if any.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NotSupportedError";
  }
}

/**
 * A peer broke the migration protocol in a way that is not about bytes: the
 * stream decoded, but what it asked for cannot be done here (a command in
 * the wrong state, pages before the block list, a second and different
 * block list, postcopy refused, RAM that never arrived). Errors about the
 * bytes themselves are {@linkcode StreamFormatError}s, which carry an
 * offset.
 *
 * @example Usage
 * ```ts
 * import { MigrationProtocolError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const error = new MigrationProtocolError("Cannot load a page before the block list");
 * assert.equal(error.name, "MigrationProtocolError");
 * assert.ok(!(error instanceof SyntaxError));
 * ```
 */
export class MigrationProtocolError extends Error {
  /**
   * Constructs a new instance.
   *
   * @param message What the peer asked for and why it cannot be done, in
   *   sentence case, no period.
   * @param options The underlying cause, if any.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MigrationProtocolError";
  }
}

/**
 * The text to show a user for a thrown value: an error's message (its name
 * when the message is empty), anything else as a string.
 *
 * @example Usage
 * ```ts
 * import { describeError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(describeError(new RangeError("Cannot use -1")), "Cannot use -1");
 * assert.equal(describeError(new TypeError("")), "TypeError");
 * assert.equal(describeError("gone"), "gone");
 * ```
 *
 * @param error What was thrown.
 * @returns One line of text.
 */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
