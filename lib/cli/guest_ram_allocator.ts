import { createHugePageAllocator } from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";

/** Options for {@linkcode guestRamAllocator}. */
export interface GuestRamAllocatorOptions {
  /** Whether `--hugepages` was given. */
  hugePages: boolean;
  /**
   * Whether to fault new RAM in on another thread (a destination's RAM).
   *
   * @default {false}
   */
  populate?: boolean;
}

/**
 * The allocator for guest RAM: with `--hugepages`, transparent huge pages
 * when FFI is allowed; otherwise `undefined` (plain memory), after saying
 * on standard error why huge pages are unavailable.
 *
 * @example Usage
 * ```ts
 * import { guestRamAllocator } from "./guest_ram_allocator.ts";
 * import assert from "node:assert/strict";
 *
 * const io = { writeOut: () => {}, writeErr: () => {}, errIsTerminal: false };
 * assert.equal(guestRamAllocator(io, { hugePages: false }), undefined);
 * ```
 *
 * @param io Where to say why huge pages are unavailable.
 * @param options Whether huge pages were asked for, and populating.
 * @returns The allocator, or `undefined` for plain memory.
 */
export function guestRamAllocator(
  io: CliIo,
  options: GuestRamAllocatorOptions,
): ((size: number) => Uint8Array) | undefined {
  if (!options.hugePages) return undefined;
  const hugePages = createHugePageAllocator({
    populate: options.populate ?? false,
  });
  if (hugePages.available) return hugePages.allocate;
  io.writeErr(
    `livemig: --hugepages needs --allow-ffi and Linux's libc (${hugePages.reason}); using plain memory\n`,
  );
  return undefined;
}
