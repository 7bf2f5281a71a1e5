/**
 * What the source does with the destination's postcopy requests on the
 * return path: REQ_PAGES (a page the destination guest waits for) and the
 * size of each RECV_BITMAP of a recovery. Private to the source.
 *
 * @module
 */

import { MigrationAbortedError } from "../errors.ts";
import type { SourceRun } from "./_source_run.ts";

/**
 * Queues a requested page range ahead of the background copy, and lets
 * what is already encoded go at once: the requested page comes next and
 * must not wait behind a rate-limit window.
 *
 * @param run The run.
 * @param request The block, and the byte range in it.
 * @throws {MigrationAbortedError} If the range is not whole pages of a
 *   block.
 */
export function servePageRequest(
  run: SourceRun,
  request: { block: string; start: number; length: number },
): void {
  const { block, start, length } = request;
  const memory = run.config.guest.memory;
  const found = memory.blocks.find((b) => b.idstr === block);
  const pageSize = memory.pageSize;
  if (
    found === undefined || start % pageSize !== 0 ||
    length % pageSize !== 0 ||
    length === 0 || start + length > found.bytes.byteLength
  ) {
    throw new MigrationAbortedError(
      `Cannot serve a page request for ${block}@${start}+${length}: it is not a whole page range inside a block`,
      { reason: "destination-failed" },
    );
  }
  run.requests.push(found.index, start / pageSize, length / pageSize);
  if (run.preempt === undefined) {
    const channel = run.channel;
    channel.limiter.passUntil(channel.encodedBytes);
  }
}

/**
 * Bytes of the destination's RECV_BITMAP for `block`: one bit per page,
 * in 64-bit words.
 *
 * @param run The run.
 * @param block The block idstr.
 * @returns The size, or `undefined` for a block the guest does not have.
 */
export function recvBitmapBytes(
  run: SourceRun,
  block: string,
): number | undefined {
  const found = run.config.guest.memory.blocks.find((b) => b.idstr === block);
  return found === undefined ? undefined : Math.ceil(found.pageCount / 64) * 8;
}
