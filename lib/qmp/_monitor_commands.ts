/**
 * The command table of a {@linkcode MigrationMonitor}: QEMU 7.2's schema
 * for each command ({@linkcode qemuCommand}) around the monitor's parts.
 * Private to lib/qmp/.
 *
 * @module
 */

import type { DirtyRateSampler } from "./_dirty_rate_sampler.ts";
import { runHmp } from "./_hmp.ts";
import type { IncomingMigration } from "./_incoming_migration.ts";
import type { MigrationSettings } from "./_migration_settings.ts";
import type { OutgoingMigration } from "./_outgoing_migration.ts";
import type { QomObjects } from "./_qom_objects.ts";
import type { VmRunState } from "./_vm_run_state.ts";
import { qemuCommand } from "./qemu_commands.ts";
import type { QmpCommandTable } from "./qmp_command.ts";
import { QmpError } from "./qmp_error.ts";
import type { QmpValue } from "./qmp_json.ts";

/** The parts of a monitor the commands act on. */
export interface MonitorParts {
  runState: VmRunState;
  settings: MigrationSettings;
  outgoing: OutgoingMigration;
  incoming: IncomingMigration;
  dirtyRate: DirtyRateSampler;
  /** The TLS objects of `object-add`. */
  objects: QomObjects;
  /** Ends the guest (`quit`), after the reply is on its way. */
  quit(): void;
}

/**
 * Builds the commands.
 *
 * @param parts What they act on.
 * @returns The table for a QmpServer.
 */
export function monitorCommands(parts: MonitorParts): QmpCommandTable {
  return {
    ...runStateCommands(parts),
    ...migrationCommands(parts),
    ...parts.objects.commands(),
  };
}

/** The run state, settings, queries and HMP. */
function runStateCommands(parts: MonitorParts): QmpCommandTable {
  const { runState, settings, outgoing, incoming, dirtyRate } = parts;
  const queryMigrate = (): Record<string, QmpValue> => ({
    ...incoming.info(),
    ...outgoing.info(),
  });
  return {
    "query-status": qemuCommand("query-status", () => runState.status()),
    "stop": qemuCommand("stop", () => runState.stop()),
    "cont": qemuCommand("cont", () => runState.cont()),
    "quit": qemuCommand("quit", () => {
      // QEMU sends SHUTDOWN, answers, then goes away.
      runState.shutdown("host-qmp-quit");
      queueMicrotask(() => parts.quit());
    }),
    "migrate-set-capabilities": qemuCommand(
      "migrate-set-capabilities",
      (args) =>
        settings.setCapabilities(args, {
          migrationRunning: outgoing.running,
          incoming: runState.state === "inmigrate",
        }),
    ),
    "query-migrate-capabilities": qemuCommand(
      "query-migrate-capabilities",
      () => settings.queryCapabilities(),
    ),
    "migrate-set-parameters": qemuCommand(
      "migrate-set-parameters",
      (args) => outgoing.parametersChanged(settings.setParameters(args)),
    ),
    "query-migrate-parameters": qemuCommand(
      "query-migrate-parameters",
      () => settings.parameters,
    ),
    "query-migrate": qemuCommand("query-migrate", queryMigrate),
    "calc-dirty-rate": qemuCommand(
      "calc-dirty-rate",
      (args) => dirtyRate.start(args),
    ),
    "query-dirty-rate": qemuCommand(
      "query-dirty-rate",
      () => dirtyRate.query(),
    ),
    "human-monitor-command": qemuCommand(
      "human-monitor-command",
      (args) =>
        runHmp(args["command-line"] as string, {
          queryMigrate,
          runState: () => {
            const { status, running } = runState.status() as {
              status: string;
              running: boolean;
            };
            return { status, running };
          },
          capabilities: () => settings.capabilities,
          parameters: () => settings.parameters,
        }),
    ),
  };
}

/** The commands that start, steer, pause, recover and cancel migrations. */
function migrationCommands(parts: MonitorParts): QmpCommandTable {
  const { outgoing, incoming } = parts;
  return {
    "migrate": qemuCommand("migrate", (args) => outgoing.migrate(args)),
    "migrate-incoming": qemuCommand(
      "migrate-incoming",
      (args) => incoming.listen(args.uri as string),
    ),
    "migrate_cancel": qemuCommand("migrate_cancel", () => outgoing.cancel()),
    "migrate-continue": qemuCommand(
      "migrate-continue",
      (args) => outgoing.continue(args.state as string),
    ),
    "migrate-pause": qemuCommand("migrate-pause", () => {
      if (outgoing.source?.status === "postcopy-active") {
        outgoing.source.pause();
      } else if (!incoming.pause()) {
        throw new QmpError({
          desc:
            "migrate-pause is currently only supported during postcopy-active state",
        });
      }
    }),
    "migrate-recover": qemuCommand(
      "migrate-recover",
      (args) => incoming.recover(args.uri as string),
    ),
    "migrate-start-postcopy": qemuCommand(
      "migrate-start-postcopy",
      () => outgoing.startPostcopy(),
    ),
  };
}
