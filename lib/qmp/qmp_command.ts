import type { QmpValue } from "./qmp_json.ts";
import type { QmpMember } from "./qmp_schema.ts";

/** What a {@linkcode QmpCommand} learns about the request it serves. */
export interface QmpCommandContext {
  /** Aborted when the client that sent the command disconnects. */
  readonly signal: AbortSignal;
  /** Whether the command came with `exec-oob` (out of band). */
  readonly outOfBand: boolean;
}

/**
 * One command a {@linkcode QmpServer} serves.
 *
 * The server checks the arguments against `arguments` first (QEMU's errors
 * for missing, unexpected and mistyped ones), then calls `run`. What `run`
 * returns is the `return` value (`{}` when it returns nothing); a
 * {@linkcode QmpError} it throws is the error reply, with its class and
 * desc; any other error is a `GenericError` with the error's message.
 *
 * @example Usage
 * ```ts
 * import type { QmpCommand } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const echo: QmpCommand = {
 *   arguments: [{ name: "text", type: "str" }],
 *   run: (args) => ({ text: args.text }),
 * };
 * assert.deepEqual(
 *   await echo.run({ text: "hi" }, { signal: new AbortController().signal, outOfBand: false }),
 *   { text: "hi" },
 * );
 * ```
 */
export interface QmpCommand {
  /**
   * The arguments, in QEMU's schema order.
   *
   * @default {[]}
   */
  readonly arguments?: readonly QmpMember[];
  /**
   * Whether the command may be sent with `exec-oob` once a client enabled
   * the `oob` capability (QEMU: `migrate-recover`, `migrate-pause`).
   *
   * @default {false}
   */
  readonly allowOob?: boolean;
  /**
   * Runs the command.
   *
   * @param args The checked arguments; optional ones that were left out are absent.
   * @param context The client's signal and how the command came.
   * @returns The `return` value, or nothing for `{}`.
   */
  run(
    args: Readonly<Record<string, QmpValue>>,
    context: QmpCommandContext,
  ): QmpValue | void | Promise<QmpValue | void>;
}

/** The commands of a {@linkcode QmpServer}, by name. */
export type QmpCommandTable = Readonly<Record<string, QmpCommand>>;
