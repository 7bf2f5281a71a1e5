/**
 * How a {@linkcode MigrationProxy} paces what it sends: QEMU's limits,
 * lifted for whatever the destination waits for. Private to the proxy.
 *
 * ```
 * ProxyEncoderStream ──chunk n──► limiter (RateLimitStream) ──► destination
 *    │ encoded(record): a command, or a requested page?            │
 *    │   → lift the limit until chunk n passed                     │ size(chunk n):
 *    ▼                                                             ▼ restore the limit
 * return path: REQ_PAGES(_ID) → requested(): lift until that page passed
 * ```
 *
 * @module
 */

import { RateLimitStream } from "../streams/rate_limit_stream.ts";
import type { Clock } from "../streams/clock.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";

/** Options for {@linkcode ProxyPacer}. */
export interface ProxyPacerOptions {
  /** The limit before the switch to postcopy (0: none). */
  bytesPerSecond: number;
  /** The limit once in postcopy (0: none). */
  postcopyBytesPerSecond: number;
  /** The target page size of the stream. */
  pageSize: () => number;
  /** The length in bytes of a RAM block, once announced. */
  blockLength: (block: string) => number | undefined;
  /** Time source of the limiter. */
  clock: Clock;
  /** Aborts the limiter's waits. */
  signal: AbortSignal;
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
export class ProxyPacer {
  /**
   * The stage that applies the limit; it asks the pacer what each chunk
   * counts for.
   */
  readonly limiter: RateLimitStream;
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

  /**
   * Constructs a new instance, with its limiter.
   *
   * @param options The limits, the stream's geometry, the clock.
   */
  constructor(options: ProxyPacerOptions) {
    this.limiter = new RateLimitStream({
      bytesPerSecond: options.bytesPerSecond,
      clock: options.clock,
      signal: options.signal,
      size: (chunk) => this.size(chunk),
    });
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
   * How many bytes the encoder gathers per chunk: smaller chunks keep a
   * low limit smooth (a window's budget is a tenth of the limit per
   * second).
   */
  get chunkBytes(): number {
    const lowest = Math.min(
      ...[this.#precopyLimit, this.#postcopyLimit].filter((n) => n > 0),
    );
    return lowest === Infinity ? 1024 * 1024 : Math.max(
      4096,
      Math.min(1024 * 1024, Math.floor(lowest / 40)),
    );
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
    if (this.#pendingPages > 0) this.limiter.bytesPerSecond = 0;
  }

  /**
   * The bytes a chunk counts for in the limiter, called as it passes: ends
   * a lift once its last urgent chunk passed.
   */
  size(bytes: Uint8Array): number {
    this.#passedChunk = this.#chunks.get(bytes) ?? this.#passedChunk;
    if (this.limiter.bytesPerSecond === 0) {
      const limit = this.#postcopy ? this.#postcopyLimit : this.#precopyLimit;
      if (
        limit > 0 && this.#passedChunk >= this.#liftUntil &&
        this.#pendingPages === 0
      ) {
        this.limiter.bytesPerSecond = limit; // counts from the next chunk
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
    this.limiter.bytesPerSecond = 0;
  }
}
