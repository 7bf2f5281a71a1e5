import type { MigratableGuest } from "../guest/migratable_guest.ts";
import { MigrationProtocolError } from "../errors.ts";
import { type InstrumentedWasm, instrumentWasm } from "./instrument_wasm.ts";
import { WasmGuest, type WasmGuestOptions } from "./wasm_guest.ts";

/** A RAM block as a migration announces it. */
export interface AnnouncedBlock {
  /** The block idstr. */
  idstr: string;
  /** Its size in bytes. */
  usedLength: number;
}

/** The prefix of a Wasm guest's RAM block names: `wasm:<sha256>:memory<k>`. */
const BLOCK_PREFIX = "wasm:";

/**
 * A WebAssembly module made ready to run as a livemig guest: instrumented
 * so that its writes to linear memory are logged, compiled, and known by
 * the SHA-256 of its bytes — the hash travels in the stream (in the RAM
 * block names and the device state), and a destination running another
 * module refuses the migration.
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
 * assert.equal(program.sha256.length, 64);
 * const guest = program.createGuest({ running: false, stepLimit: 3 });
 * guest.resume();
 * await guest.finished();
 * assert.equal(guest.steps, 3);
 * assert.equal(new DataView(guest.memory.blocks[0]!.bytes.buffer).getInt32(0, true), 3);
 * ```
 */
export class WasmProgram {
  readonly #bytes: Uint8Array;
  readonly #sha256: string;
  readonly #instrumented: InstrumentedWasm;
  readonly #module: WebAssembly.Module;

  private constructor(
    bytes: Uint8Array,
    sha256: string,
    instrumented: InstrumentedWasm,
    module: WebAssembly.Module,
  ) {
    this.#bytes = bytes;
    this.#sha256 = sha256;
    this.#instrumented = instrumented;
    this.#module = module;
  }

  /**
   * Hashes, instruments and compiles a module.
   *
   * @param bytes The module's bytes, as built.
   * @returns The program.
   * @throws {StreamFormatError} If the bytes are not a module.
   * @throws {NotSupportedError} For what the instrumenter cannot handle.
   */
  static async compile(bytes: Uint8Array): Promise<WasmProgram> {
    const copy = bytes.slice();
    const digest = new Uint8Array(
      await crypto.subtle.digest("SHA-256", copy),
    );
    const sha256 = Array.from(digest, (b) => b.toString(16).padStart(2, "0"))
      .join("");
    const instrumented = instrumentWasm(copy);
    const module = await WebAssembly.compile(
      instrumented.bytes,
    );
    return new WasmProgram(copy, sha256, instrumented, module);
  }

  /** SHA-256 of the module's bytes, in hex. */
  get sha256(): string {
    return this.#sha256;
  }

  /** Bytes of the module as given (not instrumented). */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  /** What the instrumenter made of the module. */
  get instrumented(): InstrumentedWasm {
    return this.#instrumented;
  }

  /** The compiled, instrumented module. */
  get module(): WebAssembly.Module {
    return this.#module;
  }

  /**
   * The RAM block name of memory `index`: `wasm:<sha256>:memory<index>`.
   *
   * @param index The memory index.
   * @returns The block idstr.
   */
  blockName(index: number): string {
    return `${BLOCK_PREFIX}${this.#sha256}:memory${index}`;
  }

  /**
   * A new instance of the program, as a guest that starts stepping
   * (unless `running` is false).
   *
   * @param options Imports, the step function and its budget.
   * @returns The guest.
   */
  createGuest(options: WasmGuestOptions = {}): WasmGuest {
    return new WasmGuest(this, options);
  }

  /**
   * A destination's guest factory: checks that the announced RAM blocks
   * are this program's memories, then makes a paused instance whose
   * memories have the announced sizes. The migration loads it and its
   * device state, and resumes it.
   *
   * @param options Imports, the step function and its budget.
   * @returns The factory, for `DestinationMigration`'s `createGuest`.
   */
  guestFactory(
    options: Omit<WasmGuestOptions, "running"> = {},
  ): (blocks: readonly AnnouncedBlock[]) => MigratableGuest {
    return (blocks) => {
      this.#checkBlocks(blocks);
      return new WasmGuest(this, {
        ...options,
        running: false,
        memorySizes: blocks.map((b) => b.usedLength),
      });
    };
  }

  #checkBlocks(blocks: readonly AnnouncedBlock[]): void {
    const names = blocks.map((b) => b.idstr);
    const count = this.#instrumented.memoryExports.length;
    const expected = Array.from({ length: count }, (_, k) => this.blockName(k));
    if (names.join("\n") === expected.join("\n")) return;
    const other = names.find((n) => n.startsWith(BLOCK_PREFIX));
    if (other !== undefined) {
      const hash = other.slice(BLOCK_PREFIX.length).split(":")[0];
      if (hash !== this.#sha256) {
        throw new MigrationProtocolError(
          `Cannot load the migration: it carries another Wasm module (sha256 ${hash}), this destination runs ${this.#sha256}`,
        );
      }
    }
    throw new MigrationProtocolError(
      `Cannot load the migration into the Wasm program: expected the RAM blocks ${
        expected.join(", ")
      }, received ${names.join(", ") || "none"}`,
    );
  }
}
