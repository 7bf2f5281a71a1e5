/** Options for {@linkcode QmpError}. */
export interface QmpErrorOptions extends ErrorOptions {
  /** QEMU's error text (`error.desc`). */
  desc: string;
  /**
   * QEMU's error class (`error.class`): `GenericError` for almost
   * everything, `CommandNotFound`, `DeviceNotFound`, …
   *
   * @default {"GenericError"}
   */
  class?: string;
  /** The command that failed, when known (a client knows it, a server's command need not say). */
  command?: string;
}

/**
 * A QMP command failed: QEMU's `{"error": {"class": …, "desc": …}}`.
 *
 * A {@linkcode QmpClient} rejects with it when the monitor answers with an
 * error; a command served by a {@linkcode QmpServer} throws it to answer
 * with one.
 *
 * @example Usage
 * ```ts
 * import { QmpError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const error = new QmpError({ command: "migrate-pause", desc: "migrate-pause is currently only supported during postcopy-active state" });
 * assert.equal(error.class, "GenericError");
 * assert.equal(error.message, 'Cannot run QMP command "migrate-pause": migrate-pause is currently only supported during postcopy-active state');
 * ```
 */
export class QmpError extends Error {
  /** QEMU's error class, e.g. `GenericError`, `CommandNotFound`. */
  readonly class: string;
  /** QEMU's error text. */
  readonly desc: string;
  /** The command that failed, when known. */
  readonly command: string | undefined;

  /**
   * Constructs a new instance.
   *
   * @param options QEMU's class and desc, and the command.
   */
  constructor(options: QmpErrorOptions) {
    super(
      options.command === undefined
        ? `Cannot run QMP command: ${options.desc}`
        : `Cannot run QMP command "${options.command}": ${options.desc}`,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "QmpError";
    this.class = options.class ?? "GenericError";
    this.desc = options.desc;
    this.command = options.command;
  }

  /** Same as {@linkcode QmpError.class}, for code that avoids the keyword. */
  get errorClass(): string {
    return this.class;
  }
}
