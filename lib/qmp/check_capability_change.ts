/**
 * QEMU 7.2's checks on `migrate-set-capabilities` (`migrate_caps_check()`
 * and the command around it), as a pure function with QEMU's error texts.
 *
 * The checks, in QEMU's order, on the capabilities as they would be after
 * the change:
 *
 * | Condition                                                                 | desc                                                                      |
 * | ------------------------------------------------------------------------- | ------------------------------------------------------------------------- |
 * | a migration is running                                                    | `There's a migration process in progress`                                 |
 * | postcopy-ram turned on in an incoming guest, host without userfaultfd     | `Postcopy is not supported`                                               |
 * | postcopy-ram with x-ignore-shared                                         | `Postcopy is not compatible with ignore-shared`                           |
 * | background-snapshot, host kernel without write protection                 | `Background-snapshot is not supported by host kernel`                     |
 * | background-snapshot, guest memory that cannot be write-protected          | `Background-snapshot is not compatible with guest memory configuration`   |
 * | background-snapshot with one of 15 others                                 | `Background-snapshot is not compatible with xbzrle`                       |
 * | zero-copy-send without multifd, or with compress, xbzrle, multifd compression or TLS | `Zero copy only available for non-compressed non-TLS multifd migration` |
 * | multifd in an incoming guest whose URI has a single channel               | `multifd is not supported by current protocol`                            |
 * | postcopy-preempt without postcopy-ram                                     | `Postcopy preempt requires postcopy-ram`                                  |
 * | postcopy-preempt with compress                                            | `Postcopy preempt not compatible with compress`                           |
 * | multifd with compress                                                     | `Multifd is not compatible with compress`                                 |
 *
 * Unknown capability names never get this far: QEMU's argument check
 * answers `Parameter 'capability' does not accept value 'warp-drive'`.
 *
 * @module
 */

import { BACKGROUND_SNAPSHOT_CONFLICTS } from "../migration/check_background_snapshot.ts";
import {
  QEMU_MIGRATION_CAPABILITIES,
  type QemuMigrationCapabilities,
  type QemuMigrationCapability,
} from "./qemu_capabilities.ts";
import {
  DEFAULT_QEMU_MIGRATION_PARAMETERS,
  type QemuMigrationParameters,
} from "./qemu_parameters.ts";

/** The outcome of a QEMU check: the new state, or QEMU's `desc` for the refusal. */
export type QemuCheckResult<T> =
  | { ok: true; value: T }
  | { ok: false; desc: string };

/** One entry of `migrate-set-capabilities`' list. */
export interface QemuCapabilityChange {
  /** The capability. */
  capability: QemuMigrationCapability;
  /** Its new state. */
  state: boolean;
}

/** What besides the capabilities QEMU looks at. */
export interface CapabilityCheckOptions {
  /**
   * A migration is running (setup, active, any postcopy status,
   * pre-switchover, device, cancelling…).
   *
   * @default {false}
   */
  migrationRunning?: boolean;
  /**
   * The guest waits for an incoming migration (run state `inmigrate`).
   *
   * @default {false}
   */
  incoming?: boolean;
  /**
   * The host can run postcopy (userfaultfd); checked only when an incoming
   * guest turns postcopy-ram on.
   *
   * @default {true}
   */
  postcopySupported?: boolean;
  /**
   * What the host offers background-snapshot: no write protection at all,
   * write protection that guest memory cannot use, or usable write
   * protection.
   *
   * @default {"compatible"}
   */
  writeTracking?: "absent" | "available" | "compatible";
  /**
   * The incoming URI can carry several channels (sockets can; `exec:` and
   * `fd:` cannot).
   *
   * @default {true}
   */
  multiChannelsAllowed?: boolean;
  /**
   * The current parameters: `multifd-compression` and `tls-creds` matter to
   * zero-copy-send.
   *
   * @default {DEFAULT_QEMU_MIGRATION_PARAMETERS}
   */
  parameters?: QemuMigrationParameters;
}

/**
 * Applies `migrate-set-capabilities` to `current` the way QEMU 7.2 does:
 * every entry in order (the last one for a capability wins), then QEMU's
 * checks on the result. A refused change changes nothing.
 *
 * @example Usage
 * ```ts
 * import { checkCapabilityChange, DEFAULT_QEMU_MIGRATION_CAPABILITIES } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(
 *   checkCapabilityChange(DEFAULT_QEMU_MIGRATION_CAPABILITIES, [{ capability: "postcopy-preempt", state: true }]),
 *   { ok: false, desc: "Postcopy preempt requires postcopy-ram" },
 * );
 * const result = checkCapabilityChange(DEFAULT_QEMU_MIGRATION_CAPABILITIES, [
 *   { capability: "postcopy-ram", state: true },
 *   { capability: "postcopy-preempt", state: true },
 * ]);
 * assert.ok(result.ok && result.value["postcopy-preempt"]);
 * ```
 *
 * @param current The capabilities now.
 * @param changes The entries of the command's `capabilities` list.
 * @param options Whether a migration runs, the incoming side, host facts, parameters.
 * @returns The capabilities after the change, or QEMU's desc.
 */
export function checkCapabilityChange(
  current: Readonly<QemuMigrationCapabilities>,
  changes: readonly QemuCapabilityChange[],
  options: CapabilityCheckOptions = {},
): QemuCheckResult<QemuMigrationCapabilities> {
  const {
    migrationRunning = false,
    incoming = false,
    postcopySupported = true,
    writeTracking = "compatible",
    multiChannelsAllowed = true,
    parameters = DEFAULT_QEMU_MIGRATION_PARAMETERS,
  } = options;
  if (migrationRunning) {
    return { ok: false, desc: "There's a migration process in progress" };
  }
  const next = {} as QemuMigrationCapabilities;
  for (const capability of QEMU_MIGRATION_CAPABILITIES) {
    next[capability] = current[capability] ?? false;
  }
  for (const { capability, state } of changes) next[capability] = state;
  const refuse = (desc: string): QemuCheckResult<never> => ({
    ok: false,
    desc,
  });

  if (next["postcopy-ram"]) {
    if (!current["postcopy-ram"] && incoming && !postcopySupported) {
      return refuse("Postcopy is not supported");
    }
    if (next["x-ignore-shared"]) {
      return refuse("Postcopy is not compatible with ignore-shared");
    }
  }
  if (next["background-snapshot"]) {
    if (writeTracking === "absent") {
      return refuse("Background-snapshot is not supported by host kernel");
    }
    if (writeTracking === "available") {
      return refuse(
        "Background-snapshot is not compatible with guest memory configuration",
      );
    }
    const other = BACKGROUND_SNAPSHOT_CONFLICTS.find((c) => next[c]);
    if (other !== undefined) {
      return refuse(`Background-snapshot is not compatible with ${other}`);
    }
  }
  if (
    next["zero-copy-send"] &&
    (!next.multifd || next.compress || next.xbzrle ||
      parameters["multifd-compression"] !== "none" ||
      (typeof parameters["tls-creds"] === "string" &&
        parameters["tls-creds"] !== ""))
  ) {
    return refuse(
      "Zero copy only available for non-compressed non-TLS multifd migration",
    );
  }
  if (incoming && !multiChannelsAllowed && next.multifd) {
    return refuse("multifd is not supported by current protocol");
  }
  if (next["postcopy-preempt"]) {
    if (!next["postcopy-ram"]) {
      return refuse("Postcopy preempt requires postcopy-ram");
    }
    if (next.compress) {
      return refuse("Postcopy preempt not compatible with compress");
    }
  }
  if (next.multifd && next.compress) {
    return refuse("Multifd is not compatible with compress");
  }
  return { ok: true, value: next };
}
