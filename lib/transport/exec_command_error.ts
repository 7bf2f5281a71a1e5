import { TransportError } from "./transport_error.ts";

/** Options for {@linkcode ExecCommandError}. */
export interface ExecCommandErrorOptions extends ErrorOptions {
  /** The `exec:` URI. */
  uri: string;
  /** The exit code; for a command killed by a signal, 128 + its number. */
  exitCode: number;
  /** The signal that killed the command, if one did. */
  signal: string | null;
  /** The last bytes the command wrote to its standard error, as text. */
  stderr: string;
}

/**
 * The command of an `exec:` transport failed: it exited with a non-zero code
 * or was killed by a signal. The message gives the code and the end of what
 * the command wrote to its standard error.
 *
 * @example Usage
 * ```ts
 * import { ExecCommandError, TransportError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const error = new ExecCommandError({
 *   uri: "exec:cat > /nonexistent/vm.mig",
 *   exitCode: 1,
 *   signal: null,
 *   stderr: "sh: 1: cannot create /nonexistent/vm.mig: Directory nonexistent",
 * });
 * assert.ok(error instanceof TransportError);
 * assert.equal(
 *   error.message,
 *   'Cannot complete "exec:cat > /nonexistent/vm.mig": the command exited with code 1: sh: 1: cannot create /nonexistent/vm.mig: Directory nonexistent',
 * );
 * ```
 */
export class ExecCommandError extends TransportError {
  /** The exit code; for a command killed by a signal, 128 + its number. */
  readonly exitCode: number;
  /** The signal that killed the command, if one did. */
  readonly signal: string | null;
  /** The last bytes the command wrote to its standard error, as text. */
  readonly stderr: string;

  /**
   * Constructs a new instance; the message is built from the options.
   *
   * @param options The URI, how the command ended and its standard error.
   */
  constructor(options: ExecCommandErrorOptions) {
    const how = options.signal === null
      ? `exited with code ${options.exitCode}`
      : `was killed by ${options.signal}`;
    const stderr = options.stderr.trim();
    super(
      `Cannot complete "${options.uri}": the command ${how}${
        stderr === "" ? " and wrote nothing to stderr" : `: ${stderr}`
      }`,
      options,
    );
    this.name = "ExecCommandError";
    this.exitCode = options.exitCode;
    this.signal = options.signal;
    this.stderr = options.stderr;
  }
}
