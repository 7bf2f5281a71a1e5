/**
 * The pages of a background snapshot's single pass, as RAM records, with
 * the SHA-256 of the RAM they carry. Private to the source.
 *
 * Each pull takes the next pages in RAM order off the scan and asks the
 * write guard for their content at the snapshot point (the copy kept
 * before a guest write, or RAM itself for a page the guest has not
 * touched). The bytes are taken while the pages are still protected and
 * are owned by the records, so a later guest write cannot reach them on
 * their way to the transport.
 *
 * ```
 * DirtyPageScanner.next() ─▶ guard.take() per page ─▶ ram-zero | ram-page
 *                                                 └─▶ hash of its block
 * ```
 *
 * @module
 */

import { createHash, type Hash } from "node:crypto";
import { isZeroPage } from "../bytes/is_zero_page.ts";
import type { GuestMemory } from "../guest/guest_memory.ts";
import type { DirtyPageScanner } from "../ram/dirty_page_scanner.ts";
import type { PageEncoderCounters } from "../ram/page_encoder_stream.ts";
import type { RamRecord } from "../ram/ram_record.ts";
import type { SnapshotWriteGuard } from "./_snapshot_write_guard.ts";

/** Options for {@linkcode SnapshotPageStream}. */
export interface SnapshotPageStreamOptions {
  /** Most pages per pull. */
  batchPages: number;
  /** Checked before each pull: true ends the stream (the step is over). */
  shouldStop?: () => boolean;
  /** Page counters to add to (the run's). */
  counters: PageEncoderCounters;
  /** The hash the pages go into. */
  digest: SnapshotDigest;
}

/** The snapshot's pages, in RAM order, from the scan and the guard. */
export class SnapshotPageStream extends ReadableStream<RamRecord[]> {
  /**
   * @param scanner The scan over every page, none sent yet.
   * @param guard The copy-before-write over the scan's bitmaps.
   * @param options Batch size, stop check, counters, digest.
   */
  constructor(
    scanner: DirtyPageScanner,
    guard: SnapshotWriteGuard,
    options: SnapshotPageStreamOptions,
  ) {
    const { batchPages, shouldStop, counters, digest } = options;
    super({
      pull(controller) {
        const batch = shouldStop?.() ? undefined : scanner.next(batchPages);
        if (batch === undefined) {
          controller.close();
          return;
        }
        const { block, pages } = batch;
        const pageSize = block.bytes.byteLength / block.pageCount;
        const out: RamRecord[] = [];
        for (const page of pages) {
          const data = guard.take(block.index, page);
          digest.update(block.index, page, data);
          const offset = page * pageSize;
          if (isZeroPage(data)) {
            out.push({ type: "ram-zero", block: block.idstr, offset, fill: 0 });
            counters.duplicate++;
          } else {
            out.push({ type: "ram-page", block: block.idstr, offset, data });
            counters.normal++;
          }
        }
        guard.notify();
        controller.enqueue(out);
      },
    }, { highWaterMark: 0 });
  }
}

/**
 * SHA-256 of each block of the snapshot, fed page by page in RAM order:
 * the digest `ramSha256()` gives of a destination that loaded the
 * snapshot.
 */
export class SnapshotDigest {
  readonly #memory: GuestMemory;
  readonly #hashes: Hash[];
  readonly #next: number[];

  /** @param memory The guest's RAM. */
  constructor(memory: GuestMemory) {
    this.#memory = memory;
    this.#hashes = memory.blocks.map(() => createHash("sha256"));
    this.#next = memory.blocks.map(() => 0);
  }

  /**
   * Adds the next page of a block.
   *
   * @throws {TypeError} If it is not the next one.
   */
  update(blockIndex: number, page: number, bytes: Uint8Array): void {
    if (this.#next[blockIndex] !== page) {
      throw new TypeError(
        `Cannot hash page ${page} of block ${blockIndex}: page ${
          this.#next[blockIndex]
        } comes first`,
      );
    }
    this.#hashes[blockIndex]!.update(bytes);
    this.#next[blockIndex] = page + 1;
  }

  /**
   * The digests by idstr, as lowercase hex.
   *
   * @throws {TypeError} If a page was left out.
   */
  digest(): Record<string, string> {
    const digests: Record<string, string> = {};
    for (const block of this.#memory.blocks) {
      if (this.#next[block.index] !== block.pageCount) {
        throw new TypeError(
          `Cannot finish the snapshot digest: block "${block.idstr}" has ${
            block.pageCount - this.#next[block.index]!
          } pages left`,
        );
      }
      digests[block.idstr] = this.#hashes[block.index]!.digest("hex");
    }
    return digests;
  }
}
