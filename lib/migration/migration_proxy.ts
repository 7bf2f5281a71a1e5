/**
 * A migration proxy: sits between a source and a destination (QEMU or
 * livemig), decodes the stream, re-encodes every RAM record with livemig's
 * own stages and passes everything else through; relays the return path
 * the other way.
 *
 * ```
 * source ──► count ─► MigrationDecoderStream ─► ReencodeStream ─► MigrationEncoderStream
 *                       (device tail: opaque)     (ZERO/PAGE/XBZRLE)      │
 *                                                                         ▼
 * destination ◄────────────────────── count ◄─ RateLimitStream (max-bandwidth)
 *
 * destination ──► count, watch SHUT ──► source          (return path, as it comes)
 * ```
 *
 * Header, CONFIGURATION, commands and section framing are re-encoded to
 * the same bytes; the device tail (from the first device section to the
 * vmdesc trailer) is forwarded chunk by chunk as it arrives. A stream that
 * does not decode stops the proxy at the bad record: nothing from there on
 * is forwarded and both connections are closed, so the destination sees a
 * cut stream and fails.
 *
 * @module
 */

import {
  MigrationAbortedError,
  StreamFormatError,
  UnexpectedEndOfStreamError,
} from "../errors.ts";
import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import { RateLimitStream } from "../streams/rate_limit_stream.ts";
import type { Transport } from "../transport/transport.ts";
import type { DeviceTailSummary } from "../wire/migration_decoder.ts";
import { MigrationDecoderStream } from "../wire/migration_decoder_stream.ts";
import { MigrationEncoderStream } from "../wire/migration_encoder_stream.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import { ReturnPathDecoderStream } from "../wire/return_path_decoder_stream.ts";
import type { XbzrleCacheStats } from "../ram/xbzrle_page_encoder.ts";
import type {
  MigrationCapabilities,
  MigrationParameters,
} from "./migration_parameters.ts";
import { MigrationState, type MigrationStatus } from "./migration_state.ts";
import { type ReencodedPages, ReencodeStream } from "./reencode_stream.ts";

/** Options for {@linkcode MigrationProxy}. */
export interface MigrationProxyOptions {
  /**
   * Capabilities of the re-encoded stream. Only `xbzrle` changes what the
   * proxy sends; the source's own capabilities pass through.
   *
   * @default {{}} (XBZRLE off)
   */
  capabilities?: Partial<MigrationCapabilities>;
  /**
   * Parameters of the re-encoded stream: `max-bandwidth` (bytes per second
   * of everything sent to the destination) and `xbzrle-cache-size`.
   *
   * @default {{}} (no rate limit: a proxy adds none unless asked; a 64 MiB cache)
   */
  parameters?: Partial<MigrationParameters>;
  /** Time source for the rate limit and the times. Defaults to the real clock. */
  clock?: Clock;
}

/** What went through one direction of a {@linkcode MigrationProxy}. */
export interface ProxyStreamStats extends ReencodedPages {
  /** Bytes. */
  transferred: number;
  /** `normal` × the page size. */
  "normal-bytes": number;
}

/** What the proxy did, shaped like QEMU's `query-migrate` reply. */
export interface MigrationProxyInfo {
  /** `none`, `setup` (waiting), `active`, `completed` or `failed`. */
  status: MigrationStatus;
  /** Milliseconds since the source connected (running) or until the end. */
  "total-time"?: number;
  /** Average Mbit/s sent to the destination. */
  mbps?: number;
  /** The limit applied to what is sent, bytes per second (0: none). */
  "max-bandwidth": number;
  /** What came from the source. */
  received?: ProxyStreamStats;
  /** What went to the destination. */
  sent?: ProxyStreamStats;
  /** Complete rounds over RAM seen in the source's stream. */
  rounds?: number;
  /** The re-encoder's XBZRLE cache counters, when XBZRLE is on. */
  "xbzrle-cache"?: XbzrleCacheStats;
  /** The device tail, once it passed (validated through the vmdesc). */
  "device-tail"?: DeviceTailSummary;
  /** The return path: bytes and messages relayed to the source. */
  "return-path"?: {
    /** Bytes relayed. */
    transferred: number;
    /** Messages seen. */
    messages: number;
    /** The value of the destination's SHUT, once sent (0 = loaded). */
    shut?: number;
  };
  /** What went wrong, once failed. */
  "error-desc"?: string;
  /** Byte offset in the source's stream where decoding failed, if it did. */
  "error-offset"?: number;
}

/**
 * Forwards a live migration from a source to a destination, re-encoding
 * its RAM: XBZRLE on or off independently of the source, zero-page
 * detection, CONTINUE, and `max-bandwidth` on what it sends.
 *
 * The proxy completes once the whole stream (to the end of the vmdesc
 * trailer) went to the destination and the destination closed its side
 * (after SHUT, when the source opened a return path). It fails, closing
 * both connections, when the source's stream does not decode or ends
 * early, when the destination goes away before the end, or when the
 * destination answers SHUT with an error. Status changes are dispatched as
 * `"migration"` events (`detail.status`), as QEMU's `MIGRATION` event.
 *
 * @example Usage
 * ```ts
 * import {
 *   createMemoryTransportPair, DestinationMigration, MigrationProxy, SimulatedGuest, SourceMigration,
 * } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const guest = new SimulatedGuest({ ramBytes: 64 * 4096, workload: { kind: "fill" }, running: false });
 * const [sourceEnd, proxyIn] = createMemoryTransportPair();
 * const [proxyOut, destinationEnd] = createMemoryTransportPair();
 * const proxy = new MigrationProxy({ capabilities: { xbzrle: true } });
 * const destination = new DestinationMigration({ autostart: false });
 * const [, info] = await Promise.all([
 *   new SourceMigration(guest).migrate(sourceEnd),
 *   proxy.run(proxyIn, proxyOut),
 *   destination.incoming(destinationEnd),
 * ]);
 * assert.equal(info.status, "completed");
 * assert.equal(info.sent?.normal, 64);
 * assert.equal(destination.status, "completed");
 * ```
 */
export class MigrationProxy extends EventTarget {
  readonly #clock: Clock;
  readonly #xbzrle: boolean;
  readonly #cacheSize: number | undefined;
  readonly #maxBandwidth: number;
  readonly #state = new MigrationState("destination");
  readonly #abort = new AbortController();
  #startTime = 0;
  #endTime: number | undefined;
  #bytesIn = 0;
  #bytesOut = 0;
  #returnPath = { transferred: 0, messages: 0 } as {
    transferred: number;
    messages: number;
    shut?: number;
  };
  #reencode: ReencodeStream | undefined;
  #decoder: MigrationDecoderStream | undefined;
  #failure: { error: unknown; reason: FailureReason } | undefined;
  #transports: Transport[] = [];

  /**
   * Constructs a new instance in status `none`.
   *
   * @param options XBZRLE, the rate limit, the clock.
   * @throws {RangeError} If `max-bandwidth` or `xbzrle-cache-size` is invalid.
   */
  constructor(options: MigrationProxyOptions = {}) {
    super();
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#xbzrle = options.capabilities?.xbzrle ?? false;
    this.#cacheSize = options.parameters?.["xbzrle-cache-size"];
    this.#maxBandwidth = options.parameters?.["max-bandwidth"] ?? 0;
    if (!Number.isSafeInteger(this.#maxBandwidth) || this.#maxBandwidth < 0) {
      throw new RangeError(
        `Cannot construct MigrationProxy as max-bandwidth must be a non-negative integer: received ${this.#maxBandwidth}`,
      );
    }
    const cacheSize = this.#cacheSize;
    if (
      cacheSize !== undefined &&
      (!Number.isSafeInteger(cacheSize) || cacheSize < 4096 ||
        !Number.isInteger(Math.log2(cacheSize)))
    ) {
      throw new RangeError(
        `Cannot construct MigrationProxy as xbzrle-cache-size must be a power of two of at least 4096 bytes: received ${cacheSize}`,
      );
    }
    this.#state.addEventListener("migration", (event) => {
      this.dispatchEvent(
        new CustomEvent("migration", {
          detail: (event as CustomEvent).detail,
        }),
      );
    });
  }

  /** The current status. */
  get status(): MigrationStatus {
    return this.#state.status;
  }

  /**
   * Marks the proxy as waiting for its source: status `setup`.
   * {@linkcode MigrationProxy.run} does it when not done yet.
   */
  listen(): void {
    if (this.status === "none") this.#state.moveTo("setup");
  }

  /**
   * Stops a running proxy: both connections are closed and
   * {@linkcode MigrationProxy.run} rejects.
   *
   * @param reason Why.
   */
  abort(reason = "the proxy was aborted"): void {
    this.#fail(new Error(reason), "cancelled");
  }

  /**
   * What the proxy did so far.
   *
   * @returns The statistics.
   */
  query(): MigrationProxyInfo {
    const info: MigrationProxyInfo = {
      status: this.status,
      "max-bandwidth": this.#maxBandwidth,
    };
    if (this.status === "none" || this.status === "setup") return info;
    const ms = (this.#endTime ?? this.#clock.now()) - this.#startTime;
    info["total-time"] = Math.round(ms);
    info.mbps = ms > 0 ? this.#bytesOut * 8 / 1000 / ms : 0;
    const stats = this.#reencode?.stats();
    const pageSize = this.#decoder?.decoder.pageSize ?? 4096;
    info.received = directionStats(
      this.#bytesIn,
      stats?.received,
      pageSize,
    );
    info.sent = directionStats(this.#bytesOut, stats?.sent, pageSize);
    info.rounds = stats?.rounds ?? 0;
    if (stats?.["xbzrle-cache"]) info["xbzrle-cache"] = stats["xbzrle-cache"];
    const tail = this.#decoder?.decoder.deviceTail;
    if (tail) info["device-tail"] = { ...tail };
    info["return-path"] = { ...this.#returnPath };
    const failure = this.#failure;
    if (this.status === "failed" && failure) {
      info["error-desc"] = describe(failure.error);
      if (failure.error instanceof StreamFormatError) {
        info["error-offset"] = failure.error.offset;
      }
    }
    return info;
  }

  /**
   * Forwards the migration arriving on `source` to `destination`, and the
   * destination's return path back. Both transports are closed at the end.
   *
   * @param source The connection from the migration source.
   * @param destination The connection to the migration destination.
   * @returns The final statistics, status `completed`.
   * @throws {MigrationAbortedError} When the stream is bad or cut, a side
   *   goes away, or the destination reports an error; the status is then
   *   `failed` and {@linkcode MigrationProxy.query} tells more (with the
   *   byte offset of a decoding error).
   */
  async run(
    source: Transport,
    destination: Transport,
  ): Promise<MigrationProxyInfo> {
    this.listen();
    if (this.status !== "setup") {
      throw new TypeError(
        `Cannot run the proxy: it is in "${this.status}"`,
      );
    }
    this.#transports = [source, destination];
    this.#startTime = this.#clock.now();
    this.#state.moveTo("active");
    let sourceEnded = false;
    const decoder = new MigrationDecoderStream({ deviceState: "opaque" });
    const reencode = new ReencodeStream({
      xbzrle: this.#xbzrle,
      ...(this.#cacheSize === undefined
        ? {}
        : { xbzrleCacheSize: this.#cacheSize }),
    });
    this.#decoder = decoder;
    this.#reencode = reencode;
    const limiter = new RateLimitStream({
      bytesPerSecond: this.#maxBandwidth,
      clock: this.#clock,
      signal: this.#abort.signal,
    });
    // Smaller chunks keep a low limit smooth: a window's budget is a tenth
    // of the limit per second.
    const chunkBytes = this.#maxBandwidth === 0 ? 1024 * 1024 : Math.max(
      4096,
      Math.min(1024 * 1024, Math.floor(this.#maxBandwidth / 40)),
    );
    const side = new WeakMap<object, Side>();
    const classify = (error: unknown): FailureReason => {
      if (error instanceof UnexpectedEndOfStreamError) return "source-failed";
      if (error instanceof StreamFormatError) return "stream-error";
      const which = typeof error === "object" && error !== null
        ? side.get(error)
        : undefined;
      return which === undefined ? "transport" : `${which}-failed`;
    };
    const forward = endpointReadable(source.readable, {
      onBytes: (n) => this.#bytesIn += n,
      onError: (error) => tag(side, error, "source"),
    })
      .pipeThrough(decoder)
      .pipeThrough(
        new TransformStream<MigrationRecord[], MigrationRecord[]>({
          flush: () => {
            sourceEnded = true;
          },
        }),
      )
      .pipeThrough(reencode)
      .pipeThrough(new MigrationEncoderStream({ chunkBytes }))
      .pipeThrough(limiter)
      .pipeTo(
        endpointWritable(destination.writable, {
          onBytes: (n) => this.#bytesOut += n,
          onError: (error) => tag(side, error, "destination"),
          // A destination that has the whole stream may close first; its
          // SHUT (with a return path) says whether it loaded it.
          closeMayFail: true,
        }),
        { signal: this.#abort.signal },
      )
      .catch((error) => this.#fail(error, classify(error)));
    const [toSource, watched] = endpointReadable(destination.readable, {
      onBytes: (n) => this.#returnPath.transferred += n,
      onError: (error) => tag(side, error, "destination"),
    }).tee();
    void this.#watchReturnPath(watched);
    const backward = toSource
      .pipeTo(
        endpointWritable(source.writable, {
          onBytes: () => {},
          onError: (error) => tag(side, error, "source"),
        }),
        { signal: this.#abort.signal },
      )
      .then(() => {
        if (!sourceEnded) {
          this.#fail(
            new Error(
              `the destination closed the connection after ${this.#bytesOut} bytes, before the end of the stream`,
            ),
            "destination-failed",
          );
        }
      }, (error) => {
        const reason = classify(error);
        // A source that leaves once its stream ended has had its answer.
        if (sourceEnded && reason === "source-failed") return;
        this.#fail(error, sourceEnded ? reason : "destination-failed");
      });
    await Promise.all([forward, backward]);
    await this.#closeAll();
    this.#endTime = this.#clock.now();
    if (this.#failure === undefined && (this.#returnPath.shut ?? 0) !== 0) {
      this.#failure = {
        error: new Error(
          `the destination answered SHUT ${this.#returnPath.shut}: it could not load the stream`,
        ),
        reason: "destination-failed",
      };
    }
    const failure = this.#failure;
    if (failure !== undefined) {
      this.#state.moveTo("failed");
      throw new MigrationAbortedError(
        `Cannot proxy the migration: ${describe(failure.error)}`,
        { reason: ABORT_REASON[failure.reason], cause: failure.error },
      );
    }
    this.#state.moveTo("completed");
    return this.query();
  }

  async #watchReturnPath(bytes: ReadableStream<Uint8Array>): Promise<void> {
    try {
      for await (
        const message of bytes.pipeThrough(new ReturnPathDecoderStream())
      ) {
        this.#returnPath.messages++;
        if (message.type === "SHUT") this.#returnPath.shut = message.value;
      }
    } catch {
      // Only watched: the bytes go to the source whatever they are.
    }
  }

  #fail(error: unknown, reason: FailureReason): void {
    if (this.#failure !== undefined) return;
    if (this.status !== "active" && this.status !== "setup") return;
    this.#failure = { error, reason };
    this.#abort.abort(error);
    void this.#closeAll();
  }

  async #closeAll(): Promise<void> {
    await Promise.all(
      this.#transports.map((transport) => transport.close().catch(() => {})),
    );
  }
}

type FailureReason =
  | "stream-error"
  | "source-failed"
  | "destination-failed"
  | "transport"
  | "cancelled";

const ABORT_REASON = {
  "stream-error": "stream-error",
  "source-failed": "source-failed",
  "destination-failed": "destination-failed",
  "transport": "transport-failed",
  "cancelled": "cancelled",
} as const;

type Side = "source" | "destination";

function tag(sides: WeakMap<object, Side>, error: unknown, side: Side): void {
  if (typeof error === "object" && error !== null && !sides.has(error)) {
    sides.set(error, side);
  }
}

/** Callbacks of the streams at a transport's edge. */
interface EndpointCallbacks {
  /** Bytes that went through. */
  onBytes(bytes: number): void;
  /** The transport failed (reported before the error travels on). */
  onError(error: unknown): void;
  /** Whether a failure to close (after every write went through) is ignored. */
  closeMayFail?: boolean;
}

/** A transport's readable, counted, with its errors reported. */
function endpointReadable(
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

/** A transport's writable, counted, with its errors reported. */
function endpointWritable(
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

function directionStats(
  bytes: number,
  pages: ReencodedPages | undefined,
  pageSize: number,
): ProxyStreamStats {
  const counts = pages ??
    { duplicate: 0, normal: 0, xbzrle: 0, compressed: 0, unchanged: 0 };
  return {
    transferred: bytes,
    ...counts,
    "normal-bytes": counts.normal * pageSize,
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
