/**
 * A simulated guest: one RAM block and a seeded workload that really runs
 * while a migration runs, on its own task, until the guest is paused.
 *
 * Device state (version 1, big-endian, 56 bytes), sent by a migration as
 * the FULL section `livemig-guest`:
 *
 * ```
 *  0 u32 version = 1       4 u8 workload kind     5 u8 running
 *  6 u16 reserved = 0      8 u64 rate (bytes/s)  16 u64 hot-set bytes
 * 24 u32 seed             28 u32 generator state 32 u64 sweep cursor
 * 40 u64 sweep pass       48 u64 pages written
 * ```
 *
 * @module
 */

import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import { GuestMemory, type GuestMemoryOptions } from "./guest_memory.ts";
import {
  type GuestStateField,
  type GuestThrottle,
  type MigratableGuest,
  NO_THROTTLE,
} from "./migratable_guest.ts";
import { Workload, type WorkloadSpec } from "./workload.ts";

/** Options for {@linkcode SimulatedGuest}. */
export interface SimulatedGuestOptions {
  /** RAM size in bytes, a multiple of the page size. */
  ramBytes: number;
  /**
   * What the guest does.
   *
   * @default {{ kind: "idle" }}
   */
  workload?: WorkloadSpec;
  /**
   * Seed of the workload's generator.
   *
   * @default {1}
   */
  seed?: number;
  /** Time source. Defaults to the real clock. */
  clock?: Clock;
  /**
   * Milliseconds between workload steps.
   *
   * @default {5}
   */
  tickMs?: number;
  /**
   * The RAM block's idstr.
   *
   * @default {"guest.ram"}
   */
  blockName?: string;
  /**
   * The page size.
   *
   * @default {4096}
   */
  pageSize?: number;
  /**
   * Allocates the RAM (see {@linkcode GuestMemoryOptions.allocate}).
   *
   * @default {(size) => new Uint8Array(new SharedArrayBuffer(size))}
   */
  allocate?: GuestMemoryOptions["allocate"];
  /**
   * Whether to fill RAM with seeded non-zero data before the workload
   * starts, like a guest whose memory is in use (the `fill` workload does
   * this and then stays idle).
   *
   * @default {false}
   */
  prefill?: boolean;
  /**
   * Whether the guest starts running (a destination guest starts paused
   * and runs once the migration is loaded).
   *
   * @default {true}
   */
  running?: boolean;
}

const KINDS = ["idle", "random", "hot-set", "sweep", "fill"] as const;
const STATE_VERSION = 1;
const STATE_BYTES = 56;

/**
 * A guest with simulated RAM and a dirtying workload.
 *
 * @example Usage
 * ```ts
 * import { SimulatedGuest } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const guest = new SimulatedGuest({
 *   ramBytes: 1 << 20,
 *   workload: { kind: "sweep", bytesPerSecond: 100 << 20 },
 *   running: false,
 * });
 * guest.memory.startDirtyLog();
 * guest.step(10); // what 10 ms of running writes
 * assert.ok(guest.memory.syncDirtyLog()[0]!.count() > 0);
 * const copy = new SimulatedGuest({ ramBytes: 1 << 20, running: false });
 * copy.loadState(guest.saveState());
 * assert.deepEqual(copy.workload.spec, guest.workload.spec);
 * ```
 */
export class SimulatedGuest implements MigratableGuest {
  readonly #memory: GuestMemory;
  readonly #clock: Clock;
  readonly #tickMs: number;
  #workload: Workload;
  #seed: number;
  #running = false;
  #generation = 0;
  #rateWindowStart: number;
  #rateWindowPages = 0;
  #dirtyRate = 0;
  #blockedMs = 0;
  #throttle: GuestThrottle = NO_THROTTLE;

  /**
   * Constructs a new instance; it starts running unless told otherwise.
   *
   * @param options RAM size, workload, seed, clock.
   */
  constructor(options: SimulatedGuestOptions) {
    this.#memory = new GuestMemory(
      [{ idstr: options.blockName ?? "guest.ram", size: options.ramBytes }],
      {
        pageSize: options.pageSize ?? 4096,
        ...(options.allocate ? { allocate: options.allocate } : {}),
      },
    );
    this.#clock = options.clock ?? SYSTEM_CLOCK;
    this.#tickMs = options.tickMs ?? 5;
    this.#seed = options.seed ?? 1;
    this.#workload = new Workload(
      options.workload ?? { kind: "idle" },
      this.#memory,
      this.#seed,
    );
    if (this.#workload.spec.kind === "fill" || options.prefill) {
      this.#workload.fill();
    }
    this.#rateWindowStart = this.#clock.now();
    if (options.running ?? true) this.resume();
  }

  /** The guest's RAM. */
  get memory(): GuestMemory {
    return this.#memory;
  }

  /** The workload. */
  get workload(): Workload {
    return this.#workload;
  }

  /** Whether the workload is running. */
  get running(): boolean {
    return this.#running;
  }

  /** Bytes the workload dirtied per second, over the last second or more. */
  get dirtyBytesPerSecond(): number {
    return this.#dirtyRate;
  }

  /**
   * Milliseconds the workload spent waiting for postcopy pages (QEMU's
   * `postcopy-blocktime`, with one vCPU).
   */
  get blockedMs(): number {
    return this.#blockedMs;
  }

  /** The layout of {@linkcode SimulatedGuest.saveState}'s bytes. */
  get stateFields(): readonly GuestStateField[] {
    return STATE_FIELDS;
  }

  /** The throttle a migration asked for last. */
  get throttle(): GuestThrottle {
    return this.#throttle;
  }

  /**
   * Slows the workload: it runs `100 - cpuPercentage` percent of the time
   * (QEMU's CPU throttle lets a vCPU run a slice, then sleeps it in
   * proportion), and never dirties more than `dirtyLimit` bytes per
   * second.
   *
   * @param throttle How much.
   */
  setThrottle(throttle: GuestThrottle): void {
    this.#throttle = throttle;
  }

  /** Stops the workload: no write happens after this returns. */
  pause(): void {
    this.#running = false;
    this.#generation++;
  }

  /** Starts (or restarts) the workload on its own task. */
  resume(): void {
    if (this.#running) return;
    this.#running = true;
    const generation = ++this.#generation;
    void this.#run(generation);
  }

  /**
   * Runs the workload for `elapsedMs` milliseconds' worth of writes, now,
   * slowed by the throttle.
   *
   * @param elapsedMs Simulated time.
   * @returns Pages written.
   */
  step(elapsedMs: number): number {
    const pages = this.#workload.step(
      elapsedMs * throttledShare(this.#throttle, this.#workload.spec),
    );
    this.#rateWindowPages += pages;
    const now = this.#clock.now();
    const window = now - this.#rateWindowStart;
    if (window >= 1000) {
      this.#dirtyRate = this.#rateWindowPages * this.#memory.pageSize * 1000 /
        window;
      this.#rateWindowPages = 0;
      this.#rateWindowStart = now;
    }
    return pages;
  }

  /**
   * The device state: workload, generator and sweep position.
   *
   * @returns 56 bytes, layout in the module documentation.
   */
  saveState(): Uint8Array {
    const bytes = new Uint8Array(STATE_BYTES);
    const view = new DataView(bytes.buffer);
    const spec = this.#workload.spec;
    const progress = this.#workload.progress;
    view.setUint32(0, STATE_VERSION);
    view.setUint8(4, KINDS.indexOf(spec.kind));
    view.setUint8(5, 1);
    view.setBigUint64(
      8,
      BigInt("bytesPerSecond" in spec ? spec.bytesPerSecond : 0),
    );
    view.setBigUint64(16, BigInt(spec.kind === "hot-set" ? spec.setBytes : 0));
    view.setUint32(24, this.#seed >>> 0);
    view.setUint32(28, progress.random);
    view.setBigUint64(32, BigInt(progress.cursor));
    view.setBigUint64(40, BigInt(progress.pass));
    view.setBigUint64(48, BigInt(progress.written));
    return bytes;
  }

  /**
   * Restores device state saved by {@linkcode SimulatedGuest.saveState}, so
   * the workload continues where the source stopped.
   *
   * @param state The state bytes.
   * @throws {RangeError} If the state is not version 1 of this layout.
   */
  loadState(state: Uint8Array): void {
    if (state.byteLength !== STATE_BYTES) {
      throw new RangeError(
        `Cannot load guest state: expected ${STATE_BYTES} bytes, received ${state.byteLength}`,
      );
    }
    const view = new DataView(state.buffer, state.byteOffset, state.byteLength);
    const version = view.getUint32(0);
    if (version !== STATE_VERSION) {
      throw new RangeError(
        `Cannot load guest state: version ${version} is not supported, expected ${STATE_VERSION}`,
      );
    }
    const kind = KINDS[view.getUint8(4)];
    if (kind === undefined) {
      throw new RangeError(
        `Cannot load guest state: workload kind ${view.getUint8(4)} is unknown`,
      );
    }
    const rate = Number(view.getBigUint64(8));
    const setBytes = Number(view.getBigUint64(16));
    const spec: WorkloadSpec = kind === "hot-set"
      ? { kind, setBytes, bytesPerSecond: rate }
      : kind === "random" || kind === "sweep"
      ? { kind, bytesPerSecond: rate }
      : { kind };
    this.#seed = view.getUint32(24);
    this.#workload = new Workload(spec, this.#memory, this.#seed, {
      random: view.getUint32(28),
      cursor: Number(view.getBigUint64(32)),
      pass: Number(view.getBigUint64(40)),
      written: Number(view.getBigUint64(48)),
    });
  }

  async #run(generation: number): Promise<void> {
    let last = this.#clock.now();
    while (this.#running && this.#generation === generation) {
      await this.#clock.sleep(this.#tickMs);
      if (!this.#running || this.#generation !== generation) return;
      const now = this.#clock.now();
      this.step(now - last);
      last = now;
      // In postcopy a write to a page that has not arrived blocks the
      // guest until the page is there.
      for (let blocked = this.#workload.blocked; blocked;) {
        const since = this.#clock.now();
        await this.#memory.waitForPage(blocked[0], blocked[1]);
        this.#blockedMs += this.#clock.now() - since;
        if (!this.#running || this.#generation !== generation) return;
        this.#rateWindowPages += this.#workload.continue();
        blocked = this.#workload.blocked;
      }
    }
  }
}

/** The share of real time the workload gets under a throttle, 0–1. */
function throttledShare(throttle: GuestThrottle, spec: WorkloadSpec): number {
  let share = 1 - throttle.cpuPercentage / 100;
  const rate = "bytesPerSecond" in spec ? spec.bytesPerSecond : 0;
  if (throttle.dirtyLimit > 0 && rate * share > throttle.dirtyLimit) {
    share = throttle.dirtyLimit / rate;
  }
  return share;
}

const STATE_FIELDS: readonly GuestStateField[] = [
  { name: "version", type: "uint32", size: 4 },
  { name: "workload", type: "uint8", size: 1 },
  { name: "running", type: "uint8", size: 1 },
  { name: "reserved", type: "uint16", size: 2 },
  { name: "rate", type: "uint64", size: 8 },
  { name: "hot-set", type: "uint64", size: 8 },
  { name: "seed", type: "uint32", size: 4 },
  { name: "random", type: "uint32", size: 4 },
  { name: "cursor", type: "uint64", size: 8 },
  { name: "pass", type: "uint64", size: 8 },
  { name: "written", type: "uint64", size: 8 },
];
