/**
 * A stand-in for a QEMU 7.2 monitor built from lib/qmp's pieces: QEMU's
 * version, the argument schemas of QEMU_COMMANDS, and the capability and
 * parameter state checked by checkCapabilityChange / checkParameterChange.
 * Commands outside a migration answer as QEMU does when nothing runs. Used
 * to replay the recorded transcripts.
 *
 * @module
 */

import { checkCapabilityChange } from "../../lib/qmp/check_capability_change.ts";
import { checkParameterChange } from "../../lib/qmp/check_parameter_change.ts";
import {
  DEFAULT_QEMU_MIGRATION_CAPABILITIES,
  QEMU_MIGRATION_CAPABILITIES,
  type QemuMigrationCapabilities,
  type QemuMigrationCapability,
} from "../../lib/qmp/qemu_capabilities.ts";
import { qemuCommand } from "../../lib/qmp/qemu_commands.ts";
import {
  DEFAULT_QEMU_MIGRATION_PARAMETERS,
  type QemuMigrationParameters,
} from "../../lib/qmp/qemu_parameters.ts";
import { QmpError } from "../../lib/qmp/qmp_error.ts";
import { QmpServer, type QmpVersion } from "../../lib/qmp/qmp_server.ts";

/** The version the recordings were made with. */
export const RECORDED_VERSION: QmpVersion = {
  qemu: { major: 7, minor: 2, micro: 22 },
  package: "Debian 1:7.2+dfsg-7+deb12u18+b3",
};

/** Options for {@linkcode createQemuModel}. */
export interface QemuModelOptions {
  /** Started with `-incoming defer` (run state inmigrate). */
  incoming?: boolean;
  /** The run state `query-status` reports. */
  status?: string;
}

/**
 * A QmpServer that answers like an idle QEMU 7.2 guest.
 *
 * @param options The incoming side and the run state.
 * @returns The server (clients one at a time, as QEMU's socket chardev).
 */
export function createQemuModel(options: QemuModelOptions = {}): QmpServer {
  const { incoming = false, status = "prelaunch" } = options;
  let capabilities: QemuMigrationCapabilities = {
    ...DEFAULT_QEMU_MIGRATION_CAPABILITIES,
  };
  let parameters: QemuMigrationParameters = DEFAULT_QEMU_MIGRATION_PARAMETERS;
  const refuse = (desc: string) => new QmpError({ desc });
  return new QmpServer({
    version: RECORDED_VERSION,
    clients: "one-at-a-time",
    commands: {
      "query-status": qemuCommand("query-status", () => ({
        running: status === "running",
        singlestep: false,
        status,
      })),
      "migrate": qemuCommand("migrate", () => {
        throw refuse("Parameter 'uri' expects a valid migration protocol");
      }),
      "migrate-incoming": qemuCommand("migrate-incoming", () => {
        throw refuse("'-incoming' was not specified on the command line");
      }),
      "migrate-pause": qemuCommand("migrate-pause", () => {
        throw refuse(
          "migrate-pause is currently only supported during postcopy-active state",
        );
      }),
      "migrate-recover": qemuCommand("migrate-recover", () => {
        throw refuse(
          "Migrate recover can only be run when postcopy is paused.",
        );
      }),
      "migrate-continue": qemuCommand("migrate-continue", (args) => {
        if (args.state !== "none") {
          throw refuse("Migration not in expected state: none");
        }
      }),
      "migrate-set-capabilities": qemuCommand(
        "migrate-set-capabilities",
        (args) => {
          const changes = args.capabilities as {
            capability: QemuMigrationCapability;
            state: boolean;
          }[];
          const result = checkCapabilityChange(capabilities, changes, {
            incoming,
            parameters,
          });
          if (!result.ok) throw refuse(result.desc);
          capabilities = result.value;
        },
      ),
      "query-migrate-capabilities": qemuCommand(
        "query-migrate-capabilities",
        () =>
          QEMU_MIGRATION_CAPABILITIES.map((capability) => ({
            capability,
            state: capabilities[capability],
          })),
      ),
      "migrate-set-parameters": qemuCommand(
        "migrate-set-parameters",
        (args) => {
          const result = checkParameterChange(parameters, args, {
            capabilities,
          });
          if (!result.ok) throw refuse(result.desc);
          parameters = result.value;
        },
      ),
      "query-migrate-parameters": qemuCommand(
        "query-migrate-parameters",
        () => parameters,
      ),
      "query-migrate": qemuCommand("query-migrate", () => ({})),
      "human-monitor-command": qemuCommand("human-monitor-command", () => {
        throw refuse("not modelled");
      }),
      "calc-dirty-rate": qemuCommand("calc-dirty-rate", () => {
        throw refuse("not modelled");
      }),
    },
  });
}
