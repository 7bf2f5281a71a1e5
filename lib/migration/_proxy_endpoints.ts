/**
 * The edges of a {@linkcode MigrationProxy}: its transports' streams,
 * counted, with each failure tagged with the side it came from. Private
 * to the proxy.
 *
 * @module
 */

import type { ProxyStreamStats } from "./migration_proxy_info.ts";
import type { ReencodedPages } from "./reencode_stream.ts";

/** The two ends a proxy connects. */
export type Side = "source" | "destination";

/** Which side of the proxy each error came from. */
export class ErrorSides {
  readonly #sides = new WeakMap<object, Side>();

  /**
   * Remembers that `error` came from `side` (the first side wins).
   *
   * @param error The error.
   * @param side Its side.
   */
  tag(error: unknown, side: Side): void {
    if (
      typeof error === "object" && error !== null && !this.#sides.has(error)
    ) {
      this.#sides.set(error, side);
    }
  }

  /**
   * The side `error` was tagged with.
   *
   * @param error The error.
   * @returns Its side, if it was tagged.
   */
  sideOf(error: unknown): Side | undefined {
    return typeof error === "object" && error !== null
      ? this.#sides.get(error)
      : undefined;
  }
}

/** Callbacks of the streams at a transport's edge. */
export interface EndpointCallbacks {
  /** Bytes that went through. */
  onBytes(bytes: number): void;
  /** The transport failed (reported before the error travels on). */
  onError(error: unknown): void;
  /** Whether a failure to close (after every write went through) is ignored. */
  closeMayFail?: boolean;
}

/**
 * A transport's readable, counted, with its errors reported. It reads
 * only when pulled (no queue of its own).
 *
 * @param readable The transport's readable.
 * @param callbacks Where counts and errors go.
 * @returns The counted readable.
 */
export function endpointReadable(
  readable: ReadableStream<Uint8Array>,
  callbacks: EndpointCallbacks,
): ReadableStream<Uint8Array> {
  const reader = readable.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let result: ReadableStreamReadResult<Uint8Array>;
      try {
        result = await reader.read();
      } catch (error) {
        callbacks.onError(error);
        throw error;
      }
      if (result.done) {
        controller.close();
      } else {
        callbacks.onBytes(result.value.byteLength);
        controller.enqueue(result.value);
      }
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
}

/**
 * A transport's writable, counted, with its errors reported.
 *
 * @param writable The transport's writable.
 * @param callbacks Where counts and errors go, and whether a failed close
 *   is ignored.
 * @returns The counted writable.
 */
export function endpointWritable(
  writable: WritableStream<Uint8Array>,
  callbacks: EndpointCallbacks,
): WritableStream<Uint8Array> {
  const writer = writable.getWriter();
  const guard = async (operation: Promise<void>) => {
    try {
      await operation;
    } catch (error) {
      callbacks.onError(error);
      throw error;
    }
  };
  return new WritableStream<Uint8Array>({
    async write(chunk) {
      await guard(writer.write(chunk));
      callbacks.onBytes(chunk.byteLength);
    },
    close: () =>
      callbacks.closeMayFail
        ? writer.close().catch(() => {})
        : guard(writer.close()),
    abort: (reason) => writer.abort(reason).catch(() => {}),
  });
}

/**
 * What went through one direction of the proxy, as its `query()` reports
 * it (`received`, `sent`).
 *
 * @param pages The page records counted on that side, if any yet.
 * @param options The bytes that went through; the stream's page size.
 * @returns The statistics.
 */
export function directionStats(
  pages: ReencodedPages | undefined,
  options: { bytes: number; pageSize: number },
): ProxyStreamStats {
  const { bytes, pageSize } = options;
  const counts = pages ??
    { duplicate: 0, normal: 0, xbzrle: 0, compressed: 0, unchanged: 0 };
  return {
    transferred: bytes,
    ...counts,
    "normal-bytes": counts.normal * pageSize,
  };
}
