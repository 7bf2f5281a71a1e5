/**
 * A QMP connection failed, closed, or did not answer in time.
 *
 * @example Usage
 * ```ts
 * import { QmpConnectionError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const error = new QmpConnectionError("Cannot start QMP: no greeting within 10000 ms");
 * assert.equal(error.name, "QmpConnectionError");
 * ```
 */
export class QmpConnectionError extends Error {
  /**
   * Constructs a new instance.
   *
   * @param message What failed, in sentence case, no period.
   * @param options The underlying cause, if any.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "QmpConnectionError";
  }
}
