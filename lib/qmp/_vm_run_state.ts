/**
 * The run state of a monitored guest, as QEMU 7.2 reports it in
 * `query-status`, with the `STOP` and `RESUME` events QEMU sends when it
 * changes. Private to lib/qmp/.
 *
 * ```
 * prelaunch (-S) ──cont──► running ◄──cont── paused ◄──stop── running
 * running ──switchover──► finish-migrate ──completed──► postmigrate ──cont──► running
 *                          finish-migrate ──cancelled/failed──► running (if it ran) / paused
 * inmigrate (-incoming) ──loaded──► running (autostart) / paused (-S or stop)
 *           stop / cont only set autostart there, as in QEMU
 * ```
 *
 * @module
 */

import type { MigratableGuest } from "../guest/migratable_guest.ts";
import { QmpError } from "./qmp_error.ts";
import type { QmpValue } from "./qmp_json.ts";
import type { QemuRunState } from "./migration_monitor.ts";

/** Sends an event to the monitor's clients. */
export type EmitEvent = (
  event: string,
  data?: Readonly<Record<string, QmpValue>>,
) => void;

/** Options for {@linkcode VmRunState}. */
export interface VmRunStateOptions {
  /** The guest, unless it is still to arrive by migration. */
  guest: MigratableGuest | undefined;
  /** Waits for an incoming migration (`inmigrate`). */
  incoming: boolean;
  /** Started with `-S`: stays stopped until `cont`. */
  paused: boolean;
  /** Where events go. */
  emit: EmitEvent;
}

/** The run state, the guest it applies to, and QEMU's `autostart`. */
export class VmRunState {
  readonly #emit: EmitEvent;
  #state: QemuRunState;
  #guest: MigratableGuest | undefined;
  #autostart: boolean;
  /** Whether the guest ran when a migration stopped it. */
  #ranBeforeSwitchover = false;

  constructor(options: VmRunStateOptions) {
    this.#emit = options.emit;
    this.#guest = options.guest;
    this.#autostart = !options.paused;
    this.#state = options.incoming
      ? "inmigrate"
      : options.paused
      ? "prelaunch"
      : "running";
  }

  /** The run state. */
  get state(): QemuRunState {
    return this.#state;
  }

  /** The guest (none while the first incoming migration is loading). */
  get guest(): MigratableGuest | undefined {
    return this.#guest;
  }

  /** Whether an incoming guest starts once loaded (`-S` and `stop` clear it). */
  get autostart(): boolean {
    return this.#autostart;
  }

  /** `query-status`. */
  status(): QmpValue {
    return {
      running: this.#state === "running",
      singlestep: false,
      status: this.#state,
    };
  }

  /** QMP `stop`: in `inmigrate` it only clears autostart. */
  async stop(): Promise<void> {
    if (this.#state === "inmigrate") {
      this.#autostart = false;
      return;
    }
    if (this.#state !== "running") return;
    await this.#guest?.pause();
    this.#state = "paused";
    this.#emit("STOP");
  }

  /**
   * QMP `cont`: in `inmigrate` it only sets autostart.
   *
   * @throws {QmpError} While a migration holds the guest stopped.
   */
  cont(): void {
    if (this.#state === "finish-migrate") {
      throw new QmpError({ desc: "Migration is not finalized yet" });
    }
    if (this.#state === "inmigrate") {
      this.#autostart = true;
      return;
    }
    if (this.#state === "running") return;
    this.#start();
  }

  /** An outgoing migration stopped the guest for its switchover. */
  switchover(): void {
    if (this.#state === "finish-migrate") return;
    this.#ranBeforeSwitchover = this.#state === "running";
    this.#state = "finish-migrate";
    if (this.#ranBeforeSwitchover) this.#emit("STOP");
  }

  /**
   * An outgoing migration ended: completed leaves the guest in
   * `postmigrate`; cancelled or failed restarts it if it ran before.
   *
   * @param completed Whether it completed.
   */
  outgoingEnded(completed: boolean): void {
    if (this.#state !== "finish-migrate") return;
    if (completed) {
      this.#state = "postmigrate";
    } else if (this.#ranBeforeSwitchover) {
      this.#state = "running";
      this.#emit("RESUME");
    } else {
      this.#state = "paused";
    }
  }

  /**
   * An incoming migration has the guest: it runs (autostart) or stays
   * paused.
   *
   * @param guest The loaded guest.
   * @param start Whether to start it here (precopy); a postcopy migration
   *   starts it itself when the device state is in.
   */
  incomingStarted(guest: MigratableGuest, start: boolean): void {
    this.#guest = guest;
    if (this.#state !== "inmigrate") return;
    if (this.#autostart) {
      if (start && !guest.running) guest.resume();
      this.#state = "running";
      this.#emit("RESUME");
    } else {
      this.#state = "paused";
    }
  }

  /**
   * The guest is shutting down (QMP `quit`, a signal).
   *
   * @param reason QEMU's reason, e.g. `host-qmp-quit`.
   */
  shutdown(reason: string): void {
    if (this.#state === "shutdown") return;
    void this.#guest?.pause();
    this.#state = "shutdown";
    this.#emit("SHUTDOWN", { guest: false, reason });
  }

  #start(): void {
    const guest = this.#guest;
    if (guest !== undefined && !guest.running) guest.resume();
    this.#state = "running";
    this.#emit("RESUME");
  }
}
