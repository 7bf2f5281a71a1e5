import { createHugePageAllocator, NotSupportedError } from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";
import { UsageError } from "./usage_error.ts";

/**
 * Whether guest RAM gets transparent huge pages: `"auto"` (no flag) when
 * they can be had, `"on"` (`--hugepages`) or an error, `"off"`
 * (`--no-hugepages`) never.
 */
export type HugePagesMode = "auto" | "on" | "off";

/** The flags that choose a {@linkcode HugePagesMode}, for a command's flags. */
export const HUGE_PAGES_FLAGS = {
  hugepages: { type: "boolean" },
  "no-hugepages": { type: "boolean" },
} as const;

/** The usage text of {@linkcode HUGE_PAGES_FLAGS}, to go under "Options:". */
export const HUGE_PAGES_USAGE =
  `  --hugepages          Require transparent huge pages for guest RAM (Linux,
                       needs --allow-ffi); without this flag they are used
                       when possible: first touch of RAM is about twice as
                       fast, as QEMU does for its guests
  --no-hugepages       Back guest RAM with plain memory, without a word`;

/**
 * Reads `--hugepages` and `--no-hugepages`.
 *
 * @example Usage
 * ```ts
 * import { parseHugePagesMode } from "./guest_ram_allocator.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseHugePagesMode({}, "Usage: livemig migrate\n"), "auto");
 * assert.equal(parseHugePagesMode({ hugepages: true }, ""), "on");
 * assert.equal(parseHugePagesMode({ "no-hugepages": true }, ""), "off");
 * assert.throws(
 *   () => parseHugePagesMode({ hugepages: true, "no-hugepages": true }, ""),
 *   /--hugepages and --no-hugepages/,
 * );
 * ```
 *
 * @param flags The flag values.
 * @param usage The usage text that a conflict is reported with.
 * @returns The mode.
 * @throws {UsageError} When both flags are given.
 */
export function parseHugePagesMode(
  flags: {
    hugepages?: boolean | undefined;
    "no-hugepages"?: boolean | undefined;
  },
  usage: string,
): HugePagesMode {
  const on = flags.hugepages ?? false;
  const off = flags["no-hugepages"] ?? false;
  if (on && off) {
    throw new UsageError(
      "Cannot use --hugepages and --no-hugepages together",
      usage,
    );
  }
  return on ? "on" : off ? "off" : "auto";
}

/** Options for {@linkcode guestRamAllocator}. */
export interface GuestRamAllocatorOptions {
  /**
   * What the flags asked for.
   *
   * @default {"auto"}
   */
  hugePages?: HugePagesMode;
  /**
   * Whether to fault new RAM in on another thread (a destination's RAM).
   *
   * @default {false}
   */
  populate?: boolean;
}

/** The outputs already told why there are no huge pages. */
const told = new WeakSet<CliIo>();

/**
 * The allocator for guest RAM: transparent huge pages unless `"off"`, when
 * FFI is allowed on Linux; otherwise `undefined` (plain memory). Without
 * them, `"auto"` says once per `io` on standard error what is missing and
 * how to get it (on Linux only: elsewhere there is nothing to get), and
 * `"on"` fails.
 *
 * @example Usage
 * ```ts
 * import { guestRamAllocator } from "./guest_ram_allocator.ts";
 * import assert from "node:assert/strict";
 *
 * let err = "";
 * const io = { writeOut: () => {}, writeErr: (text: string) => (err += text), errIsTerminal: false };
 * assert.equal(guestRamAllocator(io, { hugePages: "off" }), undefined);
 * assert.equal(err, "");
 * const ffi = Deno.permissions.querySync({ name: "ffi" }).state === "granted";
 * if (!ffi && Deno.build.os === "linux") {
 *   assert.equal(guestRamAllocator(io, {}), undefined);
 *   assert.equal(guestRamAllocator(io, { populate: true }), undefined);
 *   assert.match(err, /^livemig: guest RAM without huge pages .*--allow-ffi.*\n$/);
 *   assert.throws(() => guestRamAllocator(io, { hugePages: "on" }), /--allow-ffi/);
 * }
 * ```
 *
 * @param io Where to say why huge pages are unavailable.
 * @param options The mode, and populating.
 * @returns The allocator, or `undefined` for plain memory.
 * @throws {NotSupportedError} When `"on"` and huge pages are unavailable.
 */
export function guestRamAllocator(
  io: CliIo,
  options: GuestRamAllocatorOptions = {},
): ((size: number) => Uint8Array) | undefined {
  const mode = options.hugePages ?? "auto";
  if (mode === "off") return undefined;
  const hugePages = createHugePageAllocator({
    populate: options.populate ?? false,
  });
  if (hugePages.available) return hugePages.allocate;
  if (mode === "on") {
    throw new NotSupportedError(
      `Cannot back guest RAM with huge pages: ${hugePages.reason}`,
    );
  }
  if (Deno.build.os === "linux" && !told.has(io)) {
    told.add(io);
    io.writeErr(
      /--allow-ffi/.test(hugePages.reason)
        ? "livemig: guest RAM without huge pages (run deno with --allow-ffi for about 2x faster first touch, or pass --no-hugepages)\n"
        : `livemig: guest RAM without huge pages (${hugePages.reason})\n`,
    );
  }
  return undefined;
}
