/**
 * A source's state machine, wired to the source's events: `"status"` on
 * every change, and QEMU's `MIGRATION` event as `"migration"` when the
 * `events` capability is on. Private to the source.
 *
 * @module
 */

import {
  type MigrationEventDetail,
  MigrationState,
} from "./migration_state.ts";

/**
 * A fresh source state machine whose changes `target` dispatches.
 *
 * @param target The source.
 * @param events Whether the `events` capability is on (read at each change).
 * @returns The state machine.
 */
export function sourceState(
  target: EventTarget,
  events: () => boolean,
): MigrationState {
  const state = new MigrationState("source");
  state.addEventListener("migration", (event) => {
    const detail = (event as CustomEvent<MigrationEventDetail>).detail;
    target.dispatchEvent(
      new CustomEvent<MigrationEventDetail>("status", { detail }),
    );
    if (!events()) return;
    target.dispatchEvent(
      new CustomEvent<MigrationEventDetail>("migration", { detail }),
    );
  });
  return state;
}
