/**
 * Where the command line writes.
 *
 * @example Usage
 * ```ts
 * import type { CliIo } from "./cli_io.ts";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * const io: CliIo = { writeOut: (text) => (out += text), writeErr: () => {}, errIsTerminal: false };
 * io.writeOut("completed\n");
 * assert.equal(out, "completed\n");
 * ```
 */
export interface CliIo {
  /**
   * Writes to standard output.
   *
   * @param text The text.
   */
  writeOut(text: string): void;
  /**
   * Writes to standard error.
   *
   * @param text The text.
   */
  writeErr(text: string): void;
  /** Whether standard error is a terminal (progress is shown only then). */
  readonly errIsTerminal: boolean;
}
