/**
 * Positioned writes that nothing waits for one by one: a writer issues
 * them, goes on, and learns of a failure at its next step or when it
 * settles them all.
 *
 * @module
 */

/** Keeps the writes in flight and the first failure among them. */
export class WriteTracker {
  /** Writes in flight. */
  readonly #inflight = new Set<Promise<void>>();
  #error: { cause: unknown } | undefined;

  /**
   * Keeps a write's failure for {@linkcode WriteTracker.throwIfFailed}
   * instead of losing it.
   *
   * @param write The write.
   * @returns A promise that settles with the write and never rejects.
   */
  track(write: Promise<void>): Promise<void> {
    const settled: Promise<void> = write.then(
      () => {
        this.#inflight.delete(settled);
      },
      (cause) => {
        this.#error ??= { cause };
        this.#inflight.delete(settled);
      },
    );
    this.#inflight.add(settled);
    return settled;
  }

  /** Resolves once no write is in flight, the ones issued meanwhile too. */
  async settle(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.all([...this.#inflight]);
  }

  /**
   * Throws the first failure, if a write failed.
   *
   * @throws {unknown} What the failed write rejected with.
   */
  throwIfFailed(): void {
    if (this.#error !== undefined) throw this.#error.cause;
  }
}
