/**
 * The main thread's side of one source multifd channel's worker
 * (_multifd_send_worker.ts), which compresses (zlib, zstd): one packet at
 * a time goes in as page locations, its bytes come back. And the batch the
 * main thread gathers for the next packet: pages by where they are in
 * shared guest RAM, copies of the others; without compression they are
 * written from there. Private to the source.
 *
 * @module
 */

import type { MultifdCompression } from "../wire/multifd_flags.ts";
import type {
  EncodeRequest,
  FromSendWorker,
  ToSendWorker,
} from "./_multifd_send_worker.ts";
import { listenToWorker, rebuildError } from "./_worker_error.ts";

const SEND_WORKER_URL = new URL("./_multifd_send_worker.ts", import.meta.url);

/**
 * Starts `count` send workers and waits until each has loaded: starting a
 * worker takes tens of milliseconds, better spent before the first round.
 *
 * @param count How many.
 * @returns The loaded workers.
 * @throws {Error} If one cannot start (the others are stopped).
 */
export async function startSendWorkers(count: number): Promise<Worker[]> {
  const workers = Array.from(
    { length: count },
    () => new Worker(SEND_WORKER_URL, { type: "module" }),
  );
  try {
    await Promise.all(
      workers.map((worker) =>
        new Promise<void>((resolve, reject) =>
          listenToWorker(worker, () => resolve(), reject)
        )
      ),
    );
  } catch (error) {
    for (const worker of workers) worker.terminate();
    throw error;
  }
  return workers;
}

/** One channel's encoding worker. */
export class MultifdSendWorker {
  readonly #worker: Worker;
  #pending: PromiseWithResolvers<Uint8Array> | undefined;
  #stopped = false;

  /**
   * Starts the worker, or takes one {@linkcode startSendWorkers} started.
   *
   * @param settings Compression method and level, page size.
   * @param worker A loaded worker to use.
   */
  constructor(
    settings: {
      compression: MultifdCompression;
      level: number;
      pageSize: number;
    },
    worker: Worker = new Worker(SEND_WORKER_URL, { type: "module" }),
  ) {
    this.#worker = worker;
    listenToWorker<FromSendWorker>(this.#worker, (data) => {
      if (data.type === "ready") return;
      const pending = this.#pending;
      this.#pending = undefined;
      if (data.type === "encoded") pending?.resolve(data.bytes);
      else pending?.reject(rebuildError(data.error));
    }, (error) => {
      this.#pending?.reject(error);
      this.#pending = undefined;
    });
    this.#post({ type: "start", ...settings });
  }

  /**
   * Encodes one packet (one at a time).
   *
   * @param request The header and where the pages are.
   * @returns The packet's bytes, a buffer of their own.
   */
  encode(request: EncodeRequest): Promise<Uint8Array> {
    if (this.#stopped) {
      return Promise.reject(new TypeError("Cannot encode: the worker stopped"));
    }
    this.#pending = Promise.withResolvers<Uint8Array>();
    const transfer: Transferable[] = [request.starts.buffer as ArrayBuffer];
    if (request.inline !== undefined) transfer.push(request.inline);
    this.#post(request, transfer);
    return this.#pending.promise;
  }

  /** Stops the worker; a packet being encoded is dropped. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#worker.terminate();
    this.#pending?.reject(new TypeError("Cannot encode: the worker stopped"));
    this.#pending = undefined;
  }

  #post(message: ToSendWorker, transfer: Transferable[] = []): void {
    this.#worker.postMessage(message, transfer);
  }
}

/**
 * The pages of the next packet, gathered without copying those in shared
 * guest RAM (the worker reads them there when it encodes the packet, as
 * QEMU's sending threads read guest RAM): a page written meanwhile is dirty
 * again and goes again in the next round.
 */
export class PageBatch {
  readonly #pageSize: number;
  readonly #slots: number;
  #starts: number[] = [];
  #shared: SharedArrayBuffer | undefined;
  #inline: Uint8Array<ArrayBuffer> | undefined;
  #inlineCount = 0;
  /** The wire offsets of the pages, in order. */
  offsets: number[] = [];
  /** The block the pages are in. */
  block = "";

  /**
   * An empty batch.
   *
   * @param pageSize The target page size.
   * @param slots The most pages a packet holds.
   */
  constructor(pageSize: number, slots: number) {
    this.#pageSize = pageSize;
    this.#slots = slots;
  }

  /** How many pages are in the batch. */
  get length(): number {
    return this.offsets.length;
  }

  /**
   * Adds a page: a view into shared RAM is kept as its location, anything
   * else is copied now.
   *
   * @param block The page's block.
   * @param offset The page's offset in the block.
   * @param data The page.
   */
  add(block: string, offset: number, data: Uint8Array): void {
    const buffer = data.buffer;
    if (
      buffer instanceof SharedArrayBuffer &&
      (this.#shared === undefined || this.#shared === buffer)
    ) {
      this.#shared = buffer;
      this.#starts.push(data.byteOffset);
    } else {
      this.#inline ??= new Uint8Array(this.#slots * this.#pageSize);
      this.#inline.set(data, this.#inlineCount * this.#pageSize);
      this.#starts.push(-++this.#inlineCount);
    }
    this.offsets.push(offset);
    this.block = block;
  }

  /**
   * Empties the batch.
   *
   * @returns Where its pages are, for an {@linkcode EncodeRequest}.
   */
  take(): Pick<EncodeRequest, "shared" | "starts" | "inline"> {
    const taken = {
      shared: this.#shared,
      starts: Float64Array.from(this.#starts),
      inline: this.#inline?.buffer,
    };
    this.#starts = [];
    this.#shared = undefined;
    this.#inline = undefined;
    this.#inlineCount = 0;
    this.offsets = [];
    return taken;
  }
}

/**
 * The pages of a taken batch as views where they are, adjacent pages
 * joined into one view.
 *
 * @param pages What {@linkcode PageBatch.take} gave.
 * @param pageSize The target page size.
 * @returns The views, in packet order.
 */
export function pageRuns(
  pages: Pick<EncodeRequest, "shared" | "starts" | "inline">,
  pageSize: number,
): Uint8Array[] {
  const runs: Uint8Array[] = [];
  let buffer: ArrayBufferLike | undefined;
  let first = 0;
  let end = -1;
  const close = () => {
    if (buffer !== undefined) {
      runs.push(new Uint8Array(buffer, first, end - first));
    }
  };
  for (const start of pages.starts) {
    const from = start >= 0 ? pages.shared! : pages.inline!;
    const at = start >= 0 ? start : (-start - 1) * pageSize;
    if (from !== buffer || at !== end) {
      close();
      buffer = from;
      first = at;
    }
    end = at + pageSize;
  }
  close();
  return runs;
}
