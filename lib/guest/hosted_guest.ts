import type { GuestMemory } from "./guest_memory.ts";
import {
  type GuestStateField,
  type GuestThrottle,
  type MigratableGuest,
  NO_THROTTLE,
} from "./migratable_guest.ts";

/** Options for {@linkcode HostedGuest}. */
export interface HostedGuestOptions {
  /**
   * The app's memory. The app marks what it writes with
   * {@linkcode GuestMemory.markDirty} (or writes through
   * {@linkcode GuestMemory.write}).
   */
  memory: GuestMemory;
  /** Called to stop the app's writers; resolve once nothing writes. */
  pause?: () => void | Promise<void>;
  /** Called to let the app's writers go on. */
  resume?: () => void;
  /** The app's state that is not in `memory`. */
  saveState?: () => Uint8Array;
  /** Restores what `saveState` returned on the source. */
  loadState?: (state: Uint8Array) => void;
  /** The layout of the state bytes, for the vmdesc trailer. */
  stateFields?: readonly GuestStateField[];
  /**
   * Called when a migration throttles the app (auto-converge,
   * dirty-limit) and with {@linkcode NO_THROTTLE} when it stops: an app
   * that slows its writers accordingly lets a migration converge that
   * could not otherwise.
   */
  onThrottle?: (throttle: GuestThrottle) => void;
}

/**
 * A guest made of memory an app owns: any Deno app can live-migrate a
 * `Uint8Array` of its state by wrapping it in a {@linkcode GuestMemory},
 * marking what it writes, and stopping its writers when asked.
 *
 * In postcopy the destination resumes the app before all of its memory
 * has arrived, so there the app must go through its
 * {@linkcode GuestMemory} for every access while the migration is in
 * postcopy: `await memory.prepareWrite(idstr, offset, length)` before
 * writing in place (or write with `memory.write()` once it resolved), and
 * `await memory.waitForPage(blockIndex, page)` before reading a page. The
 * first waits for pages that have not arrived (asking the source for
 * them) and keeps a page's received content before its first write, so
 * the destination's `ram-sha256-received` still describes the RAM that
 * arrived. A write that bypasses it lands in a page that may still be
 * missing, and is then overwritten when the page arrives. On a source,
 * and on a destination in precopy (the app stays paused until all of its
 * memory is in), writing and marking the pages dirty is enough, except
 * during a background snapshot (capability `background-snapshot`): there
 * too an app writes with `memory.write()` or awaits `prepareWrite()`
 * before writing in place, which keeps the page's content for the
 * snapshot first (and waits while the snapshot's copies are at their
 * limit); a page marked written without it fails the snapshot.
 *
 * @example Usage
 * ```ts
 * import { GuestMemory, HostedGuest } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const state = new Uint8Array(4 * 4096);
 * let paused = false;
 * const guest = new HostedGuest({
 *   memory: new GuestMemory([{ idstr: "app.state", bytes: state }]),
 *   pause: () => void (paused = true),
 *   resume: () => void (paused = false),
 * });
 * await guest.pause();
 * assert.ok(paused && !guest.running);
 * guest.resume();
 * assert.ok(!paused && guest.running);
 * ```
 */
export class HostedGuest implements MigratableGuest {
  readonly #options: HostedGuestOptions;
  #running = true;
  #throttle: GuestThrottle = NO_THROTTLE;

  /**
   * Constructs a new instance; the app is taken to be running.
   *
   * @param options The memory and the app's callbacks.
   */
  constructor(options: HostedGuestOptions) {
    this.#options = options;
  }

  /** The app's memory. */
  get memory(): GuestMemory {
    return this.#options.memory;
  }

  /** Whether the app is running. */
  get running(): boolean {
    return this.#running;
  }

  /** The layout of the app's state bytes, when it gave one. */
  get stateFields(): readonly GuestStateField[] | undefined {
    return this.#options.stateFields;
  }

  /** The throttle a migration asked for last. */
  get throttle(): GuestThrottle {
    return this.#throttle;
  }

  /**
   * Passes a migration's throttle on to the app (`onThrottle`).
   *
   * @param throttle How much to slow down.
   */
  setThrottle(throttle: GuestThrottle): void {
    this.#throttle = throttle;
    this.#options.onThrottle?.(throttle);
  }

  /** Stops the app's writers. */
  async pause(): Promise<void> {
    await this.#options.pause?.();
    this.#running = false;
  }

  /** Lets the app's writers go on. */
  resume(): void {
    this.#running = true;
    this.#options.resume?.();
  }

  /**
   * The app's state.
   *
   * @returns The bytes, empty when the app keeps none outside memory.
   */
  saveState(): Uint8Array {
    return this.#options.saveState?.() ?? new Uint8Array(0);
  }

  /**
   * Restores the app's state.
   *
   * @param state The bytes from the source.
   */
  loadState(state: Uint8Array): void {
    this.#options.loadState?.(state);
  }
}
