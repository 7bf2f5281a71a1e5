import {
  listenTransport,
  type MigrationEventDetail,
  MigrationMonitor,
  type SourceMigration,
} from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";

/**
 * Serves a QMP monitor for the migration `migrate` runs (`--qmp ADDRESS`):
 * `migrate-continue`, `migrate_cancel`, `migrate-set-parameters`,
 * `query-migrate` and the events, as QEMU's monitor offers them. With
 * pause-before-switchover the command says on standard error, once the
 * source waits in pre-switchover, how to let it go on; `quit` cancels the
 * migration. Returns the handle that stops serving.
 *
 * @example Usage
 * ```ts
 * import { serveMonitor } from "./serve_monitor.ts";
 * import { QmpClient, SimulatedGuest, SourceMigration } from "../../mod.ts";
 * import assert from "node:assert/strict";
 *
 * let err = "";
 * const io = { writeOut: () => {}, writeErr: (text: string) => (err += text), errIsTerminal: false };
 * const source = new SourceMigration(new SimulatedGuest({ ramBytes: 1 << 20, running: false }));
 * const monitor = await serveMonitor(source, "tcp:127.0.0.1:0", io);
 * const address = /QMP monitor at (\S+)/.exec(err)![1]!;
 * const qmp = await QmpClient.connect(address);
 * assert.deepEqual(await qmp.execute("query-migrate"), {});
 * await qmp.close();
 * await monitor.stop();
 * ```
 *
 * @param source The migration, not started yet.
 * @param address Where the monitor listens: `unix:PATH` or `tcp:HOST:PORT`.
 * @param io Where to say where it listens and how to continue.
 * @returns `stop()` closes the monitor.
 */
export async function serveMonitor(
  source: SourceMigration,
  address: string,
  io: CliIo,
): Promise<{ stop(): Promise<void> }> {
  const monitor = new MigrationMonitor({ guest: source.guest });
  monitor.attachSource(source);
  const listener = await listenTransport(address);
  io.writeErr(`livemig: QMP monitor at ${listener.address}\n`);
  const serving = monitor.serve(listener);
  const onStatus = (event: Event) => {
    const { status } = (event as CustomEvent<MigrationEventDetail>).detail;
    if (status !== "pre-switchover") return;
    io.writeErr(
      `livemig: paused before switchover (guest stopped); continue with: livemig qmp ${listener.address} migrate-continue '{"state": "pre-switchover"}'\n`,
    );
  };
  source.addEventListener("status", onStatus);
  void monitor.ended.then(() => {
    try {
      source.cancel();
    } catch {
      // postcopy cannot be cancelled; the migration goes on
    }
  });
  return {
    async stop() {
      source.removeEventListener("status", onStatus);
      await monitor.close();
      await serving;
    },
  };
}
