/**
 * The pages of the source's postcopy background copy, with the pages the
 * destination asked for (REQ_PAGES on the return path) ahead of the scan.
 *
 * @module
 */

import type { DirtyPageScanner, PageBatch } from "../ram/dirty_page_scanner.ts";
import type { PageRequestQueue } from "./page_request_queue.ts";

/** Options for {@linkcode PostcopyPageSourceStream}. */
export interface PostcopyPageSourceStreamOptions {
  /**
   * Most pages per background batch.
   *
   * @default {256}
   */
  batchPages?: number;
  /** Asked before each batch; `true` closes the stream (end of a step). */
  shouldStop?: () => boolean;
  /**
   * Whether requested pages are served elsewhere (the preempt channel):
   * then this stream only carries the background copy.
   *
   * @default {false}
   */
  requestsElsewhere?: boolean;
  /** Called with each batch of requested pages this stream serves. */
  onUrgent?: (batch: PageBatch) => void;
}

/**
 * The postcopy background copy: like {@linkcode PageSourceStream}, but
 * every pull first serves pages the destination asked for (those still to
 * send), then goes on scanning from the requested address, as QEMU does
 * for spatial locality.
 *
 * @example Usage
 * ```ts
 * import { DirtyPageScanner, GuestMemory, PageRequestQueue, PostcopyPageSourceStream } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const memory = new GuestMemory([{ idstr: "guest.ram", size: 16 * 4096 }]);
 * const scanner = new DirtyPageScanner(memory);
 * const requests = new PageRequestQueue();
 * requests.push(0, 9);
 * const batches = await Array.fromAsync(
 *   new PostcopyPageSourceStream(scanner, requests, { batchPages: 4 }),
 * );
 * assert.deepEqual(batches.map((b) => [...b.pages]), [[9], [10, 11, 12, 13], [14, 15], [0, 1, 2, 3], [4, 5, 6, 7], [8]]);
 * ```
 */
export class PostcopyPageSourceStream extends ReadableStream<PageBatch> {
  /**
   * Constructs a new instance.
   *
   * @param scanner The pages still to send.
   * @param requests The destination's requests.
   * @param options Batch size, stop condition, urgent callback.
   */
  constructor(
    scanner: DirtyPageScanner,
    requests: PageRequestQueue,
    options: PostcopyPageSourceStreamOptions = {},
  ) {
    const batchPages = options.batchPages ?? 256;
    super({
      pull(controller) {
        if (!options.requestsElsewhere) {
          const urgent = takeRequested(scanner, requests);
          if (urgent) {
            options.onUrgent?.(urgent);
            controller.enqueue(urgent);
            return;
          }
        }
        if (options.shouldStop?.()) {
          controller.close();
          return;
        }
        const batch = scanner.next(batchPages);
        if (batch === undefined) controller.close();
        else controller.enqueue(batch);
      },
    }, { highWaterMark: 0 });
  }
}

/** Options of {@linkcode takeRequested}. */
export interface TakeRequestedOptions {
  /**
   * Also return requested pages the scan already took. On a preempt
   * channel those may still sit behind megabytes of background pages on
   * the main channel; sending them again (the source guest is stopped,
   * so the copy is the same, and the destination keeps whichever lands
   * first) answers the fault at once.
   *
   * @default {false}
   */
  resend?: boolean;
}

/**
 * Takes the requested pages that are still to send (or, with `resend`,
 * every requested page), all from the first requested block, and moves
 * the scan past the last one it took.
 *
 * @example Usage
 * ```ts
 * import {
 *   DirtyPageScanner,
 *   GuestMemory,
 *   PageRequestQueue,
 *   takeRequested,
 * } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const memory = new GuestMemory([{ idstr: "pc.ram", size: 16 * 4096 }]);
 * const scanner = new DirtyPageScanner(memory);
 * const requests = new PageRequestQueue();
 * requests.push(0, 3);
 * assert.deepEqual([...takeRequested(scanner, requests)!.pages], [3]);
 * requests.push(0, 3); // already taken: only a resend returns it
 * assert.equal(takeRequested(scanner, requests), undefined);
 * requests.push(0, 3);
 * assert.deepEqual([...takeRequested(scanner, requests, { resend: true })!.pages], [3]);
 * ```
 *
 * @param scanner The pages still to send.
 * @param requests The destination's requests.
 * @param options Whether to resend pages already taken.
 * @returns A batch of requested pages, or `undefined`.
 */
export function takeRequested(
  scanner: DirtyPageScanner,
  requests: PageRequestQueue,
  options: TakeRequestedOptions = {},
): PageBatch | undefined {
  const pages: number[] = [];
  let blockIndex = -1;
  let lastTaken = -1;
  while (pages.length < 64) {
    const request = requests.shift();
    if (request === undefined) break;
    if (blockIndex !== -1 && request.blockIndex !== blockIndex) {
      // Another block: leave it for the next batch.
      requests.push(request.blockIndex, request.page);
      break;
    }
    const taken = scanner.take(request.blockIndex, request.page);
    if (!taken && !options.resend) continue;
    blockIndex = request.blockIndex;
    pages.push(request.page);
    if (taken) lastTaken = request.page;
  }
  if (pages.length === 0) return undefined;
  if (lastTaken !== -1) scanner.seek(blockIndex, lastTaken + 1);
  return scanner.batchOf(blockIndex, pages);
}
