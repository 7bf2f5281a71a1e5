import { describeError, escapeUntrustedText } from "../../mod.ts";

/**
 * The line the command line prints for an error: the library's
 * {@linkcode describeError}, with a missing file said as such, and
 * escaped: messages quote names from the stream (blocks, devices,
 * sections), which must not reach the terminal as control characters.
 *
 * @example Usage
 * ```ts
 * import { describeCliError } from "./describe_cli_error.ts";
 * import assert from "node:assert/strict";
 *
 * const missing = new Deno.errors.NotFound("No such file or directory (os error 2): open '/x.bin'");
 * assert.equal(describeCliError(missing), "Cannot open file: No such file or directory (os error 2): open '/x.bin'");
 * assert.equal(describeCliError(new RangeError("Cannot use -1")), "Cannot use -1");
 * assert.equal(describeCliError(new Error('Cannot load "\x1b[2J"')), 'Cannot load "\\x1b[2J"');
 * ```
 *
 * @param error What was thrown.
 * @returns One line of text, without a line break.
 */
export function describeCliError(error: unknown): string {
  const text = error instanceof Deno.errors.NotFound
    ? `Cannot open file: ${error.message}`
    : describeError(error);
  return escapeUntrustedText(text);
}
