/**
 * The worker that places postcopy's background pages on the destination
 * (QEMU's postcopy listen thread does this work off the vCPU's path). The
 * main thread decodes the main connection, copies each page still missing
 * into a staging ring of shared memory and posts where it goes; this
 * worker copies it from the ring into guest RAM (a `SharedArrayBuffer`,
 * the guest's first touch of that page) and says how many it placed, in
 * order. Private to the destination; _postcopy_placer.ts is the main
 * thread's side.
 *
 * {@linkcode runPlacerWorker} is self-contained (it imports nothing and
 * closes over nothing): the main thread starts the worker from its source
 * text, so a worker needs no read permission for a module file.
 *
 * ```
 * main → worker   start (the shared RAM blocks, the staging ring, the page
 *                 size), pages (one Int32Array of block index, page, ring
 *                 slot triples; slot -1 for a zero page), transferred
 * worker → main   placed (how many pages, in order), error
 * ```
 *
 * @module
 */

import type { WorkerErrorData } from "./_worker_error.ts";

/** What the main thread posts to the placer worker. */
export type ToPlacerWorker =
  | {
    type: "start";
    blocks: Uint8Array[];
    ring: Uint8Array;
    pageSize: number;
  }
  | { type: "pages"; pages: Int32Array };

/** What the placer worker posts to the main thread. */
export type FromPlacerWorker =
  | { type: "placed"; count: number }
  | { type: "error"; error: WorkerErrorData };

/** The worker's side of the message channel. */
export interface PlacerWorkerScope {
  postMessage(message: FromPlacerWorker): void;
  addEventListener(
    type: "message",
    listener: (event: MessageEvent<ToPlacerWorker>) => void,
  ): void;
}

/**
 * Runs the placer on `scope` (the worker's global scope). Self-contained:
 * it runs from its own source text.
 *
 * @param scope Where messages come from and go to.
 */
export function runPlacerWorker(scope: PlacerWorkerScope): void {
  let blocks: Uint8Array[] = [];
  let ring: Uint8Array = new Uint8Array(0);
  let pageSize = 0;
  scope.addEventListener("message", (event) => {
    const message = event.data;
    if (message.type === "start") {
      ({ blocks, ring, pageSize } = message);
      return;
    }
    try {
      const pages = message.pages;
      for (let i = 0; i < pages.length; i += 3) {
        const block = blocks[pages[i]!];
        const at = pages[i + 1]! * pageSize;
        if (block === undefined || at + pageSize > block.byteLength) {
          throw new RangeError(
            `Cannot place page ${pages[i + 1]} of block ${
              pages[i]
            }: outside the RAM`,
          );
        }
        const slot = pages[i + 2]!;
        if (slot < 0) block.fill(0, at, at + pageSize);
        else {
          const from = slot * pageSize;
          block.set(ring.subarray(from, from + pageSize), at);
        }
      }
      scope.postMessage({ type: "placed", count: pages.length / 3 });
    } catch (error) {
      const { name, message } = error instanceof Error
        ? error
        : { name: "Error", message: String(error) };
      scope.postMessage({ type: "error", error: { name, message } });
    }
  });
}
