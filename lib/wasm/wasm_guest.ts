import { MigrationProtocolError, NotSupportedError } from "../errors.ts";
import { type GuestThrottle, NO_THROTTLE } from "../guest/migratable_guest.ts";
import type {
  GuestStateField,
  MigratableGuest,
} from "../guest/migratable_guest.ts";
import type { GuestMemory } from "../guest/guest_memory.ts";
import { WasmGuestMemory } from "./_wasm_guest_memory.ts";
import type { InstrumentedGlobal } from "./instrument_wasm.ts";
import type { WasmProgram } from "./wasm_program.ts";

/** Options for {@linkcode WasmGuest}. */
export interface WasmGuestOptions {
  /**
   * The module's imports. Imported functions must not write into the
   * program's memory (those writes would not be logged).
   *
   * @default {{}}
   */
  imports?: WebAssembly.Imports;
  /**
   * The exported function called in a loop, with the budget as its only
   * argument.
   *
   * @default {"step"}
   */
  step?: string;
  /**
   * What each step is given to do (the program decides its unit).
   *
   * @default {262144}
   */
  budget?: number;
  /**
   * Steps after which the guest stops by itself, counted over the whole
   * life of the program (they travel with it); unlimited when absent.
   */
  stepLimit?: number;
  /**
   * Whether the guest starts stepping at once.
   *
   * @default {true}
   */
  running?: boolean;
  /**
   * Sizes to grow the memories to before anything runs (a destination
   * gives the announced block sizes).
   */
  memorySizes?: readonly number[];
  /**
   * Called once on the new instance before it steps (e.g. to call an
   * `init` export); not called on a destination, whose state arrives.
   */
  setup?: (exports: WebAssembly.Exports) => void;
}

const STATE_VERSION = 1;
const WASM_PAGE = 65536;

/**
 * A running WebAssembly instance as a livemig guest. Its linear memories
 * are the RAM blocks (`wasm:<sha256>:memory<k>`), logged page by page by
 * the instrumented code; its mutable globals, the step count and the
 * module's SHA-256 are its device state. The host calls `step(budget)` in
 * a loop, yielding to the event loop between two steps; a migration
 * stops it between two steps.
 *
 * While a migration runs, `memory.grow` is refused: the step that calls it
 * traps, the guest stops with a {@linkcode NotSupportedError} naming the
 * memory, and the migration fails with it (the block list of a migration
 * is fixed). Tables the program or the host can change, dropped segments
 * and mutable globals of reference or vector types cannot be carried: a
 * migration of such a program is refused at its start, naming them.
 *
 * On a destination in postcopy the program's memory may not have arrived
 * yet, and Wasm code cannot wait for a page in the middle of a step: the
 * guest waits before its first step until every page is there (asking the
 * source for them), so in postcopy it resumes once its memory arrived.
 *
 * @example Usage
 * ```ts
 * import { WasmProgram } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * // (memory (export "memory") 1) (func (export "step") (param i32)
 * //   (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1))))
 * const bytes = new Uint8Array([
 *   0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 1, 127, 0, 3, 2, 1, 0, 5, 3, 1,
 *   0, 1, 7, 17, 2, 4, 115, 116, 101, 112, 0, 0, 6, 109, 101, 109, 111, 114,
 *   121, 2, 0, 10, 17, 1, 15, 0, 65, 0, 65, 0, 40, 2, 0, 65, 1, 106, 54, 2,
 *   0, 11,
 * ]);
 * const program = await WasmProgram.compile(bytes);
 * const guest = program.createGuest({ stepLimit: 5 });
 * await guest.finished();
 * const copy = program.guestFactory()(
 *   guest.memory.blocks.map((b) => ({ idstr: b.idstr, usedLength: b.bytes.byteLength })),
 * );
 * copy.memory.blocks[0]!.bytes.set(guest.memory.blocks[0]!.bytes);
 * copy.loadState(guest.saveState());
 * assert.equal((copy as typeof guest).steps, 5);
 * ```
 */
export class WasmGuest implements MigratableGuest {
  readonly #program: WasmProgram;
  readonly #options: WasmGuestOptions;
  readonly #exports: WebAssembly.Exports;
  readonly #memories: WebAssembly.Memory[];
  readonly #dirtyMaps: Uint8Array[];
  readonly #globals: { spec: InstrumentedGlobal; global: WebAssembly.Global }[];
  readonly #lock: WebAssembly.Global;
  readonly #refused: WebAssembly.Global;
  readonly #step: (budget: number) => unknown;
  #memory: WasmGuestMemory;
  #steps = 0;
  #running: boolean;
  #looping = false;
  #error: unknown;
  readonly #stopped = new Set<() => void>();
  #throttle: GuestThrottle = NO_THROTTLE;
  /** Milliseconds the throttle still owes, not yet slept. */
  #throttleDebtMs = 0;
  /** Ends the throttle's current sleep early (when it is lifted). */
  #wake: (() => void) | undefined;

  /**
   * Instantiates the program. Use {@linkcode WasmProgram.createGuest}.
   *
   * @param program The compiled program.
   * @param options Imports, step function, budget.
   */
  constructor(program: WasmProgram, options: WasmGuestOptions = {}) {
    this.#program = program;
    this.#options = options;
    const instance = new WebAssembly.Instance(
      program.module,
      options.imports ?? {},
    );
    const exports = instance.exports;
    this.#exports = exports;
    const wasm = program.instrumented;
    this.#memories = wasm.memoryExports.map((name) =>
      exports[name] as WebAssembly.Memory
    );
    this.#dirtyMaps = wasm.dirtyExports.map((name) =>
      new Uint8Array((exports[name] as WebAssembly.Memory).buffer)
    );
    this.#globals = wasm.globals.map((spec) => ({
      spec,
      global: exports[spec.exportName] as WebAssembly.Global,
    }));
    this.#lock = exports[wasm.growLockExport] as WebAssembly.Global;
    this.#refused = exports[wasm.growRefusedExport] as WebAssembly.Global;
    const stepName = options.step ?? "step";
    const step = exports[stepName];
    if (typeof step !== "function") {
      throw new TypeError(
        `Cannot run the Wasm program: it exports no function "${stepName}"`,
      );
    }
    this.#step = step as (budget: number) => unknown;
    options.memorySizes?.forEach((size, k) => this.#growTo(k, size));
    if (options.memorySizes === undefined) options.setup?.(exports);
    this.#memory = this.#newMemory();
    this.#running = options.running ?? true;
    if (this.#running) void this.#loop();
  }

  /** The program's memories as RAM blocks. */
  get memory(): GuestMemory {
    if (this.#memories.some((m, k) => m.buffer !== this.#buffer(k))) {
      this.#memory = this.#newMemory(); // grown outside a migration
    }
    return this.#memory;
  }

  /** The instance's exports (e.g. to read a result). */
  get exports(): WebAssembly.Exports {
    return this.#exports;
  }

  /** Steps run so far, over the program's whole life. */
  get steps(): number {
    return this.#steps;
  }

  /** Whether the guest is running (stepping unless it stopped by itself). */
  get running(): boolean {
    return this.#running;
  }

  /** Why the program stopped stepping by itself with an error, if it did. */
  get error(): unknown {
    return this.#error;
  }

  /** The layout of the device state. */
  get stateFields(): readonly GuestStateField[] {
    return [
      { name: "version", type: "uint32", size: 4 },
      { name: "module-sha256", type: "buffer", size: 32 },
      { name: "steps", type: "uint64", size: 8 },
      ...this.#globals.map(({ spec }) => ({
        name: `global${spec.index}`,
        type: "uint64",
        size: 8,
      })),
    ];
  }

  /**
   * Slows the program as auto-converge slows a vCPU: after a step that
   * took `t` ms it sleeps `t × p / (100 − p)` ms, so it runs `100 − p` % of
   * the time. (dirty-limit's cap is not applied to Wasm programs: they
   * are throttled by CPU share only.)
   *
   * @param throttle How much.
   */
  setThrottle(throttle: GuestThrottle): void {
    this.#throttle = throttle;
    if (throttle.cpuPercentage === 0) {
      // Lifted: the program runs on now, not after the sleep it owed.
      this.#throttleDebtMs = 0;
      this.#wake?.();
    }
  }

  /** Stops the program between two steps. */
  pause(): void {
    this.#running = false;
  }

  /** Lets the program step again. */
  resume(): void {
    this.#running = true;
    if (!this.#looping) void this.#loop();
  }

  /**
   * Resolves once the guest stops stepping by itself: the step limit was
   * reached, or a step failed.
   *
   * @returns When it stopped.
   * @throws The step's error, when one failed.
   */
  finished(): Promise<void> {
    return new Promise((resolve, reject) => {
      const settle = () => {
        if (this.#error !== undefined) reject(this.#error);
        else resolve();
      };
      if (this.#error !== undefined || this.#limitReached()) settle();
      else this.#stopped.add(settle);
    });
  }

  /**
   * The device state: version, module hash, step count, mutable globals.
   *
   * @returns The state bytes.
   * @throws The error that stopped the program, if one did.
   */
  saveState(): Uint8Array {
    if (this.#error !== undefined) throw this.#error;
    const state = new Uint8Array(44 + 8 * this.#globals.length);
    const view = new DataView(state.buffer);
    view.setUint32(0, STATE_VERSION);
    state.set(hexBytes(this.#program.sha256), 4);
    view.setBigUint64(36, BigInt(this.#steps));
    this.#globals.forEach(({ spec, global }, i) => {
      const at = 44 + 8 * i;
      if (spec.type === "i32") view.setUint32(at + 4, global.value);
      else if (spec.type === "i64") view.setBigInt64(at, global.value);
      else if (spec.type === "f32") view.setFloat32(at + 4, global.value);
      else view.setFloat64(at, global.value);
    });
    return state;
  }

  /**
   * Restores the state saved by the source.
   *
   * @param state The state bytes.
   * @throws {MigrationProtocolError} If it is of another module.
   */
  loadState(state: Uint8Array): void {
    const view = new DataView(state.buffer, state.byteOffset, state.byteLength);
    if (
      state.byteLength !== 44 + 8 * this.#globals.length ||
      view.getUint32(0) !== STATE_VERSION
    ) {
      throw new MigrationProtocolError(
        `Cannot load the Wasm guest's state: expected version ${STATE_VERSION} with ${this.#globals.length} globals (${
          44 + 8 * this.#globals.length
        } bytes), received ${state.byteLength} bytes`,
      );
    }
    const sha256 = bytesHex(state.subarray(4, 36));
    if (sha256 !== this.#program.sha256) {
      throw new MigrationProtocolError(
        `Cannot load the Wasm guest's state: it is of another Wasm module (sha256 ${sha256}), this destination runs ${this.#program.sha256}`,
      );
    }
    this.#steps = Number(view.getBigUint64(36));
    this.#globals.forEach(({ spec, global }, i) => {
      const at = 44 + 8 * i;
      if (spec.type === "i32") global.value = view.getInt32(at + 4);
      else if (spec.type === "i64") global.value = view.getBigInt64(at);
      else if (spec.type === "f32") global.value = view.getFloat32(at + 4);
      else global.value = view.getFloat64(at);
    });
  }

  #limitReached(): boolean {
    const limit = this.#options.stepLimit;
    return limit !== undefined && this.#steps >= limit;
  }

  async #loop(): Promise<void> {
    this.#looping = true;
    const yielder = new Yielder();
    let waited = performance.now();
    let arrived = false;
    try {
      while (this.#running && !this.#limitReached() && !this.#error) {
        if (this.#memory.missingPages > 0) {
          await this.#waitForMemory();
          arrived = true;
          continue;
        }
        if (arrived) this.#keepReceived();
        arrived = false;
        const started = performance.now();
        this.#stepOnce();
        const slept = await this.#payThrottle(performance.now() - started);
        if (slept) {
          waited = performance.now();
          continue;
        }
        // Sockets (the migration's, a monitor's) are looked at only when
        // the thread waits, which a MessagePort turn never does: at least
        // every millisecond, and after every step while migrating, the
        // loop waits for an operation done on another thread (~60 µs).
        const now = performance.now();
        if (this.#memory.dirtyLogging || now - waited >= 1) {
          await yieldToIo();
          waited = performance.now();
        } else {
          await yielder.next();
        }
      }
    } finally {
      yielder.close();
      this.#looping = false;
      if (this.#error !== undefined || this.#limitReached()) {
        for (const settle of this.#stopped) settle();
        this.#stopped.clear();
      }
    }
  }

  /**
   * Adds what the throttle owes for a step of `stepMs`, and sleeps once
   * it owes a millisecond or more (timers are no finer).
   *
   * @returns Whether it slept (the thread waited, sockets were seen).
   */
  async #payThrottle(stepMs: number): Promise<boolean> {
    const percentage = Math.min(99, this.#throttle.cpuPercentage);
    if (percentage <= 0) return false;
    this.#throttleDebtMs += stepMs * percentage / (100 - percentage);
    if (this.#throttleDebtMs < 1) return false;
    const started = performance.now();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.#wake?.(), this.#throttleDebtMs);
      this.#wake = () => {
        clearTimeout(timer);
        this.#wake = undefined;
        resolve();
      };
    });
    this.#throttleDebtMs = Math.max(
      0,
      this.#throttleDebtMs - (performance.now() - started),
    );
    return true;
  }

  #stepOnce(): void {
    try {
      this.#step(this.#options.budget ?? 262144);
      this.#steps++;
    } catch (error) {
      const refused = this.#refused.value as number;
      this.#error = refused === 0 ? error : new NotSupportedError(
        `Cannot run the Wasm program: memory.grow of memory ${
          refused - 1
        } is refused during a migration`,
        { cause: error },
      );
    }
  }

  /** Postcopy: waits for the first missing page (asking for it). */
  async #waitForMemory(): Promise<void> {
    const memory = this.#memory;
    for (const block of memory.blocks) {
      for (let page = 0; page < block.pageCount; page++) {
        if (memory.isMissing(block.index, page)) {
          return await memory.waitForPage(block.index, page);
        }
      }
    }
  }

  /**
   * Postcopy, once every page arrived: lets the memory keep each page as
   * received before the program first writes it (the steps write without
   * asking), so the destination's digest of the RAM as it arrived holds.
   */
  #keepReceived(): void {
    for (const block of this.#memory.blocks) {
      for (let page = 0; page < block.pageCount; page++) {
        this.#memory.preparePageWrite(block.index, page);
      }
    }
  }

  #buffer(k: number): ArrayBufferLike {
    return this.#memory.blocks[k]!.bytes.buffer;
  }

  #growTo(k: number, size: number): void {
    const memory = this.#memories[k]!;
    const have = memory.buffer.byteLength;
    if (size % WASM_PAGE !== 0 || size < have) {
      throw new MigrationProtocolError(
        `Cannot load Wasm memory ${k}: the source announced ${size} bytes, it must be a multiple of 64 KiB and at least ${have}`,
      );
    }
    if (size > have) memory.grow((size - have) / WASM_PAGE);
  }

  #newMemory(): WasmGuestMemory {
    return new WasmGuestMemory(
      this.#memories.map((memory, k) => ({
        idstr: this.#program.blockName(k),
        bytes: new Uint8Array(memory.buffer),
      })),
      {
        dirtyMaps: this.#dirtyMaps,
        lockGrowth: (locked) => void (this.#lock.value = locked ? 1 : 0),
        uncapturable: this.#program.instrumented.uncapturable,
      },
    );
  }
}

/** Yields to the event loop without the clamping of nested timers. */
class Yielder {
  readonly #channel = new MessageChannel();
  readonly #waiting: (() => void)[] = [];

  constructor() {
    this.#channel.port1.onmessage = () => this.#waiting.shift()?.();
  }

  next(): Promise<void> {
    return new Promise((resolve) => {
      this.#waiting.push(resolve);
      this.#channel.port2.postMessage(0);
    });
  }

  close(): void {
    this.#channel.port1.close();
    this.#channel.port2.close();
  }
}

const NOTHING = new Uint8Array(0);

/**
 * Lets the runtime look at its sockets: a digest of nothing completes on
 * another thread, so the thread waits (as lib/migration/_yield_to_io.ts).
 */
async function yieldToIo(): Promise<void> {
  await crypto.subtle.digest("SHA-1", NOTHING);
}

function hexBytes(hex: string): Uint8Array {
  return Uint8Array.from(
    { length: hex.length / 2 },
    (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16),
  );
}

function bytesHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
