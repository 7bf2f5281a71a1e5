/**
 * The arguments of the QEMU 7.2 commands livemig's monitor serves, as QEMU's
 * schema has them (`query-qmp-schema`), so a {@linkcode QmpServer} refuses
 * missing, unexpected and mistyped arguments with QEMU's texts before a
 * command runs.
 *
 * @module
 */

import type { QmpCommand } from "./qmp_command.ts";
import type { QmpMember } from "./qmp_schema.ts";
import { QEMU_MIGRATION_CAPABILITIES } from "./qemu_capabilities.ts";
import { QEMU_MIGRATION_PARAMETERS } from "./qemu_parameters.ts";

/** The schema part of a command: its arguments and whether it may run out of band. */
export interface QemuCommandSchema {
  /** The arguments in QEMU's order. */
  readonly arguments: readonly QmpMember[];
  /** Whether QEMU lets it run with `exec-oob`. */
  readonly allowOob: boolean;
}

/** QEMU 7.2's `MigrationStatus` values (10.0's `postcopy-recover-setup` is not one). */
const MIGRATION_STATUS = {
  enum: [
    "none",
    "setup",
    "cancelling",
    "cancelled",
    "active",
    "postcopy-active",
    "postcopy-paused",
    "postcopy-recover",
    "completed",
    "failed",
    "colo",
    "pre-switchover",
    "device",
    "wait-unplug",
  ],
} as const;

const NONE: QemuCommandSchema = { arguments: [], allowOob: false };

/** The name of one of {@linkcode QEMU_COMMANDS}. */
export type QemuCommandName =
  | "query-status"
  | "stop"
  | "cont"
  | "quit"
  | "migrate"
  | "migrate-incoming"
  | "migrate_cancel"
  | "migrate-continue"
  | "migrate-pause"
  | "migrate-recover"
  | "migrate-start-postcopy"
  | "migrate-set-capabilities"
  | "query-migrate-capabilities"
  | "migrate-set-parameters"
  | "query-migrate-parameters"
  | "query-migrate"
  | "calc-dirty-rate"
  | "query-dirty-rate"
  | "human-monitor-command";

/**
 * The schemas of QEMU 7.2's run-state and migration commands. The dirty-rate
 * command is `calc-dirty-rate`; QEMU 7.2 has no `calculate-dirty-rate`.
 *
 * @example Usage
 * ```ts
 * import { QEMU_COMMANDS } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(QEMU_COMMANDS["migrate-incoming"].arguments, [{ name: "uri", type: "str" }]);
 * assert.equal(QEMU_COMMANDS["migrate-recover"].allowOob, true);
 * ```
 */
export const QEMU_COMMANDS: Readonly<
  Record<QemuCommandName, QemuCommandSchema>
> = {
  "query-status": NONE,
  "stop": NONE,
  "cont": NONE,
  "quit": NONE,
  "migrate": {
    arguments: [
      { name: "uri", type: "str" },
      { name: "blk", type: "bool", optional: true },
      { name: "inc", type: "bool", optional: true },
      { name: "detach", type: "bool", optional: true },
      { name: "resume", type: "bool", optional: true },
    ],
    allowOob: false,
  },
  "migrate-incoming": {
    arguments: [{ name: "uri", type: "str" }],
    allowOob: false,
  },
  "migrate_cancel": NONE,
  "migrate-continue": {
    arguments: [{ name: "state", type: MIGRATION_STATUS }],
    allowOob: false,
  },
  "migrate-pause": { arguments: [], allowOob: true },
  "migrate-recover": {
    arguments: [{ name: "uri", type: "str" }],
    allowOob: true,
  },
  "migrate-start-postcopy": NONE,
  "migrate-set-capabilities": {
    arguments: [{
      name: "capabilities",
      type: {
        array: {
          members: [
            {
              name: "capability",
              type: { enum: QEMU_MIGRATION_CAPABILITIES },
            },
            { name: "state", type: "bool" },
          ],
        },
      },
    }],
    allowOob: false,
  },
  "query-migrate-capabilities": NONE,
  "migrate-set-parameters": {
    arguments: QEMU_MIGRATION_PARAMETERS.map(({ name, type }) => ({
      name,
      type,
      optional: true,
    })),
    allowOob: false,
  },
  "query-migrate-parameters": NONE,
  "query-migrate": NONE,
  "calc-dirty-rate": {
    arguments: [
      { name: "calc-time", type: "int" },
      { name: "sample-pages", type: "int", optional: true },
      {
        name: "mode",
        type: { enum: ["page-sampling", "dirty-ring", "dirty-bitmap"] },
        optional: true,
      },
    ],
    allowOob: false,
  },
  "query-dirty-rate": NONE,
  "human-monitor-command": {
    arguments: [
      { name: "command-line", type: "str" },
      { name: "cpu-index", type: "int", optional: true },
    ],
    allowOob: false,
  },
};

/**
 * A command with QEMU 7.2's schema for `name` and `run` as what it does.
 *
 * @example Usage
 * ```ts
 * import { createMemoryTransportPair, QmpClient, QmpError, QmpServer, qemuCommand } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const server = new QmpServer({
 *   commands: { "migrate-incoming": qemuCommand("migrate-incoming", () => {}) },
 * });
 * const [near, far] = createMemoryTransportPair();
 * const served = server.handle(far);
 * const qmp = await QmpClient.connect(near);
 * await assert.rejects(qmp.execute("migrate-incoming", { uri: 1 }), (error) =>
 *   error instanceof QmpError && error.desc === "Invalid parameter type for 'uri', expected: string");
 * await qmp.close();
 * await served;
 * ```
 *
 * @param name The QEMU command.
 * @param run What it does (see {@linkcode QmpCommand.run}).
 * @returns The command, for a {@linkcode QmpServer}'s table.
 */
export function qemuCommand(
  name: QemuCommandName,
  run: QmpCommand["run"],
): QmpCommand {
  const schema = QEMU_COMMANDS[name];
  return { arguments: schema.arguments, allowOob: schema.allowOob, run };
}
