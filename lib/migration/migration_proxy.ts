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
 * Postcopy passes through as well: the discard commands and the PACKAGED
 * blob (device state, opaque) are forwarded as records, RAM after the
 * switch goes out as ZERO/PAGE only, and the stream ends at EOF (no
 * vmdesc). The pace follows QEMU's: `max-bandwidth` before the switch,
 * `max-postcopy-bandwidth` after it, and nothing the destination waits for
 * is held back (see {@linkcode MigrationProxy}).
 *
 * @module
 */

import {
  describeError,
  MigrationAbortedError,
  StreamFormatError,
  UnexpectedEndOfStreamError,
} from "../errors.ts";
import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import type { Transport } from "../transport/transport.ts";
import { MigrationDecoderStream } from "../wire/migration_decoder_stream.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import { ReturnPathDecoderStream } from "../wire/return_path_decoder_stream.ts";
import {
  directionStats,
  endpointReadable,
  endpointWritable,
  ErrorSides,
} from "./_proxy_endpoints.ts";
import { ProxyEncoderStream } from "./_proxy_encoder_stream.ts";
import { ProxyPacer } from "./_proxy_pacer.ts";
import type {
  MigrationCapabilities,
  MigrationParameters,
} from "./migration_parameters.ts";
import type { MigrationProxyInfo } from "./migration_proxy_info.ts";
import { MigrationState, type MigrationStatus } from "./migration_state.ts";
import { ReencodeStream } from "./reencode_stream.ts";
import type { DestinationMultifdOptions } from "./destination_migration.ts";
import {
  mergeMultifdChannels,
  openProxyConnections,
  type ProxyConnections,
  splitMultifdChannels,
} from "./_proxy_multifd.ts";

/** multifd on the sides of a {@linkcode MigrationProxy}. */
export interface ProxyMultifdOptions {
  /** The source's multifd settings; unset: the source has multifd off. */
  source?: DestinationMultifdOptions;
  /** The destination's; unset: one stream to the destination. */
  destination?: DestinationMultifdOptions;
}

/** Options for {@linkcode MigrationProxy.run}. */
export interface ProxyRunOptions {
  /** With multifd on the source's side: accepts its channel connections. */
  accept?: () => Promise<Transport>;
  /** With multifd on the destination's side: opens its channel connections. */
  connect?: () => Promise<Transport>;
}

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
   * of everything sent to the destination), `max-postcopy-bandwidth` (the
   * same once the source switched to postcopy; 0 = no limit, as in QEMU)
   * and `xbzrle-cache-size`.
   *
   * @default {{}} (no rate limit: a proxy adds none unless asked; a 64 MiB cache)
   */
  parameters?: Partial<MigrationParameters>;
  /** Time source for the rate limit and the times. Defaults to the real clock. */
  clock?: Clock;
  /** multifd on the source's side and on the destination's, each its own. */
  multifd?: ProxyMultifdOptions;
}

/**
 * Forwards a live migration from a source to a destination, re-encoding
 * its RAM: XBZRLE on or off independently of the source, zero-page
 * detection, CONTINUE, and `max-bandwidth` on what it sends.
 *
 * Postcopy (QEMU's `postcopy-ram` on both ends) goes through too. From the
 * PACKAGED command on, pages go out as ZERO or PAGE (a postcopy
 * destination refuses XBZRLE), the next page names its block again (the
 * source forgets its block at the switch, and so does the proxy), and
 * `max-postcopy-bandwidth` replaces `max-bandwidth`. Nothing the
 * destination waits for is held back by the limit: commands pass at once,
 * and when the destination requests a page (a fault, relayed to the source
 * as it comes) the limit is lifted until that page went out, because it
 * is somewhere behind bytes that must go first. Postcopy-preempt needs a
 * second connection and is not proxied; neither is postcopy recovery (a
 * cut connection fails the proxy).
 *
 * The proxy completes once the whole stream (to the end of the vmdesc
 * trailer, or EOF in postcopy) went to the destination and the destination
 * closed its side (after SHUT, when the source opened a return path; a
 * postcopy destination must have answered SHUT 0). It fails, closing
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
  readonly #options: MigrationProxyOptions;
  readonly #clock: Clock;
  readonly #xbzrle: boolean;
  readonly #cacheSize: number | undefined;
  readonly #maxBandwidth: number;
  readonly #maxPostcopyBandwidth: number;
  readonly #state = new MigrationState("destination");
  readonly #abort = new AbortController();
  readonly #sides = new ErrorSides();
  #startTime = 0;
  #endTime: number | undefined;
  #bytesIn = 0;
  #bytesOut = 0;
  #returnPath: NonNullable<MigrationProxyInfo["return-path"]> = {
    transferred: 0,
    messages: 0,
  };
  /** Whether the source's stream reached its end. */
  #sourceEnded = false;
  #reencode: ReencodeStream | undefined;
  #decoder: MigrationDecoderStream | undefined;
  #pacer: ProxyPacer | undefined;
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
    this.#options = options;
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#xbzrle = options.capabilities?.xbzrle ?? false;
    this.#cacheSize = options.parameters?.["xbzrle-cache-size"];
    this.#maxBandwidth = options.parameters?.["max-bandwidth"] ?? 0;
    this.#maxPostcopyBandwidth =
      options.parameters?.["max-postcopy-bandwidth"] ?? 0;
    for (
      const [name, value] of [
        ["max-bandwidth", this.#maxBandwidth],
        ["max-postcopy-bandwidth", this.#maxPostcopyBandwidth],
      ] as const
    ) {
      if (!Number.isSafeInteger(value) || value < 0) {
        throw new RangeError(
          `Cannot construct MigrationProxy as ${name} must be a non-negative integer: received ${value}`,
        );
      }
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
      "max-postcopy-bandwidth": this.#maxPostcopyBandwidth,
    };
    if (this.status === "none" || this.status === "setup") return info;
    const ms = (this.#endTime ?? this.#clock.now()) - this.#startTime;
    info["total-time"] = Math.round(ms);
    info.mbps = ms > 0 ? this.#bytesOut * 8 / 1000 / ms : 0;
    const stats = this.#reencode?.stats();
    const pageSize = this.#decoder?.decoder.pageSize ?? 4096;
    info.received = directionStats(stats?.received, {
      bytes: this.#bytesIn,
      pageSize,
    });
    info.sent = directionStats(stats?.sent, {
      bytes: this.#bytesOut,
      pageSize,
    });
    info.rounds = stats?.rounds ?? 0;
    if (stats?.["xbzrle-cache"]) info["xbzrle-cache"] = stats["xbzrle-cache"];
    const tail = this.#decoder?.decoder.deviceTail;
    if (tail) info["device-tail"] = { ...tail };
    info["return-path"] = { ...this.#returnPath };
    if (this.#pacer?.postcopy) {
      info["postcopy-requests"] = this.#pacer.requests;
    }
    const failure = this.#failure;
    if (this.status === "failed" && failure) {
      info["error-desc"] = describeError(failure.error);
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
    options: ProxyRunOptions = {},
  ): Promise<MigrationProxyInfo> {
    this.#start(source, destination);
    const multifd = this.#options.multifd ?? {};
    await openProxyConnections({ source, destination }, {
      ...multifd,
      accept: options.accept,
      connect: options.connect,
      clock: this.#clock,
    }).then((c) => {
      this.#transports.push(...c.sourceChannels, ...c.destinationChannels);
      return Promise.all([
        this.#forward(c),
        this.#relayReturnPath(c.destination, c.source),
      ]);
    }, (error) => this.#fail(error, "transport"));
    await this.#closeAll();
    this.#endTime = this.#clock.now();
    this.#checkShut();
    return this.#finish();
  }

  /** From `none` or `setup` to `active`. */
  #start(source: Transport, destination: Transport): void {
    this.listen();
    if (this.status !== "setup") {
      throw new TypeError(
        `Cannot run the proxy: it is in "${this.status}"`,
      );
    }
    this.#transports = [source, destination];
    this.#startTime = this.#clock.now();
    this.#state.moveTo("active");
  }

  /**
   * The stream, source to destination: decoded, its RAM re-encoded,
   * encoded again, paced.
   */
  #forward(c: ProxyConnections): Promise<void> {
    const { source, destination } = c;
    const decoder = new MigrationDecoderStream({ deviceState: "opaque" });
    const reencode = new ReencodeStream({
      xbzrle: this.#xbzrle,
      ...(this.#cacheSize === undefined
        ? {}
        : { xbzrleCacheSize: this.#cacheSize }),
    });
    const pacer = new ProxyPacer({
      bytesPerSecond: this.#maxBandwidth,
      postcopyBytesPerSecond: this.#maxPostcopyBandwidth,
      pageSize: () => decoder.decoder.pageSize,
      blockLength: (block) => decoder.decoder.blocks.get(block)?.usedLength,
      clock: this.#clock,
      signal: this.#abort.signal,
    });
    this.#decoder = decoder;
    this.#reencode = reencode;
    this.#pacer = pacer;
    let records = endpointReadable(source.readable, {
      onBytes: (n) => this.#bytesIn += n,
      onError: (error) => this.#sides.tag(error, "source"),
    }).pipeThrough(decoder);
    const multifd = this.#options.multifd;
    if (multifd?.source) {
      records = mergeMultifdChannels(records, c.sourceChannels, multifd.source);
    }
    records = records.pipeThrough(this.#endOfStreamTap(pacer))
      .pipeThrough(reencode);
    if (multifd?.destination) {
      records = records.pipeThrough(
        splitMultifdChannels(c.destinationChannels, {
          ...multifd.destination,
          parameters: this.#options.parameters,
          limiter: pacer.limiter,
          signal: this.#abort.signal,
        }),
      );
    }
    return records
      .pipeThrough(new ProxyEncoderStream(pacer, pacer.chunkBytes))
      .pipeThrough(pacer.limiter)
      .pipeTo(
        endpointWritable(destination.writable, {
          onBytes: (n) => this.#bytesOut += n,
          onError: (error) => this.#sides.tag(error, "destination"),
          // A destination that has the whole stream may close first; its
          // SHUT (with a return path) says whether it loaded it.
          closeMayFail: true,
        }),
        { signal: this.#abort.signal },
      )
      .catch((error) => this.#fail(error, this.#classify(error)));
  }

  /** Notes when the source's stream ended. */
  #endOfStreamTap(
    pacer: ProxyPacer,
  ): TransformStream<MigrationRecord[], MigrationRecord[]> {
    return new TransformStream({
      transform: (batch, controller) => {
        // A postcopy stream ends at EOF (no vmdesc follows), while the
        // source keeps its side open until the destination's SHUT reached
        // it; the destination may close first.
        if (pacer.postcopy && batch.some((r) => r.type === "eof")) {
          this.#sourceEnded = true;
        }
        controller.enqueue(batch);
      },
      flush: () => {
        this.#sourceEnded = true;
      },
    });
  }

  /**
   * The return path, destination to source, as it comes; watched for SHUT
   * and page requests on the way.
   */
  #relayReturnPath(destination: Transport, source: Transport): Promise<void> {
    const [toSource, watched] = endpointReadable(destination.readable, {
      onBytes: (n) => this.#returnPath.transferred += n,
      onError: (error) => this.#sides.tag(error, "destination"),
    }).tee();
    void this.#watchReturnPath(watched);
    return toSource
      .pipeTo(
        endpointWritable(source.writable, {
          onBytes: () => {},
          onError: (error) => this.#sides.tag(error, "source"),
        }),
        { signal: this.#abort.signal },
      )
      .then(() => {
        if (!this.#sourceEnded) {
          this.#fail(
            new Error(
              `the destination closed the connection after ${this.#bytesOut} bytes, before the end of the stream`,
            ),
            "destination-failed",
          );
        }
      }, (error) => {
        const reason = this.#classify(error);
        // A source that leaves once its stream ended has had its answer.
        if (this.#sourceEnded && reason === "source-failed") return;
        this.#fail(error, this.#sourceEnded ? reason : "destination-failed");
      });
  }

  /** Whether the destination said it loaded the whole stream. */
  #checkShut(): void {
    if (this.#failure !== undefined) return;
    const shut = this.#returnPath.shut;
    if ((shut ?? 0) !== 0) {
      this.#failure = {
        error: new Error(
          `the destination answered SHUT ${shut}: it could not load the stream`,
        ),
        reason: "destination-failed",
      };
    } else if (this.#pacer?.postcopy && shut === undefined) {
      // The guest runs on the destination: only SHUT 0 says it has all.
      this.#failure = {
        error: new Error(
          "the postcopy destination closed the connection without SHUT",
        ),
        reason: "destination-failed",
      };
    }
  }

  /** `completed`, or `failed` and the error to reject with. */
  #finish(): MigrationProxyInfo {
    const failure = this.#failure;
    if (failure !== undefined) {
      this.#state.moveTo("failed");
      throw new MigrationAbortedError(
        `Cannot proxy the migration: ${describeError(failure.error)}`,
        { reason: ABORT_REASON[failure.reason], cause: failure.error },
      );
    }
    this.#state.moveTo("completed");
    return this.query();
  }

  /** Which side a failure is to be blamed on. */
  #classify(error: unknown): FailureReason {
    if (error instanceof UnexpectedEndOfStreamError) return "source-failed";
    if (error instanceof StreamFormatError) return "stream-error";
    const side = this.#sides.sideOf(error);
    return side === undefined ? "transport" : `${side}-failed`;
  }

  async #watchReturnPath(bytes: ReadableStream<Uint8Array>): Promise<void> {
    let lastBlock: string | undefined;
    try {
      for await (
        const message of bytes.pipeThrough(new ReturnPathDecoderStream())
      ) {
        this.#returnPath.messages++;
        if (message.type === "SHUT") this.#returnPath.shut = message.value;
        else if (message.type === "REQ_PAGES_ID") {
          lastBlock = message.block;
          this.#pacer?.requested(message.block, message.start, message.length);
        } else if (message.type === "REQ_PAGES" && lastBlock !== undefined) {
          this.#pacer?.requested(lastBlock, message.start, message.length);
        }
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
