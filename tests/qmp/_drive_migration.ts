/**
 * One precopy migration driven over two QMP monitors, the way a
 * management program does it, whatever answers on them (QEMU 7.2 or
 * `cli.ts run`): `events` on both ends, `migrate-incoming` on the
 * destination, `migrate` on the source to the port the destination
 * reports, then both ends' `completed`.
 *
 * @module
 */

import type { QmpClient, QmpEvent } from "../../lib/qmp/qmp_client.ts";
import type { QmpValue } from "../../lib/qmp/qmp_json.ts";

/** Options for {@linkcode migrateOverQmp}. */
export interface MigrateOverQmpOptions {
  /** Parameters to set on the source first. */
  parameters?: Record<string, QmpValue>;
  /** Runs once the source is active, before waiting for completion. */
  whileActive?: () => Promise<void>;
  /** How long to wait for completion, in ms. */
  timeoutMs?: number;
}

/** What each end sent while migrating. */
export interface MigrationEvents {
  source: QmpEvent[];
  destination: QmpEvent[];
}

/**
 * Migrates the guest behind `source` to the one waiting behind
 * `destination` (started with `-incoming defer`).
 *
 * @param source The source's monitor.
 * @param destination The destination's monitor.
 * @param options Parameters, what to do meanwhile, the time limit.
 * @returns The events of both ends from the start to completion.
 */
export async function migrateOverQmp(
  source: QmpClient,
  destination: QmpClient,
  options: MigrateOverQmpOptions = {},
): Promise<MigrationEvents> {
  const events: MigrationEvents = {
    source: collect(source),
    destination: collect(destination),
  };
  const on = { capabilities: [{ capability: "events", state: true }] };
  await source.execute("migrate-set-capabilities", on);
  await destination.execute("migrate-set-capabilities", on);
  await destination.execute("migrate-incoming", { uri: "tcp:127.0.0.1:0" });
  const listening = await destination.execute<
    { "socket-address": { port: string }[] }
  >("query-migrate");
  const port = listening["socket-address"][0]!.port;
  if (options.parameters) {
    await source.execute("migrate-set-parameters", options.parameters);
  }
  await source.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
  const timeoutMs = options.timeoutMs ?? 60_000;
  if (options.whileActive) {
    await source.waitForEvent("MIGRATION", (e) => e.data.status === "active");
    await options.whileActive();
  }
  await source.waitForEvent(
    "MIGRATION",
    (e) => e.data.status === "completed",
    timeoutMs,
  );
  await destination.waitForEvent(
    "MIGRATION",
    (e) => e.data.status === "completed",
    timeoutMs,
  );
  return events;
}

function collect(qmp: QmpClient): QmpEvent[] {
  const events: QmpEvent[] = [];
  void (async () => {
    for await (const event of qmp.events()) events.push(event);
  })();
  return events;
}
