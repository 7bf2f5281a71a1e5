/**
 * What `background-snapshot` cannot be combined with: QEMU 7.2's list
 * (`check_caps_background_snapshot` in its `migrate_caps_check()`), with
 * its error text, shared by the engine and the QMP monitor.
 *
 * @module
 */

import { NotSupportedError } from "../errors.ts";

/**
 * The capabilities QEMU 7.2 refuses next to `background-snapshot`, in the
 * order it checks them (names livemig does not implement included).
 *
 * @example Usage
 * ```ts
 * import { BACKGROUND_SNAPSHOT_CONFLICTS } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(BACKGROUND_SNAPSHOT_CONFLICTS[0], "postcopy-ram");
 * assert.ok(BACKGROUND_SNAPSHOT_CONFLICTS.includes("xbzrle"));
 * ```
 */
export const BACKGROUND_SNAPSHOT_CONFLICTS = [
  "postcopy-ram",
  "dirty-bitmaps",
  "postcopy-blocktime",
  "late-block-activate",
  "return-path",
  "multifd",
  "pause-before-switchover",
  "auto-converge",
  "release-ram",
  "rdma-pin-all",
  "compress",
  "xbzrle",
  "x-colo",
  "validate-uuid",
  "zero-copy-send",
] as const;

/**
 * Refuses `background-snapshot` with a capability QEMU 7.2 refuses it
 * with, in QEMU's words; and with `mapped-ram`, which livemig does not
 * write snapshots to.
 *
 * @example Usage
 * ```ts
 * import { checkBackgroundSnapshot } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * checkBackgroundSnapshot({ "background-snapshot": true, events: true });
 * checkBackgroundSnapshot({ xbzrle: true });
 * assert.throws(
 *   () => checkBackgroundSnapshot({ "background-snapshot": true, xbzrle: true }),
 *   { name: "TypeError", message: "Background-snapshot is not compatible with xbzrle" },
 * );
 * ```
 *
 * @param capabilities The capabilities as they would be (absent: off).
 * @throws {TypeError} For a combination QEMU 7.2 refuses.
 * @throws {NotSupportedError} With `mapped-ram`.
 */
export function checkBackgroundSnapshot(
  capabilities: Readonly<Partial<Record<string, boolean>>>,
): void {
  if (!capabilities["background-snapshot"]) return;
  const other = BACKGROUND_SNAPSHOT_CONFLICTS.find((name) =>
    capabilities[name]
  );
  if (other !== undefined) {
    throw new TypeError(`Background-snapshot is not compatible with ${other}`);
  }
  if (capabilities["mapped-ram"]) {
    throw new NotSupportedError(
      'Cannot take a background snapshot with "mapped-ram": livemig writes snapshots as a stream',
    );
  }
}
