/**
 * QEMU's migration statuses (`MigrationStatus` in `qapi/migration.json`)
 * and the moves between them, for the source and the destination, as
 * QEMU's `migrate_set_state(state, old, new)` allows them (7.2 and 10.0).
 *
 * @module
 */

/** Where a migration is, named as QEMU's `query-migrate` names it. */
export type MigrationStatus =
  | "none"
  | "setup"
  | "cancelling"
  | "cancelled"
  | "active"
  | "postcopy-active"
  | "postcopy-paused"
  | "postcopy-recover-setup"
  | "postcopy-recover"
  | "completed"
  | "failed"
  | "colo"
  | "pre-switchover"
  | "device"
  | "wait-unplug";

/** Which end of a migration a state machine belongs to. */
export type MigrationRole = "source" | "destination";

type Table = { readonly [S in MigrationStatus]: readonly MigrationStatus[] };

/**
 * Every move the source may make. `cancelling` is reachable from every
 * running status except the postcopy ones: cancelling a postcopy
 * migration would leave neither end with a whole guest.
 */
const SOURCE: Table = {
  "none": ["setup"],
  "setup": ["active", "wait-unplug", "failed", "cancelling"],
  "wait-unplug": ["active", "failed", "cancelling"],
  "active": [
    "pre-switchover",
    "device",
    "postcopy-active",
    "completed",
    "colo",
    "failed",
    "cancelling",
  ],
  "pre-switchover": ["device", "postcopy-active", "failed", "cancelling"],
  "device": ["completed", "postcopy-active", "failed", "cancelling"],
  "postcopy-active": ["postcopy-paused", "completed", "failed"],
  "postcopy-paused": ["postcopy-recover-setup", "postcopy-recover", "failed"],
  "postcopy-recover-setup": ["postcopy-recover", "postcopy-paused", "failed"],
  "postcopy-recover": ["postcopy-active", "postcopy-paused", "failed"],
  "colo": ["completed", "failed"],
  "cancelling": ["cancelled", "failed"],
  "cancelled": ["setup"],
  "completed": ["setup"],
  "failed": ["setup"],
};

/** Every move the destination may make. */
const DESTINATION: Table = {
  "none": ["setup", "active", "failed"],
  "setup": ["active", "failed"],
  "active": ["postcopy-active", "completed", "colo", "failed"],
  "postcopy-active": ["postcopy-paused", "completed", "failed"],
  "postcopy-paused": ["postcopy-recover", "failed"],
  "postcopy-recover": ["postcopy-active", "postcopy-paused", "failed"],
  "colo": ["completed", "failed"],
  "wait-unplug": [],
  "pre-switchover": [],
  "device": [],
  "postcopy-recover-setup": [],
  "cancelling": [],
  "cancelled": [],
  "completed": [],
  "failed": [],
};

/**
 * The statuses in which a source migration is running (QEMU's
 * `migration_is_running()`).
 *
 * @example Usage
 * ```ts
 * import { isRunningStatus } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.ok(isRunningStatus("active"));
 * assert.ok(!isRunningStatus("completed"));
 * ```
 *
 * @param status The status.
 * @returns Whether a migration in that status is still running.
 */
export function isRunningStatus(status: MigrationStatus): boolean {
  return RUNNING.has(status);
}

const RUNNING = new Set<MigrationStatus>([
  "setup",
  "active",
  "postcopy-active",
  "postcopy-paused",
  "postcopy-recover-setup",
  "postcopy-recover",
  "pre-switchover",
  "device",
  "wait-unplug",
  "cancelling",
  "colo",
]);

/**
 * The statuses `status` may move to, for one end.
 *
 * @example Usage
 * ```ts
 * import { nextStatuses } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.ok(nextStatuses("source", "active").includes("device"));
 * assert.ok(!nextStatuses("source", "postcopy-active").includes("cancelling"));
 * ```
 *
 * @param role The end.
 * @param status The current status.
 * @returns The allowed next statuses.
 */
export function nextStatuses(
  role: MigrationRole,
  status: MigrationStatus,
): readonly MigrationStatus[] {
  return (role === "source" ? SOURCE : DESTINATION)[status];
}

/** The detail of a `"migration"` event: QEMU's `MIGRATION` event data. */
export interface MigrationEventDetail {
  /** The new status. */
  status: MigrationStatus;
}

/**
 * Holds the status of one end of a migration and lets it move only as
 * QEMU allows; each move dispatches a `"migration"` event (QEMU's
 * `MIGRATION` event) whose `detail` is `{ status }`.
 *
 * @example Usage
 * ```ts
 * import { MigrationState } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const state = new MigrationState("source");
 * const seen: string[] = [];
 * state.addEventListener("migration", (event) => seen.push((event as CustomEvent).detail.status));
 * state.moveTo("setup");
 * state.moveTo("active");
 * assert.throws(() => state.moveTo("postcopy-paused"), TypeError);
 * assert.deepEqual(seen, ["setup", "active"]);
 * ```
 */
export class MigrationState extends EventTarget {
  readonly #role: MigrationRole;
  #status: MigrationStatus = "none";

  /**
   * Constructs a new instance in status `none`.
   *
   * @param role Which end this is.
   */
  constructor(role: MigrationRole) {
    super();
    this.#role = role;
  }

  /** Which end this is. */
  get role(): MigrationRole {
    return this.#role;
  }

  /** The current status. */
  get status(): MigrationStatus {
    return this.#status;
  }

  /**
   * Moves to `next`.
   *
   * @param next The status to move to.
   * @throws {TypeError} If `next` cannot follow the current status.
   */
  moveTo(next: MigrationStatus): void {
    const allowed = nextStatuses(this.#role, this.#status);
    if (!allowed.includes(next)) {
      throw new TypeError(
        `Cannot move ${this.#role} migration from "${this.#status}" to "${next}": allowed are ${
          allowed.map((s) => `"${s}"`).join(", ") || "none"
        }`,
      );
    }
    this.#status = next;
    this.dispatchEvent(
      new CustomEvent<MigrationEventDetail>("migration", {
        detail: { status: next },
      }),
    );
  }

  /**
   * Moves to `next` only if the current status is `expected` (QEMU's
   * compare-and-swap `migrate_set_state`).
   *
   * @param expected The status the move starts from.
   * @param next The status to move to.
   * @returns Whether the move happened.
   */
  moveFrom(expected: MigrationStatus, next: MigrationStatus): boolean {
    if (this.#status !== expected) return false;
    this.moveTo(next);
    return true;
  }
}
