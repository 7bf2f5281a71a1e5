/** Options for {@linkcode TransportError}. */
export interface TransportErrorOptions extends ErrorOptions {
  /** The URI or description of the transport that failed. */
  uri: string;
}

/**
 * A transport could not be opened, or failed while bytes moved: a refused
 * connection, a reset socket, a command that exited with an error, a file
 * that could not be opened. The message names the URI; `cause` holds the
 * underlying error, such as a `Deno.errors.ConnectionRefused`.
 *
 * @example Usage
 * ```ts
 * import { connectTcp, TransportError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * // Port 1 is reserved and nothing listens on it.
 * const error = await connectTcp({ scheme: "tcp", host: "127.0.0.1", port: 1 })
 *   .catch((e) => e);
 * assert.ok(error instanceof TransportError);
 * assert.equal(error.uri, "tcp:127.0.0.1:1");
 * assert.match(error.message, /^Cannot connect to "tcp:127\.0\.0\.1:1": /);
 * ```
 */
export class TransportError extends Error {
  /** The URI or description of the transport that failed. */
  readonly uri: string;

  /**
   * Constructs a new instance.
   *
   * @param message What failed, in sentence case, no period.
   * @param options The transport, and the underlying cause if any.
   */
  constructor(message: string, options: TransportErrorOptions) {
    super(message, options);
    this.name = "TransportError";
    this.uri = options.uri;
  }
}
