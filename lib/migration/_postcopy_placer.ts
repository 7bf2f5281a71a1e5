/**
 * The main thread's side of the postcopy placer (_postcopy_placer_worker.ts):
 * background pages go to a worker that writes them into guest RAM, so a
 * requested page is never queued behind copies into RAM touched for the
 * first time. Private to the destination.
 *
 * The main thread stays the only one that decides about a page: it hands
 * the worker a page only while the page is missing and not on its way
 * already, marks it received only once the worker says it was placed, and
 * drops a copy (from the preempt connection) of a page on its way. The
 * guest writes a page only after it was marked received, so no copy ever
 * lands over a guest's write.
 *
 * @module
 */

import { DirtyBitmap } from "../guest/dirty_bitmap.ts";
import type { GuestMemory } from "../guest/guest_memory.ts";
import {
  type FromPlacerWorker,
  runPlacerWorker,
  type ToPlacerWorker,
} from "./_postcopy_placer_worker.ts";
import { listenToWorker, rebuildError } from "./_worker_error.ts";

/** Bytes of the staging ring pages are copied into for the worker. */
const RING_BYTES = 4 * 1024 * 1024;
/** Pages handed over per message. */
const BATCH_PAGES = 64;
/** Most pages on their way at once (zero pages take no ring slot). */
const MAX_IN_FLIGHT = 4096;

let workerUrl: string | undefined;

/** The worker's script, from the placer's own source text (made once). */
function placerWorkerUrl(): string {
  workerUrl ??= URL.createObjectURL(
    new Blob([`(${runPlacerWorker.toString()})(self);`], {
      type: "text/javascript",
    }),
  );
  return workerUrl;
}

/** Places postcopy's background pages in a worker. */
export class PostcopyPlacer {
  readonly #memory: GuestMemory;
  readonly #worker: Worker;
  readonly #ring: Uint8Array;
  readonly #slots: number;
  readonly #pageSize: number;
  readonly #onWay: DirtyBitmap[];
  /**
   * Pages on their way, in order: block index, page, ring slot (-1: a zero
   * page) triples; those from `#head` on are not placed yet, those from
   * `#sent` on not handed over yet.
   */
  #queue: number[] = [];
  #head = 0;
  #sent = 0;
  #nextSlot = 0;
  #slotsUsed = 0;
  #error: Error | undefined;
  #waiter: PromiseWithResolvers<void> | undefined;
  #closed = false;

  /**
   * Starts the worker over `memory`'s blocks.
   *
   * @param memory The guest's RAM, every block over a `SharedArrayBuffer`
   *   (see {@linkcode PostcopyPlacer.canPlace}).
   */
  constructor(memory: GuestMemory) {
    this.#memory = memory;
    this.#pageSize = memory.pageSize;
    this.#slots = Math.max(16, Math.floor(RING_BYTES / memory.pageSize));
    this.#ring = new Uint8Array(
      new SharedArrayBuffer(this.#slots * memory.pageSize),
    );
    this.#onWay = memory.blocks.map((b) => new DirtyBitmap(b.pageCount));
    this.#worker = new Worker(placerWorkerUrl(), { type: "module" });
    listenToWorker<FromPlacerWorker>(
      this.#worker,
      (message) => this.#receive(message),
      (error) => this.#fail(error),
    );
    this.#post({
      type: "start",
      blocks: memory.blocks.map((b) => b.bytes),
      ring: this.#ring,
      pageSize: this.#pageSize,
    });
  }

  /**
   * Whether a worker can write `memory`: every block is over a
   * `SharedArrayBuffer`.
   *
   * @param memory The guest's RAM.
   * @returns Whether a placer can be used.
   */
  static canPlace(memory: GuestMemory): boolean {
    return memory.blocks.every((b) =>
      b.bytes.buffer instanceof SharedArrayBuffer
    );
  }

  /**
   * Whether a page was handed to the worker and not placed yet.
   *
   * @param blockIndex The block's index.
   * @param page The page.
   * @returns Whether it is on its way.
   */
  has(blockIndex: number, page: number): boolean {
    return this.#onWay[blockIndex]!.test(page);
  }

  /**
   * When the worker has room for another page: undefined at once,
   * otherwise a promise (what was gathered is handed over meanwhile).
   *
   * @returns Undefined, or a promise that resolves once there is room.
   * @throws {Error} The worker's error, if it failed.
   */
  room(): Promise<void> | undefined {
    if (this.#error) throw this.#error;
    if (!this.#full()) return undefined;
    this.flush();
    return this.#until(() => !this.#full());
  }

  /**
   * Hands a missing page to the worker (call {@linkcode PostcopyPlacer.room}
   * first). The page counts as received once the worker placed it.
   *
   * @param blockIndex The block's index.
   * @param page The page.
   * @param data The page's bytes (copied), or undefined for a zero page.
   */
  submit(
    blockIndex: number,
    page: number,
    data: Uint8Array | undefined,
  ): void {
    if (this.#error) throw this.#error;
    this.#onWay[blockIndex]!.set(page);
    let slot = -1;
    if (data !== undefined) {
      slot = this.#nextSlot;
      this.#nextSlot = (slot + 1) % this.#slots;
      this.#slotsUsed++;
      this.#ring.set(data, slot * this.#pageSize);
    }
    this.#queue.push(blockIndex, page, slot);
    if (this.#queue.length - this.#sent >= 3 * BATCH_PAGES) this.flush();
  }

  /** Hands over the pages gathered so far. */
  flush(): void {
    const queue = this.#queue;
    if (this.#sent === queue.length) return;
    const pages = new Int32Array(queue.slice(this.#sent));
    this.#sent = queue.length;
    this.#post({ type: "pages", pages }, [pages.buffer]);
  }

  /**
   * Resolves once every page handed over was placed.
   *
   * @returns A promise.
   * @throws {Error} The worker's error, if it failed.
   */
  drain(): Promise<void> {
    this.flush();
    return this.#until(() => this.#queue.length === this.#head);
  }

  /** Stops the worker (pages on their way stay missing). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#worker.terminate();
    this.#error ??= new Error("Cannot place pages: the placer was closed");
    this.#waiter?.resolve();
  }

  #full(): boolean {
    return this.#slotsUsed >= this.#slots ||
      this.#queue.length - this.#head >= 3 * MAX_IN_FLIGHT;
  }

  async #until(condition: () => boolean): Promise<void> {
    while (!condition()) {
      if (this.#error) throw this.#error;
      this.#waiter ??= Promise.withResolvers<void>();
      await this.#waiter.promise;
    }
    if (this.#error) throw this.#error;
  }

  #receive(message: FromPlacerWorker): void {
    if (message.type === "error") {
      return this.#fail(
        rebuildError(message.error, ", in the postcopy placer"),
      );
    }
    const memory = this.#memory;
    const queue = this.#queue;
    for (let i = 0; i < message.count; i++) {
      const at = this.#head;
      const blockIndex = queue[at]!;
      const page = queue[at + 1]!;
      if (queue[at + 2]! >= 0) this.#slotsUsed--;
      this.#head = at + 3;
      this.#onWay[blockIndex]!.clear(page);
      memory.markReceived(blockIndex, page);
    }
    if (this.#head > 3 * MAX_IN_FLIGHT && this.#head * 2 > queue.length) {
      this.#queue = queue.slice(this.#head);
      this.#sent -= this.#head;
      this.#head = 0;
    }
    this.#wake();
  }

  #wake(): void {
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.resolve();
  }

  #fail(error: Error): void {
    this.#error ??= error;
    this.close();
  }

  #post(message: ToPlacerWorker, transfer: Transferable[] = []): void {
    if (!this.#closed) this.#worker.postMessage(message, transfer);
  }
}
