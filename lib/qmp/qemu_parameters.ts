/**
 * QEMU 7.2's migration parameters (`migrate-set-parameters`,
 * `query-migrate-parameters`): names in QEMU's schema order, argument types
 * as QEMU reads them, and 7.2's defaults.
 *
 * The integer widths decide QEMU's errors for out-of-range values: `uint8`
 * parameters answer `Parameter 'compress-level' expects uint8_t` for 256 or
 * -1; `uint64`/`size` ones read -1 as 18446744073709551615 (accepted for
 * `max-bandwidth`, refused by the range check for `downtime-limit`).
 *
 * @module
 */

import type { QmpValue } from "./qmp_json.ts";
import type { QmpType } from "./qmp_schema.ts";

/** One migration parameter. */
export interface QemuMigrationParameter {
  /** The name, e.g. `downtime-limit`. */
  readonly name: string;
  /** How `migrate-set-parameters` reads it. */
  readonly type: QmpType;
  /** QEMU 7.2's value before any change; none for `block-bitmap-mapping`, which is absent until set. */
  readonly default?: QmpValue;
}

/** The multifd compression methods of QEMU 7.2. */
const MULTIFD_COMPRESSION = { enum: ["none", "zlib", "zstd"] } as const;

/** One entry of `block-bitmap-mapping`. */
const BITMAP_NODE_ALIAS: QmpType = {
  members: [
    { name: "node-name", type: "str" },
    { name: "alias", type: "str" },
    {
      name: "bitmaps",
      type: {
        array: {
          members: [
            { name: "name", type: "str" },
            { name: "alias", type: "str" },
            {
              name: "transform",
              type: {
                members: [{ name: "persistent", type: "bool", optional: true }],
              },
              optional: true,
            },
          ],
        },
      },
    },
  ],
};

/**
 * The 27 parameters of QEMU 7.2 in QEMU's schema order, with how they are
 * read and their defaults.
 *
 * @example Usage
 * ```ts
 * import { QEMU_MIGRATION_PARAMETERS } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const downtime = QEMU_MIGRATION_PARAMETERS.find((p) => p.name === "downtime-limit");
 * assert.deepEqual(downtime, { name: "downtime-limit", type: "uint64", default: 300 });
 * assert.equal(QEMU_MIGRATION_PARAMETERS.length, 27);
 * ```
 */
export const QEMU_MIGRATION_PARAMETERS: readonly QemuMigrationParameter[] = [
  { name: "announce-initial", type: "size", default: 50 },
  { name: "announce-max", type: "size", default: 550 },
  { name: "announce-rounds", type: "size", default: 5 },
  { name: "announce-step", type: "size", default: 100 },
  { name: "compress-level", type: "uint8", default: 1 },
  { name: "compress-threads", type: "uint8", default: 8 },
  { name: "compress-wait-thread", type: "bool", default: true },
  { name: "decompress-threads", type: "uint8", default: 2 },
  { name: "throttle-trigger-threshold", type: "uint8", default: 50 },
  { name: "cpu-throttle-initial", type: "uint8", default: 20 },
  { name: "cpu-throttle-increment", type: "uint8", default: 10 },
  { name: "cpu-throttle-tailslow", type: "bool", default: false },
  { name: "tls-creds", type: "str-or-null", default: "" },
  { name: "tls-hostname", type: "str-or-null", default: "" },
  { name: "tls-authz", type: "str-or-null", default: "" },
  { name: "max-bandwidth", type: "size", default: 134_217_728 },
  { name: "downtime-limit", type: "uint64", default: 300 },
  { name: "x-checkpoint-delay", type: "uint32", default: 20_000 },
  { name: "block-incremental", type: "bool", default: false },
  { name: "multifd-channels", type: "uint8", default: 2 },
  { name: "xbzrle-cache-size", type: "size", default: 67_108_864 },
  { name: "max-postcopy-bandwidth", type: "size", default: 0 },
  { name: "max-cpu-throttle", type: "uint8", default: 99 },
  { name: "multifd-compression", type: MULTIFD_COMPRESSION, default: "none" },
  { name: "multifd-zlib-level", type: "uint8", default: 1 },
  { name: "multifd-zstd-level", type: "uint8", default: 1 },
  { name: "block-bitmap-mapping", type: { array: BITMAP_NODE_ALIAS } },
];

/**
 * The parameters' values by name, as `query-migrate-parameters` reports
 * them: 64-bit values above 2^53 as bigints, the `tls-*` strings never
 * `null` (setting `null` stores `""`), `block-bitmap-mapping` only once set.
 */
export type QemuMigrationParameters = Readonly<Record<string, QmpValue>>;

/**
 * QEMU 7.2's parameters before any change, in QEMU's order: what
 * `query-migrate-parameters` answers on a fresh QEMU.
 *
 * @example Usage
 * ```ts
 * import { DEFAULT_QEMU_MIGRATION_PARAMETERS } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(DEFAULT_QEMU_MIGRATION_PARAMETERS["max-bandwidth"], 134217728);
 * assert.equal(Object.keys(DEFAULT_QEMU_MIGRATION_PARAMETERS).length, 26);
 * ```
 */
export const DEFAULT_QEMU_MIGRATION_PARAMETERS: QemuMigrationParameters = Object
  .fromEntries(
    QEMU_MIGRATION_PARAMETERS.filter((p) => p.default !== undefined).map((
      p,
    ) => [p.name, p.default!]),
  );
