import {
  type MigrationCapabilities,
  type MigrationParameters,
  parseCapabilityArgument,
  parseParameterArgument,
} from "../../mod.ts";

/** Capabilities and parameters as `-c` and `-p` flags set them. */
export interface MigrationSettings {
  /** The capabilities the flags set, on or off. */
  capabilities: Partial<MigrationCapabilities>;
  /** The parameters the flags set. */
  parameters: Partial<MigrationParameters>;
}

/**
 * Reads repeated `-c NAME=on|off` and `-p NAME=VALUE` flags; a later flag
 * for the same name wins.
 *
 * @example Usage
 * ```ts
 * import { parseMigrationSettings } from "./parse_migration_settings.ts";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseMigrationSettings(["xbzrle=on"], ["downtime-limit=1s"]), {
 *   capabilities: { xbzrle: true },
 *   parameters: { "downtime-limit": 1000 },
 * });
 * ```
 *
 * @param capabilityFlags The values of `-c`.
 * @param parameterFlags The values of `-p`.
 * @returns The settings.
 * @throws {TypeError} For an unknown name or a malformed flag.
 * @throws {RangeError} For a value out of range.
 */
export function parseMigrationSettings(
  capabilityFlags: string[] | undefined,
  parameterFlags: string[] | undefined,
): MigrationSettings {
  const capabilities: Partial<MigrationCapabilities> = {};
  for (const flag of capabilityFlags ?? []) {
    const [name, on] = parseCapabilityArgument(flag);
    capabilities[name] = on;
  }
  const parameters: Partial<MigrationParameters> = {};
  for (const flag of parameterFlags ?? []) {
    const [name, value] = parseParameterArgument(flag);
    (parameters as Record<string, unknown>)[name] = value;
  }
  return { capabilities, parameters };
}
