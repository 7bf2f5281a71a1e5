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

/**
 * Takes the requested pages that are still to send, all from the first
 * requested block, and moves the scan there.
 *
 * @param scanner The pages still to send.
 * @param requests The destination's requests.
 * @returns A batch of requested pages, or `undefined`.
 */
export function takeRequested(
  scanner: DirtyPageScanner,
  requests: PageRequestQueue,
): PageBatch | undefined {
  const pages: number[] = [];
  let blockIndex = -1;
  while (pages.length < 64) {
    const request = requests.shift();
    if (request === undefined) break;
    if (blockIndex !== -1 && request.blockIndex !== blockIndex) {
      // Another block: leave it for the next batch.
      requests.push(request.blockIndex, request.page);
      break;
    }
    if (!scanner.take(request.blockIndex, request.page)) continue;
    blockIndex = request.blockIndex;
    pages.push(request.page);
  }
  if (pages.length === 0) return undefined;
  const last = pages[pages.length - 1]!;
  scanner.seek(blockIndex, last + 1);
  const batch = scanner.batchOf(blockIndex, pages);
  return batch;
}
