import type { MigrationEventDetail, SourceMigration } from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";

/**
 * With pause-before-switchover, the migration waits in pre-switchover for
 * `migrate-continue`; on the command line that is SIGUSR1, and the
 * command says so on standard error when the source gets there. Returns
 * the handle that stops listening.
 *
 * @example Usage
 * ```ts
 * import { continueOnSignal } from "./continue_on_signal.ts";
 * import { SimulatedGuest, SourceMigration } from "../../mod.ts";
 * import assert from "node:assert/strict";
 *
 * let err = "";
 * const io = { writeOut: () => {}, writeErr: (text: string) => (err += text), errIsTerminal: false };
 * const source = new SourceMigration(new SimulatedGuest({ ramBytes: 1 << 20, running: false }));
 * const continuing = continueOnSignal(source, io);
 * source.dispatchEvent(new CustomEvent("status", { detail: { status: "pre-switchover" } }));
 * continuing.stop();
 * assert.match(err, /^livemig: paused before switchover \(guest stopped\); continue with: kill -USR1 \d+\n$/);
 * ```
 *
 * @param source The source migration.
 * @param io Where to write.
 * @returns `stop()` removes the listeners.
 */
export function continueOnSignal(
  source: SourceMigration,
  io: CliIo,
): { stop(): void } {
  const onSignal = () => {
    if (source.status === "pre-switchover") source.continue("pre-switchover");
  };
  const onStatus = (event: Event) => {
    const { status } = (event as CustomEvent<MigrationEventDetail>).detail;
    if (status !== "pre-switchover") return;
    io.writeErr(
      `livemig: paused before switchover (guest stopped); continue with: kill -USR1 ${Deno.pid}\n`,
    );
  };
  let listening = false;
  try {
    Deno.addSignalListener("SIGUSR1", onSignal);
    listening = true;
  } catch {
    // no signals here: the library's continue() is the only way
  }
  source.addEventListener("status", onStatus);
  return {
    stop() {
      source.removeEventListener("status", onStatus);
      if (listening) Deno.removeSignalListener("SIGUSR1", onSignal);
    },
  };
}
