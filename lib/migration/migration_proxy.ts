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
  MigrationAbortedError,
  StreamFormatError,
  UnexpectedEndOfStreamError,
} from "../errors.ts";
import { ByteWriter } from "../bytes/byte_writer.ts";
import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import { RateLimitStream } from "../streams/rate_limit_stream.ts";
import type { Transport } from "../transport/transport.ts";
import type { DeviceTailSummary } from "../wire/migration_decoder.ts";
import { MigrationDecoderStream } from "../wire/migration_decoder_stream.ts";
import { MigrationEncoder } from "../wire/migration_encoder.ts";
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
   * of everything sent to the destination), `max-postcopy-bandwidth` (the
   * same once the source switched to postcopy; 0 = no limit, as in QEMU)
   * and `xbzrle-cache-size`.
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
  /** The limit applied once in postcopy, bytes per second (0: none). */
  "max-postcopy-bandwidth": number;
  /**
   * Page requests (REQ_PAGES_ID, REQ_PAGES) the destination sent on the
   * return path: its postcopy page faults, as QEMU's
   * `ram.postcopy-requests` counts them.
   */
  "postcopy-requests"?: number;
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
  readonly #clock: Clock;
  readonly #xbzrle: boolean;
  readonly #cacheSize: number | undefined;
  readonly #maxBandwidth: number;
  readonly #maxPostcopyBandwidth: number;
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
    if (this.#pacer?.postcopy) {
      info["postcopy-requests"] = this.#pacer.requests;
    }
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
    // deno-lint-ignore prefer-const
    let pacer: ProxyPacer;
    const limiter = new RateLimitStream({
      bytesPerSecond: this.#maxBandwidth,
      clock: this.#clock,
      signal: this.#abort.signal,
      size: (chunk) => pacer.size(chunk),
    });
    pacer = new ProxyPacer(limiter, {
      bytesPerSecond: this.#maxBandwidth,
      postcopyBytesPerSecond: this.#maxPostcopyBandwidth,
      pageSize: () => decoder.decoder.pageSize,
      blockLength: (block) => decoder.decoder.blocks.get(block)?.usedLength,
    });
    this.#pacer = pacer;
    // Smaller chunks keep a low limit smooth: a window's budget is a tenth
    // of the limit per second.
    const lowest = Math.min(
      ...[this.#maxBandwidth, this.#maxPostcopyBandwidth].filter((n) => n > 0),
    );
    const chunkBytes = lowest === Infinity ? 1024 * 1024 : Math.max(
      4096,
      Math.min(1024 * 1024, Math.floor(lowest / 40)),
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
          transform: (batch, controller) => {
            // A postcopy stream ends at EOF (no vmdesc follows), while the
            // source keeps its side open until the destination's SHUT
            // reached it; the destination may close first.
            if (pacer.postcopy && batch.some((r) => r.type === "eof")) {
              sourceEnded = true;
            }
            controller.enqueue(batch);
          },
          flush: () => {
            sourceEnded = true;
          },
        }),
      )
      .pipeThrough(reencode)
      .pipeThrough(proxyEncoderStream(pacer, chunkBytes))
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
    const shut = this.#returnPath.shut;
    if (this.#failure === undefined && (shut ?? 0) !== 0) {
      this.#failure = {
        error: new Error(
          `the destination answered SHUT ${shut}: it could not load the stream`,
        ),
        reason: "destination-failed",
      };
    } else if (
      this.#failure === undefined && pacer.postcopy && shut === undefined
    ) {
      // The guest runs on the destination: only SHUT 0 says it has all.
      this.#failure = {
        error: new Error(
          "the postcopy destination closed the connection without SHUT",
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

/** Options for {@linkcode ProxyPacer}. */
interface ProxyPacerOptions {
  /** The limit before the switch to postcopy (0: none). */
  bytesPerSecond: number;
  /** The limit once in postcopy (0: none). */
  postcopyBytesPerSecond: number;
  /** The target page size of the stream. */
  pageSize: () => number;
  /** The length in bytes of a RAM block, once announced. */
  blockLength: (block: string) => number | undefined;
}

/**
 * Paces what the proxy sends as QEMU paces its own stream: `max-bandwidth`
 * until the PACKAGED command (the switch to postcopy),
 * `max-postcopy-bandwidth` from there on, and nothing the destination
 * waits for waits behind the limit. Such data is somewhere behind bytes
 * already on their way (in the proxy, or still in the source's socket)
 * which must go first, so the limit is lifted until it went through:
 *
 * - a command, from when it is encoded (the destination acts on commands
 *   at once: PING, the discards, the package);
 * - a requested page, from when the request arrives (a page already
 *   encoded only lifts the limit if it is still before the limiter).
 *
 * Encoded chunks are numbered and cut right after urgent data, so the
 * limiter sees when the lift may end (the size it asks for tells it).
 * Bytes that pass while no limit applies count for nothing, so a limit
 * that comes back (or begins at the switch) starts without a debt; QEMU
 * likewise checks its limit per 100 ms window and forgets older bytes.
 */
class ProxyPacer {
  readonly #limiter: RateLimitStream;
  readonly #precopyLimit: number;
  readonly #postcopyLimit: number;
  readonly #pageSize: () => number;
  readonly #blockLength: (block: string) => number | undefined;
  readonly #chunks = new WeakMap<Uint8Array, number>();
  #nextChunk = 0;
  #passedChunk = -1;
  /** The last chunk that passes without waiting. */
  #liftUntil = -1;
  /** Pages requested and not yet encoded, by block. */
  readonly #pending = new Map<string, Set<number>>();
  #pendingPages = 0;
  /**
   * The chunk of each page encoded since the switch (postcopy sends each
   * page once), by block and page; -1 for none.
   */
  readonly #sent = new Map<string, Int32Array>();
  #postcopy = false;
  #requests = 0;

  constructor(limiter: RateLimitStream, options: ProxyPacerOptions) {
    this.#limiter = limiter;
    this.#precopyLimit = options.bytesPerSecond;
    this.#postcopyLimit = options.postcopyBytesPerSecond;
    this.#pageSize = options.pageSize;
    this.#blockLength = options.blockLength;
  }

  /** Whether the stream switched to postcopy (PACKAGED was encoded). */
  get postcopy(): boolean {
    return this.#postcopy;
  }

  /** Page requests seen on the return path. */
  get requests(): number {
    return this.#requests;
  }

  /**
   * Numbers a chunk the encoder hands on.
   *
   * @returns The chunk.
   */
  chunk(bytes: Uint8Array): Uint8Array {
    this.#chunks.set(bytes, this.#nextChunk++);
    return bytes;
  }

  /**
   * Notes that `record` went into the chunk being built.
   *
   * @returns Whether the chunk must be cut here (urgent data ends).
   */
  encoded(record: MigrationRecord): boolean {
    const chunk = this.#nextChunk;
    if (record.type === "command") {
      if (record.command === "PACKAGED") this.#postcopy = true;
      this.#lift(chunk);
      return true;
    }
    if (
      !this.#postcopy ||
      (record.type !== "ram-page" && record.type !== "ram-zero")
    ) return false;
    const sent = this.#sentPages(record.block);
    if (sent) sent[record.offset / this.#pageSize()] = chunk;
    if (this.#pending.get(record.block)?.delete(record.offset)) {
      this.#pendingPages--;
      this.#lift(chunk);
      return true;
    }
    return false;
  }

  /** A page request the destination sent (relayed to the source as is). */
  requested(block: string, start: number, length: number): void {
    this.#requests++;
    if (!this.#postcopy) return; // the source refuses it and fails
    const pageSize = this.#pageSize();
    // QEMU asks for one host page; a bogus length is the source's to refuse.
    const end = start + Math.min(length, 1024 * pageSize);
    for (
      let offset = start - start % pageSize;
      offset < end;
      offset += pageSize
    ) {
      const chunk = this.#sentPages(block)?.[offset / pageSize] ?? -1;
      if (chunk >= 0) {
        if (chunk > this.#passedChunk) this.#lift(chunk);
        continue;
      }
      let pending = this.#pending.get(block);
      if (pending === undefined) this.#pending.set(block, pending = new Set());
      if (!pending.has(offset)) {
        pending.add(offset);
        this.#pendingPages++;
      }
    }
    if (this.#pendingPages > 0) this.#limiter.bytesPerSecond = 0;
  }

  /**
   * The bytes a chunk counts for in the limiter, called as it passes: ends
   * a lift once its last urgent chunk passed.
   */
  size(bytes: Uint8Array): number {
    this.#passedChunk = this.#chunks.get(bytes) ?? this.#passedChunk;
    if (this.#limiter.bytesPerSecond === 0) {
      const limit = this.#postcopy ? this.#postcopyLimit : this.#precopyLimit;
      if (
        limit > 0 && this.#passedChunk >= this.#liftUntil &&
        this.#pendingPages === 0
      ) {
        this.#limiter.bytesPerSecond = limit; // counts from the next chunk
      }
      return 0;
    }
    return bytes.byteLength;
  }

  #sentPages(block: string): Int32Array | undefined {
    let pages = this.#sent.get(block);
    if (pages === undefined) {
      const length = this.#blockLength(block);
      if (length === undefined) return undefined;
      pages = new Int32Array(Math.ceil(length / this.#pageSize())).fill(-1);
      this.#sent.set(block, pages);
    }
    return pages;
  }

  #lift(chunk: number): void {
    this.#liftUntil = Math.max(this.#liftUntil, chunk);
    this.#limiter.bytesPerSecond = 0;
  }
}

/**
 * Encodes record batches into stream bytes (as `MigrationEncoderStream`
 * does), numbering its chunks for `pacer` and cutting one right after
 * urgent data; forgets the current block at the switch to postcopy, as
 * QEMU's source does before its discards.
 */
function proxyEncoderStream(
  pacer: ProxyPacer,
  chunkBytes: number,
): TransformStream<readonly MigrationRecord[], Uint8Array> {
  const encoder = new MigrationEncoder();
  const writer = new ByteWriter(Math.min(chunkBytes + 8192, 4 * 1024 * 1024));
  return new TransformStream({
    transform(batch, controller) {
      for (const record of batch) {
        if (record.type === "device-tail") {
          if (writer.length > 0) {
            controller.enqueue(pacer.chunk(writer.takeBytes()));
          }
          controller.enqueue(pacer.chunk(record.data));
          continue;
        }
        if (
          record.type === "command" &&
          (record.command === "POSTCOPY_RAM_DISCARD" ||
            record.command === "PACKAGED")
        ) {
          encoder.forgetCurrentBlock();
        }
        encoder.encodeRecord(record, writer);
        if (pacer.encoded(record) || writer.length >= chunkBytes) {
          controller.enqueue(pacer.chunk(writer.takeBytes()));
        }
      }
      if (writer.length > 0) {
        controller.enqueue(pacer.chunk(writer.takeBytes()));
      }
    },
  });
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
