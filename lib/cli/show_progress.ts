import { formatProgressLine, type MigrationInfo } from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";

/**
 * Shows a migration's `"progress"` events as one line on standard error,
 * rewritten in place, when standard error is a terminal; returns the
 * function that stops showing them and clears the line.
 *
 * @example Usage
 * ```ts
 * import { showProgress } from "./show_progress.ts";
 * import assert from "node:assert/strict";
 *
 * let err = "";
 * const io = { writeOut: () => {}, writeErr: (text: string) => (err += text), errIsTerminal: true };
 * const migration = new EventTarget();
 * const done = showProgress(migration, io);
 * migration.dispatchEvent(new CustomEvent("progress", { detail: { status: "setup" } }));
 * done();
 * assert.equal(err, "\r\x1b[Ksetup\r\x1b[K");
 * ```
 *
 * @param target The migration: it dispatches `"progress"` events whose
 *   detail is its {@linkcode MigrationInfo}.
 * @param io Where to write.
 * @returns Stops showing progress.
 */
export function showProgress(target: EventTarget, io: CliIo): () => void {
  if (!io.errIsTerminal) return () => {};
  const listener = (event: Event) => {
    io.writeErr(
      `\r\x1b[K${
        formatProgressLine((event as CustomEvent<MigrationInfo>).detail)
      }`,
    );
  };
  target.addEventListener("progress", listener);
  return () => {
    target.removeEventListener("progress", listener);
    io.writeErr("\r\x1b[K");
  };
}
