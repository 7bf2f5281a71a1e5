import { type Clock, SYSTEM_CLOCK } from "./clock.ts";

/** One closed accounting window of a {@linkcode RateLimitStream}. */
export interface RateWindow {
  /** Bytes that passed in the window. */
  bytes: number;
  /** Length of the window in milliseconds. */
  ms: number;
  /** `bytes / ms`: the measured bandwidth in bytes per millisecond. */
  bytesPerMs: number;
}

/** Options for {@linkcode RateLimitStream}. */
export interface RateLimitStreamOptions<T = Uint8Array> {
  /**
   * The bytes a chunk counts for. Byte arrays count their length; give it
   * for other chunk types.
   *
   * @default {(chunk) => chunk.byteLength}
   */
  size?: (chunk: T) => number;
  /**
   * The limit in bytes per second (QEMU's `max-bandwidth`); 0 means no
   * limit. It can be changed while bytes flow.
   *
   * @default {0}
   */
  bytesPerSecond?: number;
  /**
   * The accounting window in milliseconds (QEMU's `BUFFER_DELAY`).
   *
   * @default {100}
   */
  windowMs?: number;
  /** Time source; tests pass a fake one. Defaults to the real clock. */
  clock?: Clock;
  /** Aborts a wait; the stream then errors with `signal.reason`. */
  signal?: AbortSignal;
  /** Called whenever a window closes, with what it measured. */
  onWindow?: (window: RateWindow) => void;
}

/**
 * Passes bytes on at no more than `bytesPerSecond`, the way QEMU limits a
 * migration: each window of 100 ms may carry `bytesPerSecond / 10` bytes;
 * once a window's budget is spent the stream waits until the window ends.
 * Chunks are never split, so whole records stay whole; a chunk larger than
 * a window's budget makes the wait last as many windows as its bytes need,
 * and the window that closes then measures the true average.
 *
 * Waiting inside `transform()` is what throttles the pipeline: the
 * writable side stops accepting chunks, so every stage upstream waits too.
 *
 * Urgent data (postcopy page requests) must not wait: after
 * {@linkcode RateLimitStream.passUntil} the stream does not wait again until
 * the given total byte count has passed, and a wait in progress ends at
 * once. Every closed window reports the measured bandwidth, which the
 * switchover decision uses (threshold = bandwidth × downtime-limit).
 *
 * @example Usage
 * ```ts
 * import { RateLimitStream } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * let now = 0;
 * const slept: number[] = [];
 * const clock = {
 *   now: () => now,
 *   sleep: (ms: number) => (slept.push(ms), now += ms, Promise.resolve()),
 * };
 * const limiter = new RateLimitStream({ bytesPerSecond: 10_000, clock });
 * await ReadableStream.from([new Uint8Array(600), new Uint8Array(600), new Uint8Array(600)])
 *   .pipeThrough(limiter).pipeTo(new WritableStream());
 * // 1000 bytes per 100 ms window: the second chunk overspends the first
 * // window, so the stream waits until 1200 bytes are paid for (120 ms).
 * assert.deepEqual(slept, [120]);
 * assert.equal(limiter.bytesPassed, 1800);
 * ```
 */
export class RateLimitStream<T = Uint8Array> extends TransformStream<T, T> {
  #bytesPerSecond: number;
  readonly #windowMs: number;
  readonly #clock: Clock;
  readonly #onWindow: ((window: RateWindow) => void) | undefined;
  #windowStart: number;
  #windowBytes = 0;
  #bytesPassed = 0;
  #urgentUntil = 0;
  #wake: AbortController | undefined;
  #last: RateWindow | undefined;

  /**
   * Constructs a new instance.
   *
   * @param options The limit, window, clock and callbacks.
   */
  constructor(options: RateLimitStreamOptions<T> = {}) {
    const {
      bytesPerSecond = 0,
      windowMs = 100,
      clock = SYSTEM_CLOCK,
      signal,
    } = options;
    checkRate(bytesPerSecond);
    if (!(windowMs > 0) || !Number.isFinite(windowMs)) {
      throw new RangeError(
        `Cannot construct RateLimitStream as windowMs must be a positive number: received ${windowMs}`,
      );
    }
    const size = options.size ??
      ((chunk: T) => (chunk as unknown as Uint8Array).byteLength);
    // deno-lint-ignore prefer-const
    let self: RateLimitStream<T>;
    super({
      transform: async (chunk, controller) => {
        self.#closeWindowIfDue();
        controller.enqueue(chunk);
        await self.#charge(size(chunk), signal);
      },
    });
    self = this;
    this.#bytesPerSecond = bytesPerSecond;
    this.#windowMs = windowMs;
    this.#clock = clock;
    this.#onWindow = options.onWindow;
    this.#windowStart = clock.now();
  }

  /** The limit in bytes per second; 0 means no limit. */
  get bytesPerSecond(): number {
    return this.#bytesPerSecond;
  }

  /**
   * Changes the limit; it applies from the current window on (0 lifts it,
   * as QEMU does for the final pass).
   *
   * @param value The new limit in bytes per second.
   */
  set bytesPerSecond(value: number) {
    checkRate(value);
    this.#bytesPerSecond = value;
    if (!this.#overBudget()) this.#wake?.abort();
  }

  /** Total bytes passed on so far. */
  get bytesPassed(): number {
    return this.#bytesPassed;
  }

  /** The last closed window, if any: its bytes, length and bandwidth. */
  get lastWindow(): RateWindow | undefined {
    return this.#last;
  }

  /**
   * Lets bytes pass without waiting until `totalBytes` have passed in all
   * (the end of urgent data already queued upstream), ending a wait in
   * progress.
   *
   * @param totalBytes The total byte count up to which nothing waits.
   */
  passUntil(totalBytes: number): void {
    this.#urgentUntil = Math.max(this.#urgentUntil, totalBytes);
    this.#wake?.abort();
  }

  /**
   * Closes the current window if it has lasted at least `windowMs`, so the
   * measured bandwidth stays current while nothing flows.
   *
   * @returns The window that closed, if one did.
   */
  measure(): RateWindow | undefined {
    return this.#closeWindowIfDue();
  }

  /**
   * Counts `bytes` that went another way to the same peer (QEMU 7.2 counts
   * multifd channel bytes against the main stream's limit), waiting while
   * the window is over its budget, as a chunk passing through would.
   *
   * @param bytes How many.
   * @param signal Rejects the wait with `signal.reason`.
   * @returns When the bytes may go.
   */
  async pass(bytes: number, signal?: AbortSignal): Promise<void> {
    this.#closeWindowIfDue();
    await this.#charge(bytes, signal);
  }

  async #charge(bytes: number, signal: AbortSignal | undefined): Promise<void> {
    this.#windowBytes += bytes;
    this.#bytesPassed += bytes;
    while (this.#overBudget()) {
      const wake = new AbortController();
      this.#wake = wake;
      // A chunk larger than the window's budget is paid off over the
      // windows it spans, so the average holds to the limit whatever
      // the chunk size; with chunks of one page this is QEMU's
      // "wait until the window ends".
      const until = this.#windowStart + this.#windowMs *
          Math.max(1, this.#windowBytes / this.#budget());
      const wait = until - this.#clock.now();
      try {
        if (wait > 0) {
          await this.#clock.sleep(
            wait,
            signal ? AbortSignal.any([signal, wake.signal]) : wake.signal,
          );
        }
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        if (!wake.signal.aborted) throw error;
      } finally {
        if (this.#wake === wake) this.#wake = undefined;
      }
      // Paid off: close the window, which measures the average over the
      // whole wait. Woken early (urgent bytes, a new limit): keep the
      // debt, so the average still holds once the urgent bytes passed.
      if (this.#clock.now() >= until) this.#closeWindowIfDue(true);
    }
  }

  #budget(): number {
    return this.#bytesPerSecond * this.#windowMs / 1000;
  }

  #overBudget(): boolean {
    if (this.#bytesPerSecond === 0) return false;
    if (this.#bytesPassed < this.#urgentUntil) return false;
    return this.#windowBytes >= this.#budget();
  }

  #closeWindowIfDue(force = false): RateWindow | undefined {
    const now = this.#clock.now();
    const ms = now - this.#windowStart;
    if (ms < this.#windowMs && !(force && ms > 0)) return undefined;
    if (this.#overBudget() && !force) return undefined; // still paying off
    const window = {
      bytes: this.#windowBytes,
      ms,
      bytesPerMs: this.#windowBytes / ms,
    };
    this.#last = window;
    this.#windowStart = now;
    this.#windowBytes = 0;
    this.#onWindow?.(window);
    return window;
  }
}

function checkRate(value: number): void {
  if (!(value >= 0) || !Number.isFinite(value)) {
    throw new RangeError(
      `Cannot set the rate limit as bytesPerSecond must be a finite number >= 0: received ${value}`,
    );
  }
}
