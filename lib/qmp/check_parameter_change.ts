/**
 * QEMU 7.2's checks on `migrate-set-parameters` (`migrate_params_check()`
 * on the parameters as they would be after the change), as a pure function
 * with QEMU's error texts. QEMU names parameters with underscores there.
 *
 * | Parameter                    | Accepted                          | desc                                                                         |
 * | ---------------------------- | --------------------------------- | ---------------------------------------------------------------------------- |
 * | `compress-level`             | ≤ 9                               | `Parameter 'compress_level' expects a value between 0 and 9`                |
 * | `compress-threads`           | ≥ 1                               | `Parameter 'compress_threads' expects a value between 1 and 255`            |
 * | `decompress-threads`         | ≥ 1                               | `Parameter 'decompress_threads' expects a value between 1 and 255`          |
 * | `throttle-trigger-threshold` | 1–100                             | `… expects an integer in the range of 1 to 100`                              |
 * | `cpu-throttle-initial`       | 1–99                              | `… expects an integer in the range of 1 to 99`                               |
 * | `cpu-throttle-increment`     | 1–99                              | `… expects an integer in the range of 1 to 99`                               |
 * | `downtime-limit`             | ≤ 2000000                         | `Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms` |
 * | `multifd-channels`           | ≥ 1                               | `Parameter 'multifd_channels' expects a value between 1 and 255`            |
 * | `xbzrle-cache-size`          | a power of two ≥ the page size    | `Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size` |
 * | `max-cpu-throttle`           | `cpu-throttle-initial`–99         | `Parameter 'max_cpu_throttle' expects an integer in the range of cpu_throttle_initial to 99` |
 * | `announce-initial`, `-max`   | ≤ 100000                          | `Parameter 'announce_initial' expects a value between 0 and 100000`         |
 * | `announce-rounds`            | ≤ 1000                            | `Parameter 'announce_rounds' expects a value between 0 and 1000`            |
 * | `announce-step`              | 1–10000                           | `Parameter 'announce_step' expects a value between 0 and 10000`             |
 * | zero-copy-send on            | no multifd compression, no TLS    | `Zero copy only available for non-compressed non-TLS multifd migration`     |
 *
 * The first failing row wins. QEMU 7.2 accepts `multifd-zlib-level` and
 * `multifd-zstd-level` without checking them and then keeps the old values
 * (recorded: setting 5 leaves 1); this function does the same.
 * `block-bitmap-mapping` is stored as given (its alias checks need block
 * devices, which livemig has none of). Type and width problems (`expects
 * uint8_t`) are found earlier, by the argument check.
 *
 * @module
 */

import type { QmpValue } from "./qmp_json.ts";
import {
  DEFAULT_QEMU_MIGRATION_CAPABILITIES,
  type QemuMigrationCapabilities,
} from "./qemu_capabilities.ts";
import {
  QEMU_MIGRATION_PARAMETERS,
  type QemuMigrationParameters,
} from "./qemu_parameters.ts";
import type { QemuCheckResult } from "./check_capability_change.ts";

/** What besides the parameters QEMU looks at. */
export interface ParameterCheckOptions {
  /**
   * The capabilities now: zero-copy-send refuses multifd compression and TLS.
   *
   * @default {DEFAULT_QEMU_MIGRATION_CAPABILITIES}
   */
  capabilities?: Readonly<QemuMigrationCapabilities>;
  /**
   * The target page size in bytes, the least `xbzrle-cache-size`.
   *
   * @default {4096}
   */
  pageSize?: number;
}

/** Parameters QEMU 7.2 accepts and then does not apply. */
const IGNORED = new Set(["multifd-zlib-level", "multifd-zstd-level"]);

/**
 * Applies `migrate-set-parameters` to `current` the way QEMU 7.2 does: the
 * given parameters over the current ones (`null` for a `tls-*` parameter
 * means `""`), then QEMU's checks on the result. A refused change changes
 * nothing. The result has QEMU's keys in QEMU's order.
 *
 * @example Usage
 * ```ts
 * import { checkParameterChange, DEFAULT_QEMU_MIGRATION_PARAMETERS } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(
 *   checkParameterChange(DEFAULT_QEMU_MIGRATION_PARAMETERS, { "xbzrle-cache-size": 1000 }),
 *   { ok: false, desc: "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size" },
 * );
 * const result = checkParameterChange(DEFAULT_QEMU_MIGRATION_PARAMETERS, { "downtime-limit": 500 });
 * assert.ok(result.ok && result.value["downtime-limit"] === 500);
 * ```
 *
 * @param current The parameters now (all of QEMU's keys).
 * @param changes The command's arguments, already checked for types.
 * @param options The capabilities and the page size.
 * @returns The parameters after the change, or QEMU's desc.
 */
export function checkParameterChange(
  current: QemuMigrationParameters,
  changes: Readonly<Record<string, QmpValue | undefined>>,
  options: ParameterCheckOptions = {},
): QemuCheckResult<QemuMigrationParameters> {
  const {
    capabilities = DEFAULT_QEMU_MIGRATION_CAPABILITIES,
    pageSize = 4096,
  } = options;
  const next: Record<string, QmpValue> = {};
  for (const { name } of QEMU_MIGRATION_PARAMETERS) {
    let value = changes[name];
    if (value === undefined || IGNORED.has(name)) value = current[name];
    else if (value === null && name.startsWith("tls-")) value = "";
    if (value !== undefined) next[name] = value;
  }
  const get = (name: string): bigint => toBigInt(next[name]);
  for (const [name, accepts, text] of RANGE_CHECKS) {
    if (!accepts(get(name), { get, pageSize: BigInt(pageSize) })) {
      return {
        ok: false,
        desc: `Parameter '${name.replaceAll("-", "_")}' expects ${text}`,
      };
    }
  }
  if (
    capabilities["zero-copy-send"] &&
    (next["multifd-compression"] !== "none" || next["tls-creds"] !== "")
  ) {
    return {
      ok: false,
      desc:
        "Zero copy only available for non-compressed non-TLS multifd migration",
    };
  }
  return { ok: true, value: next };
}

/** What a range check may look at besides its parameter. */
interface RangeContext {
  /** Another parameter's value after the change. */
  get(name: string): bigint;
  /** The target page size. */
  pageSize: bigint;
}

/**
 * QEMU's `migrate_params_check()` in its order: the parameter, whether a
 * value is accepted, and what the refusal says it expects. (QEMU also
 * checks max_bandwidth against SIZE_MAX, which a uint64 always meets.)
 */
const RANGE_CHECKS: readonly (readonly [
  string,
  (value: bigint, context: RangeContext) => boolean,
  string,
])[] = [
  ["compress-level", (v) => v <= 9n, "a value between 0 and 9"],
  ["compress-threads", (v) => v >= 1n, "a value between 1 and 255"],
  ["decompress-threads", (v) => v >= 1n, "a value between 1 and 255"],
  [
    "throttle-trigger-threshold",
    (v) => v >= 1n && v <= 100n,
    "an integer in the range of 1 to 100",
  ],
  [
    "cpu-throttle-initial",
    (v) => v >= 1n && v <= 99n,
    "an integer in the range of 1 to 99",
  ],
  [
    "cpu-throttle-increment",
    (v) => v >= 1n && v <= 99n,
    "an integer in the range of 1 to 99",
  ],
  [
    "downtime-limit",
    (v) => v <= 2_000_000n,
    "an integer in the range of 0 to (2000 * 1000) ms",
  ],
  ["multifd-channels", (v) => v >= 1n, "a value between 1 and 255"],
  [
    "xbzrle-cache-size",
    (v, { pageSize }) => v >= pageSize && (v & (v - 1n)) === 0n,
    "a power of two no less than the target page size",
  ],
  [
    "max-cpu-throttle",
    (v, { get }) => v >= get("cpu-throttle-initial") && v <= 99n,
    "an integer in the range of cpu_throttle_initial to 99",
  ],
  ["announce-initial", (v) => v <= 100_000n, "a value between 0 and 100000"],
  ["announce-max", (v) => v <= 100_000n, "a value between 0 and 100000"],
  ["announce-rounds", (v) => v <= 1000n, "a value between 0 and 1000"],
  [
    "announce-step",
    (v) => v >= 1n && v <= 10_000n,
    "a value between 0 and 10000",
  ],
];

function toBigInt(value: QmpValue | undefined): bigint {
  if (typeof value === "bigint") return value;
  if (typeof value === "number" && Number.isInteger(value)) {
    return BigInt(value);
  }
  throw new TypeError(
    `Cannot check a migration parameter: expected an integer, received ${
      String(value)
    }`,
  );
}
