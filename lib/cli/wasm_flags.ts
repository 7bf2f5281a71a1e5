import {
  type MigratableGuest,
  type WasmGuest,
  type WasmGuestOptions,
  WasmProgram,
} from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";
import { UsageError } from "./usage_error.ts";

/** The flags of the commands that can run a WebAssembly program. */
export const WASM_FLAGS = {
  wasm: { type: "string" },
  step: { type: "string" },
  budget: { type: "string" },
  init: { type: "string" },
  steps: { type: "string" },
} as const;

/** The usage text of {@linkcode WASM_FLAGS}, to go under "Options:". */
export const WASM_FLAGS_USAGE =
  `  --wasm FILE          Run the WebAssembly module FILE as the guest (its
                       memories are the RAM, its mutable globals and step
                       count the device state; the destination needs the
                       same module, checked by its SHA-256)
  --step NAME          The exported function called in a loop (default step)
  --budget N           Its argument, what one step does (default 262144)
  --init N             Call the module's export init(N) once first (not on
                       a destination: its state arrives)
  --steps N            Stop the program after N steps in all (counted
                       across migrations) and print its checksum() export`;

/** The Wasm program a command runs, from {@linkcode WASM_FLAGS}. */
export interface WasmSettings {
  /** The module file. */
  file: string;
  /** The step export. */
  step: string;
  /** The step's argument. */
  budget: number;
  /** The argument of `init`, if it is called. */
  init: number | undefined;
  /** The step limit, if any. */
  steps: number | undefined;
}

type WasmFlagValues = {
  [K in keyof typeof WASM_FLAGS]?: string | undefined;
};

/**
 * Reads {@linkcode WASM_FLAGS}; `undefined` without `--wasm`.
 *
 * @example Usage
 * ```ts
 * import { parseWasmFlags } from "./wasm_flags.ts";
 * import assert from "node:assert/strict";
 *
 * const settings = parseWasmFlags({ wasm: "life.wasm", steps: "100" }, "Usage: …");
 * assert.equal(settings?.step, "step");
 * assert.equal(settings?.steps, 100);
 * assert.equal(parseWasmFlags({}, "Usage: …"), undefined);
 * ```
 *
 * @param flags The flag values.
 * @param usage The usage text a bad value is reported with.
 * @returns The settings, or `undefined` without `--wasm`.
 * @throws {UsageError} For a bad value, or a Wasm flag without `--wasm`.
 */
export function parseWasmFlags(
  flags: WasmFlagValues,
  usage: string,
): WasmSettings | undefined {
  if (flags.wasm === undefined) {
    const stray = (["step", "budget", "init", "steps"] as const).find((name) =>
      flags[name] !== undefined
    );
    if (stray !== undefined) {
      throw new UsageError(`--${stray} needs --wasm FILE`, usage);
    }
    return undefined;
  }
  return {
    file: flags.wasm,
    step: flags.step ?? "step",
    budget: count(flags.budget, "--budget", usage) ?? 262144,
    init: count(flags.init, "--init", usage),
    steps: count(flags.steps, "--steps", usage),
  };
}

function count(
  text: string | undefined,
  flag: string,
  usage: string,
): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value)) {
    throw new UsageError(
      `Cannot use ${flag} "${text}": it must be a whole number`,
      usage,
    );
  }
  return value;
}

/**
 * Refuses the simulated guest's flags next to `--wasm`: the module is the
 * guest.
 *
 * @param flags The flag values of the simulated guest.
 * @param usage The usage text.
 * @throws {UsageError} If one was given.
 */
export function refuseGuestFlags(
  flags: Record<string, unknown>,
  usage: string,
): void {
  for (const name of ["ram", "workload", "seed", "prefill", "hugepages"]) {
    if (flags[name] !== undefined) {
      throw new UsageError(
        `--${name} describes a simulated guest: it does not go with --wasm (the module is the guest)`,
        usage,
      );
    }
  }
}

/**
 * Reads and compiles the module of `--wasm`.
 *
 * @param settings The Wasm settings.
 * @returns The program.
 * @throws {Error} Naming the file, when it cannot be read or compiled.
 */
export async function loadWasmProgram(
  settings: WasmSettings,
): Promise<WasmProgram> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(settings.file);
  } catch (error) {
    throw new Error(
      `Cannot read --wasm ${settings.file}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  try {
    return await WasmProgram.compile(bytes);
  } catch (error) {
    throw new Error(
      `Cannot load --wasm ${settings.file}: ${(error as Error).message}`,
      { cause: error },
    );
  }
}

/** The guest options of the settings (without setup). */
export function wasmGuestOptions(settings: WasmSettings): WasmGuestOptions {
  return {
    step: settings.step,
    budget: settings.budget,
    ...(settings.steps === undefined ? {} : { stepLimit: settings.steps }),
  };
}

/**
 * A new instance of the program, `init` called, stepping.
 *
 * @param program The program.
 * @param settings The Wasm settings.
 * @returns The guest.
 */
export function startWasmGuest(
  program: WasmProgram,
  settings: WasmSettings,
): WasmGuest {
  const init = settings.init;
  return program.createGuest({
    ...wasmGuestOptions(settings),
    ...(init === undefined ? {} : {
      setup: (exports) => {
        if (typeof exports.init !== "function") {
          throw new TypeError(
            `Cannot use --init: the module exports no function "init"`,
          );
        }
        (exports.init as (value: number) => unknown)(init);
      },
    }),
  });
}

/**
 * With `--steps`: waits until the program ran them, and prints its
 * checksum (the `checksum()` export) on stderr.
 *
 * @param guest The guest (a Wasm guest, or nothing is done).
 * @param settings The Wasm settings.
 * @param io Where to print.
 * @returns The checksum in hex, when there is one.
 */
export async function reportWasmChecksum(
  guest: MigratableGuest,
  settings: WasmSettings,
  io: CliIo,
): Promise<string | undefined> {
  if (settings.steps === undefined) return undefined;
  const wasm = guest as WasmGuest;
  try {
    await wasm.finished();
  } catch (error) {
    io.writeErr(
      `livemig: the Wasm program stopped after ${wasm.steps} steps: ${
        (error as Error).message ?? String(error)
      }\n`,
    );
    return undefined;
  }
  const checksum = wasm.exports.checksum;
  const value = typeof checksum === "function" ? checksum() : undefined;
  const hex = typeof value === "bigint" || typeof value === "number"
    ? `0x${BigInt.asUintN(64, BigInt(value)).toString(16).padStart(16, "0")}`
    : undefined;
  io.writeErr(
    `livemig: the Wasm program ran ${wasm.steps} steps${
      hex === undefined ? "" : `: checksum ${hex}`
    }\n`,
  );
  return hex;
}
