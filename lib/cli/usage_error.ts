import { NotSupportedError } from "../../mod.ts";

/**
 * An error in the command line itself: the command prints the message and
 * its usage text, and exits with status 2.
 *
 * @example Usage
 * ```ts
 * import { UsageError } from "./usage_error.ts";
 * import assert from "node:assert/strict";
 *
 * const error = new UsageError("analyze needs a FILE", "Usage: livemig analyze FILE\n");
 * assert.equal(error.name, "UsageError");
 * assert.equal(error.usage, "Usage: livemig analyze FILE\n");
 * ```
 */
export class UsageError extends Error {
  /** The usage text of the command that was misused. */
  readonly usage: string;

  /**
   * Constructs a new instance.
   *
   * @param message What is wrong with the command line.
   * @param usage The usage text to print after it.
   */
  constructor(message: string, usage: string) {
    super(message);
    this.name = "UsageError";
    this.usage = usage;
  }
}

/**
 * Runs `parse`, turning the errors the library throws for bad arguments
 * (`TypeError`, `RangeError`, {@linkcode NotSupportedError}) into
 * {@linkcode UsageError}s with `usage`; anything else passes through.
 *
 * @example Usage
 * ```ts
 * import { asUsageError, UsageError } from "./usage_error.ts";
 * import { parseSize } from "../../mod.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(asUsageError("usage", () => parseSize("1KiB", "--ram")), 1024);
 * assert.throws(() => asUsageError("usage", () => parseSize("lots", "--ram")), UsageError);
 * ```
 *
 * @typeParam T What `parse` returns.
 * @param usage The usage text of the command.
 * @param parse Parses or checks an argument.
 * @returns What `parse` returned.
 * @throws {UsageError} If `parse` threw a TypeError, RangeError or
 *   NotSupportedError.
 */
export function asUsageError<T>(usage: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (
      error instanceof TypeError || error instanceof RangeError ||
      error instanceof NotSupportedError
    ) {
      throw new UsageError(error.message, usage);
    }
    throw error;
  }
}
