/**
 * The HMP commands `human-monitor-command` runs, with QEMU 7.2's text:
 * `info migrate`, `info status`, `info migrate_capabilities`,
 * `info migrate_parameters`; anything else is QEMU's
 * `unknown command: 'X'`. Lines end with `\r\n`. Private to lib/qmp/.
 *
 * @module
 */

import { formatInfoMigrate } from "./format_info_migrate.ts";
import { QEMU_MIGRATION_CAPABILITIES } from "./qemu_capabilities.ts";
import type { QmpValue } from "./qmp_json.ts";

/** What the HMP commands read. */
export interface HmpSource {
  /** `query-migrate`. */
  queryMigrate(): Record<string, QmpValue>;
  /** `query-status`'s `status` and `running`. */
  runState(): { status: string; running: boolean };
  /** The capabilities by name. */
  capabilities(): Readonly<Record<string, boolean>>;
  /** The parameters by name. */
  parameters(): Readonly<Record<string, QmpValue>>;
}

/** `info migrate_parameters`: name, and the unit QEMU prints after the value. */
const PARAMETER_LINES: readonly (readonly [string, string])[] = [
  ["announce-initial", " ms"],
  ["announce-max", " ms"],
  ["announce-rounds", ""],
  ["announce-step", " ms"],
  ["compress-level", ""],
  ["compress-threads", ""],
  ["compress-wait-thread", ""],
  ["decompress-threads", ""],
  ["throttle-trigger-threshold", ""],
  ["cpu-throttle-initial", ""],
  ["cpu-throttle-increment", ""],
  ["cpu-throttle-tailslow", ""],
  ["max-cpu-throttle", ""],
  ["tls-creds", ""],
  ["tls-hostname", ""],
  ["max-bandwidth", " bytes/second"],
  ["downtime-limit", " ms"],
  ["x-checkpoint-delay", " ms"],
  ["block-incremental", ""],
  ["multifd-channels", ""],
  ["multifd-compression", ""],
  ["xbzrle-cache-size", " bytes"],
  ["max-postcopy-bandwidth", ""],
  ["tls-authz", ""],
];

/**
 * Runs one HMP command line.
 *
 * @param commandLine The text, e.g. `info migrate`.
 * @param source What the commands read.
 * @returns The command's output.
 */
export function runHmp(commandLine: string, source: HmpSource): string {
  const words = commandLine.trim().split(/\s+/);
  if (words[0] === "info" && words.length === 2) {
    switch (words[1]) {
      case "migrate":
        return formatInfoMigrate(source.queryMigrate());
      case "status":
        return infoStatus(source.runState());
      case "migrate_capabilities":
        return QEMU_MIGRATION_CAPABILITIES.map((name) =>
          `${name}: ${source.capabilities()[name] ? "on" : "off"}\r\n`
        ).join("");
      case "migrate_parameters":
        return infoMigrateParameters(source.parameters());
    }
  }
  return `unknown command: '${words.join(" ")}'\r\n`;
}

function infoStatus(state: { status: string; running: boolean }): string {
  if (state.running) return "VM status: running\r\n";
  return state.status === "paused"
    ? "VM status: paused\r\n"
    : `VM status: paused (${state.status})\r\n`;
}

function infoMigrateParameters(
  parameters: Readonly<Record<string, QmpValue>>,
): string {
  const lines = PARAMETER_LINES.map(([name, unit]) => {
    const value = parameters[name];
    const text = typeof value === "boolean"
      ? (value ? "on" : "off")
      : typeof value === "string" && name.startsWith("tls-")
      ? `'${value}'`
      : String(value);
    return `${name}: ${text}${unit}\r\n`;
  });
  if (parameters["block-bitmap-mapping"] !== undefined) {
    lines.push("block-bitmap-mapping:\r\n");
    for (
      const node of parameters["block-bitmap-mapping"] as Record<
        string,
        QmpValue
      >[]
    ) {
      lines.push(`  '${node["node-name"]}' -> '${node.alias}'\r\n`);
      for (const bitmap of node.bitmaps as Record<string, QmpValue>[]) {
        lines.push(`    '${bitmap.name}' -> '${bitmap.alias}'\r\n`);
      }
    }
  }
  return lines.join("");
}
