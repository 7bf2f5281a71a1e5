/**
 * The missing direction of a one-way transport: a stream that errors with
 * a {@linkcode NotSupportedError} on first use, and costs nothing when it is
 * never used. Private to lib/transport/.
 *
 * @module
 */

import { NotSupportedError } from "../errors.ts";

/** A readable whose first read rejects with `message`. */
export function unavailableReadable(
  message: string,
): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.error(new NotSupportedError(message));
    },
  }, { highWaterMark: 0 });
}

/** A writable whose first write rejects with `message`; closing it works. */
export function unavailableWritable(
  message: string,
): WritableStream<Uint8Array> {
  return new WritableStream<Uint8Array>({
    write() {
      throw new NotSupportedError(message);
    },
  });
}
