/**
 * QEMU 7.2's migration capabilities, in the order `query-migrate-capabilities`
 * lists them (QEMU's `MigrationCapability`), all off by default.
 *
 * @module
 */

/**
 * The 21 migration capabilities of QEMU 7.2, in QEMU's order. livemig's
 * `mapped-ram` is not among them: QEMU 7.2 answers
 * `Parameter 'capability' does not accept value 'mapped-ram'`.
 *
 * @example Usage
 * ```ts
 * import { QEMU_MIGRATION_CAPABILITIES } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(QEMU_MIGRATION_CAPABILITIES.length, 21);
 * assert.equal(QEMU_MIGRATION_CAPABILITIES[0], "xbzrle");
 * assert.equal(QEMU_MIGRATION_CAPABILITIES.at(-1), "postcopy-preempt");
 * ```
 */
export const QEMU_MIGRATION_CAPABILITIES = [
  "xbzrle",
  "rdma-pin-all",
  "auto-converge",
  "zero-blocks",
  "compress",
  "events",
  "postcopy-ram",
  "x-colo",
  "release-ram",
  "block",
  "return-path",
  "pause-before-switchover",
  "multifd",
  "dirty-bitmaps",
  "postcopy-blocktime",
  "late-block-activate",
  "x-ignore-shared",
  "validate-uuid",
  "background-snapshot",
  "zero-copy-send",
  "postcopy-preempt",
] as const;

/** One of QEMU 7.2's migration capabilities. */
export type QemuMigrationCapability =
  typeof QEMU_MIGRATION_CAPABILITIES[number];

/** Which of QEMU 7.2's capabilities are on. */
export type QemuMigrationCapabilities = {
  [C in QemuMigrationCapability]: boolean;
};

/**
 * Every capability off, as QEMU starts.
 *
 * @example Usage
 * ```ts
 * import { DEFAULT_QEMU_MIGRATION_CAPABILITIES } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(DEFAULT_QEMU_MIGRATION_CAPABILITIES.events, false);
 * ```
 */
export const DEFAULT_QEMU_MIGRATION_CAPABILITIES: Readonly<
  QemuMigrationCapabilities
> = Object.fromEntries(
  QEMU_MIGRATION_CAPABILITIES.map((capability) => [capability, false]),
) as QemuMigrationCapabilities;
