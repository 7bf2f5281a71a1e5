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
 * How much a migration asks a running guest to slow down so that it can
 * converge: auto-converge takes CPU time away (QEMU's CPU throttle: the
 * guest runs `100 - cpuPercentage` percent of the time), dirty-limit caps
 * the rate at which it dirties memory. Both zero: full speed.
 *
 * @example Usage
 * ```ts
 * import type { GuestThrottle } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const throttle: GuestThrottle = { cpuPercentage: 20, dirtyLimit: 0 };
 * const bytesPerSecond = 100e6 * (1 - throttle.cpuPercentage / 100);
 * assert.equal(bytesPerSecond, 80e6);
 * ```
 */
export interface GuestThrottle {
  /** Percent of its CPU time the guest gives up (auto-converge), 0–99. */
  readonly cpuPercentage: number;
  /** Most bytes per second the guest may dirty (dirty-limit); 0 = no cap. */
  readonly dirtyLimit: number;
}

/** No throttle: the guest runs at full speed. */
export const NO_THROTTLE: GuestThrottle = Object.freeze({
  cpuPercentage: 0,
  dirtyLimit: 0,
});

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
  /**
   * Slows the guest down (auto-converge, dirty-limit) or, with
   * {@linkcode NO_THROTTLE}, lets it run at full speed again. A guest
   * without it is never throttled.
   *
   * @param throttle How much.
   */
  setThrottle?(throttle: GuestThrottle): void;
}
