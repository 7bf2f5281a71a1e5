/**
 * Faulting guest RAM in on another thread a piece at a time. Private to
 * lib/transport/.
 *
 * @module
 */

/**
 * How much one background `madvise(MADV_POPULATE_WRITE)` faults in. The
 * kernel holds the process's memory-map lock for the whole call, so any
 * `mmap` the main thread needs meanwhile (a new ArrayBuffer, the JS heap
 * growing) waits for it: one call over a whole 1 GiB block stalled the
 * event loop for 1.4–2.6 s, while 8 MiB calls keep it under 50 ms.
 */
export const POPULATE_CHUNK = 8 * 1024 * 1024;

/** Advises `size` bytes at `address`; resolves with madvise's result. */
export type AdviseInBackground = (
  address: bigint,
  size: number,
) => Promise<number>;

/**
 * Populates `size` bytes from `address` in {@linkcode POPULATE_CHUNK}
 * pieces, one after the other, stopping at the first refusal (a kernel
 * older than 5.14). `keepAlive` (the memory's buffer) stays referenced
 * until the last piece is done, so it cannot be collected meanwhile.
 */
export async function populateInChunks(
  advise: AdviseInBackground,
  range: { address: bigint; size: number },
  keepAlive: unknown,
): Promise<void> {
  for (let offset = 0; offset < range.size; offset += POPULATE_CHUNK) {
    const length = Math.min(POPULATE_CHUNK, range.size - offset);
    if (await advise(range.address + BigInt(offset), length) !== 0) return;
  }
  void keepAlive;
}
