import type { DirtyPageScanner, PageBatch } from "./dirty_page_scanner.ts";

/** Options for {@linkcode PageSourceStream}. */
export interface PageSourceStreamOptions {
  /**
   * Most pages per batch. Batches stay within one block.
   *
   * @default {256}
   */
  batchPages?: number;
  /**
   * Asked before each batch; when it returns `true` the stream closes (the
   * end of one iteration step, e.g. the rate-limit window is spent).
   */
  shouldStop?: () => boolean;
}

/**
 * A pull-based stream of dirty pages: each pull takes the next batch from a
 * {@linkcode DirtyPageScanner} (clearing their bits), so pages are taken
 * only as fast as the next stage asks for them and a slow transport slows
 * the scan. It closes when no page is left or `shouldStop()` says so; the
 * scanner keeps the position for the next stream.
 *
 * Page bytes are not copied here: the encoder reads them from guest memory
 * when it processes the batch.
 *
 * @example Usage
 * ```ts
 * import { DirtyPageScanner, GuestMemory, PageSourceStream } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const memory = new GuestMemory([{ idstr: "pc.ram", size: 10 * 4096 }]);
 * const batches = await Array.fromAsync(
 *   new PageSourceStream(new DirtyPageScanner(memory), { batchPages: 4 }),
 * );
 * assert.deepEqual(batches.map((b) => b.pages.length), [4, 4, 2]);
 * ```
 */
export class PageSourceStream extends ReadableStream<PageBatch> {
  /**
   * Constructs a new instance.
   *
   * @param scanner Which pages to send, and where the scan is.
   * @param options Batch size and when to stop.
   */
  constructor(
    scanner: DirtyPageScanner,
    options: PageSourceStreamOptions = {},
  ) {
    const batchPages = options.batchPages ?? 256;
    if (!Number.isInteger(batchPages) || batchPages < 1) {
      throw new RangeError(
        `Cannot construct PageSourceStream as batchPages must be a positive integer: received ${batchPages}`,
      );
    }
    const shouldStop = options.shouldStop;
    super({
      pull(controller) {
        if (shouldStop?.()) {
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
