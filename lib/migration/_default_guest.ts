/**
 * The guest a destination builds when it is given no guest factory.
 * Private to the destination.
 *
 * @module
 */

import { GuestMemory } from "../guest/guest_memory.ts";
import { HostedGuest } from "../guest/hosted_guest.ts";
import type { MigratableGuest } from "../guest/migratable_guest.ts";
import { SimulatedGuest } from "../guest/simulated_guest.ts";
import type { RamBlockInfo } from "../ram/ram_record.ts";
import type { Clock } from "../streams/clock.ts";

/** Options for {@linkcode defaultGuest}. */
export interface DefaultGuestOptions {
  /** The simulated guest's clock. */
  clock: Clock;
  /** Allocates guest RAM; by default a new `Uint8Array`. */
  allocate?: ((size: number) => Uint8Array) | undefined;
}

/**
 * livemig's own streams (machine `livemig`, one block) get a paused
 * simulated guest; others (a QEMU guest's RAM) a paused memory-only one.
 *
 * @param blocks The announced RAM blocks.
 * @param machine The announced machine name.
 * @param options The simulated guest's clock; how to allocate guest RAM.
 * @returns The guest.
 */
export function defaultGuest(
  blocks: readonly RamBlockInfo[],
  machine: string | undefined,
  options: DefaultGuestOptions,
): MigratableGuest {
  const { clock, allocate } = options;
  if (machine === "livemig" && blocks.length === 1) {
    return new SimulatedGuest({
      ramBytes: blocks[0]!.usedLength,
      blockName: blocks[0]!.idstr,
      running: false,
      clock,
      ...(allocate ? { allocate } : {}),
    });
  }
  const memory = new GuestMemory(
    blocks.map((b) => ({ idstr: b.idstr, size: b.usedLength })),
    allocate ? { allocate } : {},
  );
  const guest = new HostedGuest({ memory });
  void guest.pause();
  return guest;
}
