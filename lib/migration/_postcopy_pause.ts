/**
 * A destination's postcopy migration whose connection was lost: it waits
 * until the app hands over a new connection (`recover`) or gives the
 * migration up (`abandon`). Private to the destination.
 *
 * @module
 */

import { MigrationAbortedError } from "../errors.ts";

/** The wait for the connection that continues a paused postcopy. */
export class PostcopyPause<T> {
  #waiter: PromiseWithResolvers<T> | undefined;
  #abandoned: string | undefined;

  /** Why the app gave the migration up, once it did. */
  get abandoned(): string | undefined {
    return this.#abandoned;
  }

  /** Whether {@linkcode PostcopyPause.wait} waits. */
  get waiting(): boolean {
    return this.#waiter !== undefined;
  }

  /**
   * Waits for {@linkcode PostcopyPause.recover}.
   *
   * @param lost Describes the migration lost, for the error.
   * @returns The new connection.
   * @throws {MigrationAbortedError} Once the migration was given up.
   */
  async wait(lost: () => string): Promise<T> {
    if (this.#abandoned !== undefined) throw this.#error(lost());
    this.#waiter = Promise.withResolvers();
    const waiter = this.#waiter;
    this.#onAbandon = () => waiter.reject(this.#error(lost()));
    try {
      return await waiter.promise;
    } finally {
      this.#waiter = undefined;
      this.#onAbandon = undefined;
    }
  }

  /**
   * Hands the new connection to the waiting {@linkcode PostcopyPause.wait}.
   *
   * @param next The connection.
   */
  recover(next: T): void {
    this.#waiter?.resolve(next);
  }

  /**
   * Gives the migration up: a pending or later wait rejects.
   *
   * @param reason Why.
   * @returns Whether a wait was pending.
   */
  abandon(reason: string): boolean {
    this.#abandoned ??= reason;
    const onAbandon = this.#onAbandon;
    onAbandon?.();
    return onAbandon !== undefined;
  }

  #onAbandon: (() => void) | undefined;

  #error(lost: string): MigrationAbortedError {
    return new MigrationAbortedError(
      `Cannot complete the incoming migration: ${this.#abandoned}; ${lost}`,
      { reason: "cancelled" },
    );
  }
}
