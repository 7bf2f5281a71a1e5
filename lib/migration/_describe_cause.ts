/**
 * The text of an error that a source migration wraps in its own message.
 * Private to the source.
 *
 * @module
 */

import { describeError } from "../errors.ts";

/**
 * {@linkcode describeError}, less a leading "Cannot …: " of an error's
 * message, so a wrapping "Cannot complete migration: …" does not say
 * "Cannot" twice: "Cannot write to tcp:…: the connection was reset"
 * becomes "the connection was reset".
 *
 * @param error What was thrown.
 * @returns One line of text.
 */
export function describeCause(error: unknown): string {
  if (error instanceof Error) {
    return error.message.replace(/^Cannot [^:]*: /, "") || error.name;
  }
  return describeError(error);
}
