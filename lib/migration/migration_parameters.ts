/**
 * Migration capabilities and parameters under QEMU's names, with QEMU's
 * defaults and checks (`migrate-set-capabilities`,
 * `migrate-set-parameters`, QEMU's `migration/options.c`).
 *
 * @module
 */

import { NotSupportedError } from "../errors.ts";
import { checkBackgroundSnapshot } from "./check_background_snapshot.ts";
import { parseInteger, parseSwitch, splitArgument } from "./_parse_setting.ts";
import type { MultifdCompression } from "../wire/multifd_flags.ts";
import {
  parseBandwidth,
  parseDuration,
  parseSize,
} from "../bytes/human_units.ts";

/** The capabilities livemig implements. */
export type MigrationCapability =
  | "xbzrle"
  | "return-path"
  | "events"
  | "pause-before-switchover"
  | "postcopy-ram"
  | "postcopy-preempt"
  | "postcopy-blocktime"
  | "mapped-ram"
  | "auto-converge"
  | "dirty-limit"
  | "validate-uuid"
  | "switchover-ack"
  | "background-snapshot"
  | "multifd";

/** Which capabilities are on. */
export type MigrationCapabilities = { [C in MigrationCapability]: boolean };

/** The parameters livemig implements, in QEMU's units. */
export interface MigrationParameters {
  /** Bytes per second the precopy stream may use (QEMU: 128 MiB/s). */
  "max-bandwidth": number;
  /** Longest acceptable guest pause in milliseconds (QEMU: 300). */
  "downtime-limit": number;
  /** Bytes per second to assume for the switchover decision; 0 = measured. */
  "avail-switchover-bandwidth": number;
  /** Bytes of the sender's XBZRLE page cache (QEMU: 64 MiB). */
  "xbzrle-cache-size": number;
  /** Bytes per second of the postcopy background copy; 0 = unlimited. */
  "max-postcopy-bandwidth": number;
  /**
   * auto-converge: the percentage of the bytes sent in a sync period that
   * the bytes dirtied in it may reach before it counts as too high
   * (QEMU: 50).
   */
  "throttle-trigger-threshold": number;
  /** auto-converge: the first CPU throttle, in percent (QEMU: 20). */
  "cpu-throttle-initial": number;
  /** auto-converge: how much each further step adds, in percent (QEMU: 10). */
  "cpu-throttle-increment": number;
  /**
   * auto-converge: steps after the first add only what would bring the
   * dirty rate down to the threshold, at most the increment (QEMU: false).
   */
  "cpu-throttle-tailslow": boolean;
  /** auto-converge: the most the CPU is throttled, in percent (QEMU: 99). */
  "max-cpu-throttle": number;
  /**
   * dirty-limit: milliseconds over which the guest's dirty rate is
   * measured when it is held to the limit (QEMU 8.1 on: 1000).
   */
  "x-vcpu-dirty-limit-period": number;
  /** dirty-limit: the most a vCPU may dirty, in MB/s (QEMU 8.1 on: 1). */
  "vcpu-dirty-limit": number;
  /** Channel connections of a multifd migration, 1 to 255 (QEMU: 2). */
  "multifd-channels": number;
  /** How multifd channels compress pages (QEMU: `none`). */
  "multifd-compression": MultifdCompression;
  /** zlib level of multifd `zlib`, 0 to 9 (QEMU: 1). */
  "multifd-zlib-level": number;
  /** zstd level of multifd `zstd`, 0 to 20 (QEMU: 1). */
  "multifd-zstd-level": number;
}

/** Every capability, off: QEMU's defaults. */
export const DEFAULT_CAPABILITIES: Readonly<MigrationCapabilities> = {
  "xbzrle": false,
  "return-path": false,
  "events": false,
  "pause-before-switchover": false,
  "postcopy-ram": false,
  "postcopy-preempt": false,
  "postcopy-blocktime": false,
  "mapped-ram": false,
  "auto-converge": false,
  "dirty-limit": false,
  "validate-uuid": false,
  "switchover-ack": false,
  "background-snapshot": false,
  "multifd": false,
};

/** QEMU's defaults for the parameters livemig implements. */
export const DEFAULT_PARAMETERS: Readonly<MigrationParameters> = {
  "max-bandwidth": 134_217_728,
  "downtime-limit": 300,
  "avail-switchover-bandwidth": 0,
  "xbzrle-cache-size": 67_108_864,
  "max-postcopy-bandwidth": 0,
  "throttle-trigger-threshold": 50,
  "cpu-throttle-initial": 20,
  "cpu-throttle-increment": 10,
  "cpu-throttle-tailslow": false,
  "max-cpu-throttle": 99,
  "x-vcpu-dirty-limit-period": 1000,
  "vcpu-dirty-limit": 1,
  "multifd-channels": 2,
  "multifd-compression": "none",
  "multifd-zlib-level": 1,
  "multifd-zstd-level": 1,
};

/** QEMU capabilities livemig knows but does not implement. */
const UNSUPPORTED_CAPABILITIES = new Set([
  "rdma-pin-all",
  "zero-blocks",
  "compress",
  "x-colo",
  "release-ram",
  "block",
  "dirty-bitmaps",
  "late-block-activate",
  "x-ignore-shared",
  "zero-copy-send",
]);

/** QEMU parameters livemig knows but does not implement. */
const UNSUPPORTED_PARAMETERS = new Set([
  "announce-initial",
  "announce-max",
  "announce-rounds",
  "announce-step",
  "compress-level",
  "compress-threads",
  "compress-wait-thread",
  "decompress-threads",
  "tls-creds",
  "tls-hostname",
  "tls-authz",
  "x-checkpoint-delay",
  "block-incremental",
  "multifd-qatzip-level",
  "block-bitmap-mapping",
  "mode",
  "zero-page-detection",
  "direct-io",
]);

const MAX_DOWNTIME_MS = 2000 * 1000;

/** QEMU's ranges for the throttling parameters (`migrate_params_check()`). */
const RANGES: Partial<Record<keyof MigrationParameters, [number, number]>> = {
  "throttle-trigger-threshold": [1, 100],
  "cpu-throttle-initial": [1, 99],
  "cpu-throttle-increment": [1, 99],
  "max-cpu-throttle": [1, 99],
  "x-vcpu-dirty-limit-period": [1, 1000],
  "vcpu-dirty-limit": [1, Number.MAX_SAFE_INTEGER],
};

/**
 * Checks a capability name.
 *
 * @example Usage
 * ```ts
 * import { checkCapabilityName, NotSupportedError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(checkCapabilityName("xbzrle"), "xbzrle");
 * assert.throws(() => checkCapabilityName("compress"), NotSupportedError);
 * assert.throws(() => checkCapabilityName("warp-drive"), TypeError);
 * ```
 *
 * @param name The name.
 * @returns The name, typed.
 * @throws {NotSupportedError} For QEMU capabilities livemig lacks.
 * @throws {TypeError} For names QEMU does not have either.
 */
export function checkCapabilityName(name: string): MigrationCapability {
  if (Object.hasOwn(DEFAULT_CAPABILITIES, name)) {
    return name as MigrationCapability;
  }
  if (UNSUPPORTED_CAPABILITIES.has(name)) {
    throw new NotSupportedError(
      `Cannot set capability "${name}": livemig does not implement it`,
    );
  }
  throw new TypeError(
    `Cannot set capability "${name}": it is not a migration capability (known: ${
      Object.keys(DEFAULT_CAPABILITIES).join(", ")
    })`,
  );
}

/**
 * Checks a set of capabilities for the combinations QEMU refuses.
 *
 * @example Usage
 * ```ts
 * import { checkCapabilities, DEFAULT_CAPABILITIES } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * checkCapabilities({ ...DEFAULT_CAPABILITIES, xbzrle: true });
 * assert.throws(() => checkCapabilities({ ...DEFAULT_CAPABILITIES, "postcopy-preempt": true }), TypeError);
 * ```
 *
 * @param capabilities The capabilities.
 * @throws {TypeError} If a combination is not allowed.
 * @throws {NotSupportedError} For multifd with postcopy-ram, which QEMU
 *   7.2 accepts but livemig's source does not implement, and for
 *   background-snapshot with mapped-ram.
 */
export function checkCapabilities(capabilities: MigrationCapabilities): void {
  checkBackgroundSnapshot(capabilities);
  if (capabilities.multifd && capabilities["postcopy-ram"]) {
    throw new NotSupportedError(
      'Cannot set capability "multifd" with "postcopy-ram": livemig\'s source does not move postcopy pages off the multifd channels (QEMU 7.2 accepts the pair)',
    );
  }
  if (capabilities["postcopy-preempt"] && !capabilities["postcopy-ram"]) {
    throw new TypeError(
      'Cannot set capability "postcopy-preempt": it requires "postcopy-ram"',
    );
  }
  if (capabilities["switchover-ack"] && !capabilities["return-path"]) {
    throw new TypeError(
      "Capability 'switchover-ack' requires capability 'return-path'",
    );
  }
  if (capabilities["dirty-limit"] && capabilities["auto-converge"]) {
    throw new TypeError(
      'Cannot set capability "dirty-limit": it conflicts with "auto-converge"',
    );
  }
  if (capabilities["mapped-ram"]) {
    for (const other of ["xbzrle", "postcopy-ram"] as const) {
      if (capabilities[other]) {
        throw new TypeError(
          `Cannot set capability "mapped-ram": it is incompatible with "${other}"`,
        );
      }
    }
  }
}

/**
 * Checks one parameter value.
 *
 * @example Usage
 * ```ts
 * import { checkParameter } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * checkParameter("downtime-limit", 300);
 * assert.throws(() => checkParameter("downtime-limit", 2_000_001), RangeError);
 * assert.throws(() => checkParameter("xbzrle-cache-size", 12288), RangeError);
 * assert.throws(
 *   () => checkParameter("multifd-channels", 0),
 *   { message: "Parameter 'multifd_channels' expects a value between 1 and 255" },
 * );
 * ```
 *
 * @param name The parameter.
 * @param value Its value in QEMU's unit.
 * @param pageSize The target page size, for `xbzrle-cache-size`.
 * @throws {RangeError} If the value is out of QEMU's range.
 */
export function checkParameter<K extends keyof MigrationParameters>(
  name: K,
  value: MigrationParameters[K],
  pageSize = 4096,
): void {
  if (name === "cpu-throttle-tailslow") {
    if (typeof value !== "boolean") {
      throw new TypeError(
        `Cannot set parameter "${name}": it must be true or false: received ${value}`,
      );
    }
    return;
  }
  if (name === "multifd-compression") {
    if (!MULTIFD_COMPRESSIONS.includes(value as MultifdCompression)) {
      throw new TypeError(
        `Parameter 'multifd-compression' does not accept value '${value}'`,
      );
    }
    return;
  }
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(
      `Cannot set parameter "${name}": it must be a non-negative integer: received ${value}`,
    );
  }
  const qemuRange = QEMU_RANGES[name];
  if (
    qemuRange !== undefined && (value < qemuRange[0] || value > qemuRange[1])
  ) {
    // QEMU 7.2's message, with its underscores.
    throw new RangeError(
      `Parameter '${name.replaceAll("-", "_")}' expects a value between ${
        qemuRange[0]
      } and ${qemuRange[1]}`,
    );
  }
  if (name === "downtime-limit" && value > MAX_DOWNTIME_MS) {
    throw new RangeError(
      `Cannot set parameter "downtime-limit": it must be in the range of 0 to ${MAX_DOWNTIME_MS} ms: received ${value}`,
    );
  }
  const range = RANGES[name];
  if (range !== undefined && (value < range[0] || value > range[1])) {
    throw new RangeError(
      `Cannot set parameter "${name}": it must be in the range of ${
        range[0]
      } to ${range[1]}: received ${value}`,
    );
  }
  if (
    name === "xbzrle-cache-size" &&
    (value < pageSize || !Number.isInteger(Math.log2(value)))
  ) {
    throw new RangeError(
      `Cannot set parameter "xbzrle-cache-size": it expects a power of two no less than the target page size (${pageSize}): received ${value}`,
    );
  }
}

/** The multifd compression methods of QEMU 7.2. */
const MULTIFD_COMPRESSIONS: readonly MultifdCompression[] = [
  "none",
  "zlib",
  "zstd",
];

/** Parameters with QEMU 7.2's ranges (`migrate_params_check`). */
const QEMU_RANGES: Partial<
  Record<keyof MigrationParameters, readonly [number, number]>
> = {
  "multifd-channels": [1, 255],
  "multifd-zlib-level": [0, 9],
  "multifd-zstd-level": [0, 20],
};

/**
 * Parses `name=value` for a parameter, accepting human units: sizes for
 * `xbzrle-cache-size`, bandwidths for `*-bandwidth`, durations for
 * `downtime-limit`.
 *
 * @example Usage
 * ```ts
 * import { parseParameterArgument } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseParameterArgument("max-bandwidth=100MB/s"), ["max-bandwidth", 100_000_000]);
 * assert.deepEqual(parseParameterArgument("downtime-limit=1s"), ["downtime-limit", 1000]);
 * ```
 *
 * @param argument The `name=value` text.
 * @returns The parameter and its value in QEMU's unit.
 * @throws {TypeError} If the text is malformed or the parameter unknown.
 * @throws {NotSupportedError} For QEMU parameters livemig lacks.
 * @throws {RangeError} If the value is out of range.
 */
export function parseParameterArgument(
  argument: string,
): [keyof MigrationParameters, number | boolean | MultifdCompression] {
  const [name, value] = splitArgument(argument, "parameter");
  let parsed: number | boolean;
  switch (name) {
    case "throttle-trigger-threshold":
    case "cpu-throttle-initial":
    case "cpu-throttle-increment":
    case "max-cpu-throttle":
    case "vcpu-dirty-limit":
      parsed = parseInteger(name, value);
      break;
    case "x-vcpu-dirty-limit-period":
      parsed = /^\d+$/.test(value)
        ? Number(value)
        : parseDuration(value, `parameter "${name}"`);
      break;
    case "cpu-throttle-tailslow":
      parsed = parseSwitch(name, value, "parameter");
      break;
    case "multifd-compression":
      checkParameter(name, value as MultifdCompression);
      return [name, value as MultifdCompression];
    case "multifd-channels":
    case "multifd-zlib-level":
    case "multifd-zstd-level":
      if (!/^\d+$/.test(value)) {
        throw new TypeError(
          `Cannot set parameter "${name}": it expects an integer: received "${value}"`,
        );
      }
      parsed = Number(value);
      break;
    case "max-bandwidth":
    case "avail-switchover-bandwidth":
    case "max-postcopy-bandwidth":
      parsed = parseBandwidth(value, `parameter "${name}"`);
      break;
    case "downtime-limit":
      parsed = parseDuration(value, `parameter "${name}"`);
      break;
    case "xbzrle-cache-size":
      parsed = parseSize(value, `parameter "${name}"`);
      break;
    default:
      if (UNSUPPORTED_PARAMETERS.has(name)) {
        throw new NotSupportedError(
          `Cannot set parameter "${name}": livemig does not implement it`,
        );
      }
      throw new TypeError(
        `Cannot set parameter "${name}": it is not a migration parameter (known: ${
          Object.keys(DEFAULT_PARAMETERS).join(", ")
        })`,
      );
  }
  checkParameter(name, parsed);
  return [name, parsed];
}

/**
 * Parses `name=on|off` for a capability.
 *
 * @example Usage
 * ```ts
 * import { parseCapabilityArgument } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseCapabilityArgument("xbzrle=on"), ["xbzrle", true]);
 * assert.throws(() => parseCapabilityArgument("xbzrle=maybe"), TypeError);
 * ```
 *
 * @param argument The `name=on|off` text (`true`/`false` too).
 * @returns The capability and its state.
 * @throws {TypeError} If the text is malformed or the capability unknown.
 * @throws {NotSupportedError} For QEMU capabilities livemig lacks.
 */
export function parseCapabilityArgument(
  argument: string,
): [MigrationCapability, boolean] {
  const [name, value] = splitArgument(argument, "capability");
  const capability = checkCapabilityName(name);
  return [capability, parseSwitch(name, value, "capability")];
}

/**
 * Checks what single values cannot: `max-cpu-throttle` may not be below
 * `cpu-throttle-initial` (QEMU's `migrate_params_check()`).
 *
 * @example Usage
 * ```ts
 * import { checkParameters, DEFAULT_PARAMETERS } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * checkParameters(DEFAULT_PARAMETERS);
 * assert.throws(
 *   () => checkParameters({ ...DEFAULT_PARAMETERS, "max-cpu-throttle": 10 }),
 *   RangeError,
 * );
 * ```
 *
 * @param parameters The parameters as they would be.
 * @throws {RangeError} If `max-cpu-throttle` is below `cpu-throttle-initial`.
 */
export function checkParameters(
  parameters: Readonly<MigrationParameters>,
): void {
  const initial = parameters["cpu-throttle-initial"];
  const max = parameters["max-cpu-throttle"];
  if (max < initial) {
    throw new RangeError(
      `Cannot set parameter "max-cpu-throttle": it must be in the range of cpu-throttle-initial (${initial}) to 99: received ${max}`,
    );
  }
}
