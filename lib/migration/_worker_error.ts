/**
 * Errors across a worker boundary. A structured clone of an error keeps
 * its message but loses its class and fields (a
 * {@linkcode StreamFormatError}'s offset), so a worker sends this plain
 * form and the main thread rebuilds the error the user would have seen had
 * the work run on the main thread. Private to the migration.
 *
 * @module
 */

import {
  MigrationProtocolError,
  StreamFormatError,
  UnexpectedEndOfStreamError,
} from "../errors.ts";

/** An error as a worker posts it. */
export interface WorkerErrorData {
  /** The class name (`StreamFormatError`, `RangeError`, …). */
  name: string;
  /** The message. */
  message: string;
  /** A {@linkcode StreamFormatError}'s offset. */
  offset?: number;
  /** An {@linkcode UnexpectedEndOfStreamError}'s expected byte count. */
  expectedBytes?: number;
  /** The cause, in the same form. */
  cause?: WorkerErrorData;
}

/**
 * The plain form of `error`, for `postMessage`.
 *
 * @param error What was thrown.
 * @returns Its name, message, offset and cause.
 */
export function serializeError(error: unknown): WorkerErrorData {
  if (!(error instanceof Error)) {
    return { name: "Error", message: String(error) };
  }
  const data: WorkerErrorData = { name: error.name, message: error.message };
  if (error instanceof StreamFormatError) data.offset = error.offset;
  if (error instanceof UnexpectedEndOfStreamError) {
    data.expectedBytes = error.expectedBytes;
  }
  if (error.cause !== undefined) data.cause = serializeError(error.cause);
  return data;
}

/**
 * Rebuilds an error posted by a worker, with its class, fields and cause.
 *
 * @param data The plain form.
 * @param suffix Appended to the message (which channel it happened on).
 * @returns The error.
 */
export function rebuildError(
  data: WorkerErrorData,
  suffix: string = "",
): Error {
  const message = data.message + suffix;
  const options = data.cause === undefined
    ? {}
    : { cause: rebuildError(data.cause) };
  switch (data.name) {
    case "UnexpectedEndOfStreamError": {
      const error = new StreamFormatError(message, {
        ...options,
        offset: data.offset ?? 0,
      });
      // Its constructor builds the message from parts the worker no longer
      // has: give the error its class without calling it.
      Object.setPrototypeOf(error, UnexpectedEndOfStreamError.prototype);
      error.name = data.name;
      Object.defineProperty(error, "expectedBytes", {
        value: data.expectedBytes ?? 0,
        enumerable: true,
      });
      return error;
    }
    case "StreamFormatError":
      return new StreamFormatError(message, {
        ...options,
        offset: data.offset ?? 0,
      });
    case "MigrationProtocolError":
      return new MigrationProtocolError(message, options);
    case "RangeError":
      return new RangeError(message, options);
    case "TypeError":
      return new TypeError(message, options);
    default: {
      const error = new Error(message, options);
      error.name = data.name;
      return error;
    }
  }
}

/**
 * Listens to a worker: its messages go to `onMessage`, and an error it did
 * not catch (or a script that failed to load) goes to `onError` instead
 * of being reported as uncaught.
 *
 * @param worker The worker.
 * @param onMessage Called with each message's data.
 * @param onError Called with the worker's error.
 */
export function listenToWorker<T>(
  worker: Worker,
  onMessage: (data: T) => void,
  onError: (error: Error) => void,
): void {
  worker.onmessage = (event: MessageEvent<T>) => onMessage(event.data);
  worker.onerror = (event) => {
    event.preventDefault();
    onError(new Error(event.message));
  };
}
