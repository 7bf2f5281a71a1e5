import { formatQmpJson } from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";

/** Options for {@linkcode printMigrationEvents}. */
export interface PrintMigrationEventsOptions {
  /**
   * The wall clock for the events' timestamps, in milliseconds since the
   * Unix epoch (fractions give the microseconds).
   *
   * @default {() => performance.timeOrigin + performance.now()}
   */
  now?: () => number;
}

/**
 * With the `events` capability, prints each `MIGRATION` and
 * `MIGRATION_PASS` event of a migration on standard error as one line of
 * JSON, exactly as QEMU's monitor sends it:
 * `{"timestamp": {"seconds": …, "microseconds": …}, "event": "MIGRATION", "data": {"status": …}}`.
 * Returns the function that stops printing.
 *
 * @example Usage
 * ```ts
 * import { printMigrationEvents } from "./print_migration_events.ts";
 * import assert from "node:assert/strict";
 *
 * let err = "";
 * const io = { writeOut: () => {}, writeErr: (text: string) => (err += text), errIsTerminal: false };
 * const migration = new EventTarget();
 * const stop = printMigrationEvents(migration, io, { now: () => 1_700_000_000_250.5 });
 * migration.dispatchEvent(new CustomEvent("migration", { detail: { status: "active" } }));
 * migration.dispatchEvent(new CustomEvent("pass", { detail: { pass: 2 } }));
 * stop();
 * const lines = err.trimEnd().split("\n").map((line) => JSON.parse(line));
 * assert.deepEqual(lines[0], {
 *   timestamp: { seconds: 1_700_000_000, microseconds: 250_500 },
 *   event: "MIGRATION",
 *   data: { status: "active" },
 * });
 * assert.deepEqual(lines[1].data, { pass: 2 });
 * assert.equal(lines[1].event, "MIGRATION_PASS");
 * ```
 *
 * @param migration The migration: a source or destination created with
 *   the `events` capability, which dispatches `"migration"` events with
 *   `{ status }` and (the source) `"pass"` events with `{ pass }`.
 * @param io Where to write.
 * @param options The wall clock.
 * @returns Stops printing.
 */
export function printMigrationEvents(
  migration: EventTarget,
  io: CliIo,
  options: PrintMigrationEventsOptions = {},
): () => void {
  const now = options.now ?? (() => performance.timeOrigin + performance.now());
  const print = (event: string, data: Record<string, string | number>) => {
    const micros = Math.floor(now() * 1000);
    io.writeErr(
      formatQmpJson({
        timestamp: {
          seconds: Math.floor(micros / 1_000_000),
          microseconds: micros % 1_000_000,
        },
        event,
        data,
      }) + "\n",
    );
  };
  const onStatus = (event: Event) => {
    const { status } = (event as CustomEvent<{ status: string }>).detail;
    print("MIGRATION", { status });
  };
  const onPass = (event: Event) => {
    const { pass } = (event as CustomEvent<{ pass: number }>).detail;
    print("MIGRATION_PASS", { pass });
  };
  migration.addEventListener("migration", onStatus);
  migration.addEventListener("pass", onPass);
  return () => {
    migration.removeEventListener("migration", onStatus);
    migration.removeEventListener("pass", onPass);
  };
}
