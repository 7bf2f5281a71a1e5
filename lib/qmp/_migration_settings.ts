/**
 * A monitored guest's migration capabilities and parameters: QEMU 7.2's
 * full sets, checked with QEMU's texts, and the part livemig's engine
 * implements. Private to lib/qmp/.
 *
 * - Capabilities livemig does not implement are listed (`false`) and may
 *   be turned off; turning one on is refused with livemig's refusal (the
 *   one the command line gives), after QEMU's own checks.
 * - Parameters are all kept as QEMU keeps them; those without effect in
 *   livemig are inert (their capabilities cannot be turned on); the
 *   `tls-*` ones name `object-add` objects, looked up (as QEMU does) when
 *   a migration connects or listens.
 *
 * @module
 */

import { describeError } from "../errors.ts";
import type { MultifdCompression } from "../wire/multifd_flags.ts";
import {
  checkCapabilityName,
  type MigrationCapabilities,
  type MigrationCapability,
  type MigrationParameters,
} from "../migration/migration_parameters.ts";
import { checkCapabilityChange } from "./check_capability_change.ts";
import { checkParameterChange } from "./check_parameter_change.ts";
import {
  DEFAULT_QEMU_MIGRATION_CAPABILITIES,
  QEMU_MIGRATION_CAPABILITIES,
  type QemuMigrationCapabilities,
  type QemuMigrationCapability,
} from "./qemu_capabilities.ts";
import {
  DEFAULT_QEMU_MIGRATION_PARAMETERS,
  type QemuMigrationParameters,
} from "./qemu_parameters.ts";
import { QmpError } from "./qmp_error.ts";
import type { QmpValue } from "./qmp_json.ts";

/** The parameters livemig's engine applies, also during a migration. */
const LIVE_PARAMETERS = [
  "max-bandwidth",
  "downtime-limit",
  "xbzrle-cache-size",
  "max-postcopy-bandwidth",
  "throttle-trigger-threshold",
  "cpu-throttle-initial",
  "cpu-throttle-increment",
  "cpu-throttle-tailslow",
  "max-cpu-throttle",
  "multifd-channels",
  "multifd-compression",
] as const;

/** What a capability change depends on besides the capabilities. */
export interface SettingsContext {
  /** An outgoing migration is running. */
  migrationRunning: boolean;
  /** The guest waits for an incoming migration. */
  incoming: boolean;
}

/** QEMU's capabilities and parameters of one guest. */
export class MigrationSettings {
  #capabilities: QemuMigrationCapabilities = {
    ...DEFAULT_QEMU_MIGRATION_CAPABILITIES,
  };
  #parameters: QemuMigrationParameters = DEFAULT_QEMU_MIGRATION_PARAMETERS;

  /** The capabilities, QEMU's 21. */
  get capabilities(): Readonly<QemuMigrationCapabilities> {
    return this.#capabilities;
  }

  /** The parameters, QEMU's keys. */
  get parameters(): QemuMigrationParameters {
    return this.#parameters;
  }

  /**
   * `migrate-set-capabilities`.
   *
   * @param args The command's arguments.
   * @param context Whether a migration runs, the incoming side.
   * @throws {QmpError} With QEMU's or livemig's refusal.
   */
  setCapabilities(
    args: Readonly<Record<string, QmpValue>>,
    context: SettingsContext,
  ): void {
    const changes = args.capabilities as readonly {
      capability: QemuMigrationCapability;
      state: boolean;
    }[];
    const result = checkCapabilityChange(this.#capabilities, changes, {
      migrationRunning: context.migrationRunning,
      incoming: context.incoming,
      parameters: this.#parameters,
    });
    if (!result.ok) throw new QmpError({ desc: result.desc });
    for (const capability of QEMU_MIGRATION_CAPABILITIES) {
      if (!result.value[capability] || this.#capabilities[capability]) {
        continue;
      }
      try {
        checkCapabilityName(capability);
      } catch (error) {
        throw new QmpError({ desc: describeError(error), cause: error });
      }
    }
    this.#capabilities = result.value;
  }

  /**
   * Takes over the settings of a migration the app made itself: its
   * capabilities (those QEMU 7.2 has) and its parameters.
   *
   * @param capabilities The migration's capabilities.
   * @param parameters The migration's parameters.
   */
  adopt(
    capabilities: Readonly<MigrationCapabilities>,
    parameters: Readonly<MigrationParameters>,
  ): void {
    const next = { ...DEFAULT_QEMU_MIGRATION_CAPABILITIES };
    for (const capability of QEMU_MIGRATION_CAPABILITIES) {
      next[capability] =
        (capabilities as Partial<Record<string, boolean>>)[capability] ??
          false;
    }
    this.#capabilities = next;
    const values: Record<string, QmpValue> = { ...this.#parameters };
    for (const name of LIVE_PARAMETERS) values[name] = parameters[name];
    this.#parameters = values;
  }

  /** `query-migrate-capabilities`: all 21, in QEMU's order. */
  queryCapabilities(): QmpValue {
    return QEMU_MIGRATION_CAPABILITIES.map((capability) => ({
      capability,
      state: this.#capabilities[capability],
    }));
  }

  /**
   * `migrate-set-parameters`.
   *
   * @param args The command's arguments.
   * @returns The livemig parameters that changed, to apply to a running
   *   migration.
   * @throws {QmpError} With QEMU's or livemig's refusal.
   */
  setParameters(
    args: Readonly<Record<string, QmpValue>>,
  ): Partial<MigrationParameters> {
    const result = checkParameterChange(this.#parameters, args, {
      capabilities: this.#capabilities,
    });
    if (!result.ok) throw new QmpError({ desc: result.desc });
    const before = this.livemigParameters();
    this.#parameters = result.value;
    const after = this.livemigParameters();
    const changed: Partial<MigrationParameters> = {};
    for (const name of LIVE_PARAMETERS) {
      if (Object.hasOwn(args, name) || before[name] !== after[name]) {
        (changed as Record<string, unknown>)[name] = after[name];
      }
    }
    return changed;
  }

  /** The capabilities livemig's engine implements, as they are set. */
  livemigCapabilities(): Partial<MigrationCapabilities> {
    const capabilities: Partial<MigrationCapabilities> = {};
    for (const capability of QEMU_MIGRATION_CAPABILITIES) {
      if (!this.#capabilities[capability]) continue;
      capabilities[capability as MigrationCapability] = true;
    }
    return capabilities;
  }

  /**
   * The parameters livemig's engine applies, as numbers it can use: a
   * 64-bit bandwidth beyond 2^53 is as good as unlimited, and an XBZRLE
   * cache larger than 2^40 bytes is held to that.
   */
  livemigParameters(): Pick<
    MigrationParameters,
    typeof LIVE_PARAMETERS[number]
  > {
    const get = (name: string, max: number) => {
      const value = this.#parameters[name];
      return typeof value === "bigint" || (value as number) > max
        ? max
        : value as number;
    };
    return {
      "max-bandwidth": get("max-bandwidth", Number.MAX_SAFE_INTEGER),
      "downtime-limit": get("downtime-limit", Number.MAX_SAFE_INTEGER),
      "xbzrle-cache-size": get("xbzrle-cache-size", 2 ** 40),
      "max-postcopy-bandwidth": get(
        "max-postcopy-bandwidth",
        Number.MAX_SAFE_INTEGER,
      ),
      "throttle-trigger-threshold": get("throttle-trigger-threshold", 100),
      "cpu-throttle-initial": get("cpu-throttle-initial", 99),
      "cpu-throttle-increment": get("cpu-throttle-increment", 99),
      "cpu-throttle-tailslow": this.#parameters["cpu-throttle-tailslow"] ===
        true,
      "max-cpu-throttle": get("max-cpu-throttle", 99),
      "multifd-channels": get("multifd-channels", 255),
      "multifd-compression": this.#parameters[
        "multifd-compression"
      ] as MultifdCompression,
    };
  }
}
