import { describeError } from "../../mod.ts";

/**
 * The line the command line prints for an error: the library's
 * {@linkcode describeError}, with a missing file said as such.
 *
 * @example Usage
 * ```ts
 * import { describeCliError } from "./describe_cli_error.ts";
 * import assert from "node:assert/strict";
 *
 * const missing = new Deno.errors.NotFound("No such file or directory (os error 2): open '/x.bin'");
 * assert.equal(describeCliError(missing), "Cannot open file: No such file or directory (os error 2): open '/x.bin'");
 * assert.equal(describeCliError(new RangeError("Cannot use -1")), "Cannot use -1");
 * ```
 *
 * @param error What was thrown.
 * @returns One line of text, without a line break.
 */
export function describeCliError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) {
    return `Cannot open file: ${error.message}`;
  }
  return describeError(error);
}
