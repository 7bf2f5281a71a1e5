import type { GuestMemory } from "./guest_memory.ts";

/** One field of a guest's device state, for the vmdesc trailer. */
export interface GuestStateField {
  /** Field name. */
  name: string;
  /** vmstate type name (`uint32`, `uint64`, `buffer`, …). */
  type: string;
  /** Bytes of the field. */
  size: number;
}

/**
 * What a migration needs from a guest: its RAM with a dirty log, a way to
 * stop and restart it, and its device state (the small, versioned part
 * that is not RAM).
 *
 * @example Usage
 * ```ts
 * import { GuestMemory, type MigratableGuest } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * let running = true;
 * const guest: MigratableGuest = {
 *   memory: new GuestMemory([{ idstr: "app.state", size: 4096 }]),
 *   get running() { return running; },
 *   pause() { running = false; },
 *   resume() { running = true; },
 *   saveState: () => new Uint8Array(0),
 *   loadState() {},
 * };
 * await guest.pause();
 * assert.equal(guest.running, false);
 * ```
 */
export interface MigratableGuest {
  /** The guest's RAM. */
  readonly memory: GuestMemory;
  /** Whether the guest is running (writing to its RAM). */
  readonly running: boolean;
  /**
   * Stops the guest: once this resolves it writes nothing more.
   */
  pause(): void | Promise<void>;
  /** Starts the guest again. */
  resume(): void;
  /**
   * The guest's device state, taken while it is paused.
   *
   * @returns The state bytes.
   */
  saveState(): Uint8Array;
  /**
   * Restores device state saved by the source.
   *
   * @param state The state bytes.
   */
  loadState(state: Uint8Array): void;
  /**
   * The layout of the state bytes, field by field; without it the state
   * is described as one buffer.
   */
  readonly stateFields?: readonly GuestStateField[] | undefined;
}
