/**
 * Migration capabilities and parameters under QEMU's names, with QEMU's
 * defaults and checks (`migrate-set-capabilities`,
 * `migrate-set-parameters`, QEMU's `migration/options.c`).
 *
 * @module
 */

import { NotSupportedError } from "../errors.ts";
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
  "multifd": false,
};

/** QEMU's defaults for the parameters livemig implements. */
export const DEFAULT_PARAMETERS: Readonly<MigrationParameters> = {
  "max-bandwidth": 134_217_728,
  "downtime-limit": 300,
  "avail-switchover-bandwidth": 0,
  "xbzrle-cache-size": 67_108_864,
  "max-postcopy-bandwidth": 0,
  "multifd-channels": 2,
  "multifd-compression": "none",
  "multifd-zlib-level": 1,
  "multifd-zstd-level": 1,
};

/** QEMU capabilities livemig knows but does not implement. */
const UNSUPPORTED_CAPABILITIES = new Set([
  "rdma-pin-all",
  "auto-converge",
  "zero-blocks",
  "compress",
  "x-colo",
  "release-ram",
  "block",
  "dirty-bitmaps",
  "late-block-activate",
  "x-ignore-shared",
  "validate-uuid",
  "background-snapshot",
  "zero-copy-send",
  "switchover-ack",
  "dirty-limit",
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
  "throttle-trigger-threshold",
  "cpu-throttle-initial",
  "cpu-throttle-increment",
  "cpu-throttle-tailslow",
  "tls-creds",
  "tls-hostname",
  "tls-authz",
  "x-checkpoint-delay",
  "block-incremental",
  "max-cpu-throttle",
  "multifd-qatzip-level",
  "block-bitmap-mapping",
  "x-vcpu-dirty-limit-period",
  "vcpu-dirty-limit",
  "mode",
  "zero-page-detection",
  "direct-io",
]);

const MAX_DOWNTIME_MS = 2000 * 1000;

/**
 * Checks a capability name.
 *
 * @example Usage
 * ```ts
 * import { checkCapabilityName, NotSupportedError } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(checkCapabilityName("xbzrle"), "xbzrle");
 * assert.throws(() => checkCapabilityName("auto-converge"), NotSupportedError);
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
 *   7.2 accepts but livemig's source does not implement.
 */
export function checkCapabilities(capabilities: MigrationCapabilities): void {
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
  const range = QEMU_RANGES[name];
  if (range !== undefined && (value < range[0] || value > range[1])) {
    // QEMU 7.2's message, with its underscores.
    throw new RangeError(
      `Parameter '${name.replaceAll("-", "_")}' expects a value between ${
        range[0]
      } and ${range[1]}`,
    );
  }
  if (name === "downtime-limit" && value > MAX_DOWNTIME_MS) {
    throw new RangeError(
      `Cannot set parameter "downtime-limit": it must be in the range of 0 to ${MAX_DOWNTIME_MS} ms: received ${value}`,
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
): [keyof MigrationParameters, number | MultifdCompression] {
  const [name, value] = splitArgument(argument, "parameter");
  let parsed: number;
  switch (name) {
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
  const state = value.toLowerCase();
  if (state === "on" || state === "true") return [capability, true];
  if (state === "off" || state === "false") return [capability, false];
  throw new TypeError(
    `Cannot set capability "${name}": its state must be on or off: received "${value}"`,
  );
}

function splitArgument(argument: string, what: string): [string, string] {
  const at = argument.indexOf("=");
  if (at <= 0 || at === argument.length - 1) {
    throw new TypeError(
      `Cannot parse ${what} "${argument}": expected name=value`,
    );
  }
  return [argument.slice(0, at), argument.slice(at + 1)];
}
