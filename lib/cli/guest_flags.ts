import {
  parseSize,
  parseWorkload,
  SimulatedGuest,
  type WorkloadSpec,
} from "../../mod.ts";
import { parseMigrationSettings } from "./parse_migration_settings.ts";
import type { MigrationSettings } from "./parse_migration_settings.ts";
import { asUsageError } from "./usage_error.ts";
import { HUGE_PAGES_FLAGS, HUGE_PAGES_USAGE } from "./guest_ram_allocator.ts";

/** The flags of the commands that run a simulated guest: demo, migrate. */
export const GUEST_FLAGS = {
  ram: { type: "string" },
  workload: { type: "string" },
  seed: { type: "string" },
  prefill: { type: "boolean" },
  ...HUGE_PAGES_FLAGS,
  capability: { type: "string", short: "c", multiple: true },
  parameter: { type: "string", short: "p", multiple: true },
  json: { type: "boolean" },
} as const;

/** The usage text of {@linkcode GUEST_FLAGS}, to go under "Options:". */
export const GUEST_FLAGS_USAGE =
  `  --ram SIZE           Guest RAM (default 256MiB; units B, KiB, MiB, GiB, MB...)
  --workload SPEC      idle | random:RATE | hot-set:SIZE@RATE | sweep[:RATE] |
                       fill[:random|address] (RATE in bytes/s of RAM
                       dirtied, e.g. 50MB/s; fill:address puts each word's
                       address in it, as QEMU test guests do: it compresses
                       to about 60%)
  --seed N             Seed of the workload (default 1)
  --prefill            Fill RAM with non-zero data first, like a busy guest
${HUGE_PAGES_USAGE}
  -c, --capability NAME=on|off
                       A migration capability (repeatable): xbzrle,
                       return-path, events, pause-before-switchover,
                       multifd (tcp: and unix: only), ...
  -p, --parameter NAME=VALUE
                       A migration parameter (repeatable), with units:
                       max-bandwidth=1GiB/s, downtime-limit=300ms,
                       avail-switchover-bandwidth=100MB/s, xbzrle-cache-size=64MiB,
                       multifd-channels=2, multifd-compression=none|zlib|zstd
                       (bandwidths: B/s, MB/s, MiB/s, Mbit/s, Gbit/s, ...)
  --json               Print the final query-migrate info (plus ram-sha256
                       per block) as one JSON object, the last line
  -h, --help           Show this help`;

/** The guest and migration a command runs, from {@linkcode GUEST_FLAGS}. */
export interface GuestSettings extends MigrationSettings {
  /** Guest RAM, bytes. */
  ramBytes: number;
  /** Whether RAM is filled with data first. */
  prefill: boolean;
  /** What the guest does while it migrates. */
  workload: WorkloadSpec;
  /** The workload's seed. */
  seed: number;
  /** Whether to print JSON. */
  json: boolean;
}

/** Options for {@linkcode parseGuestFlags}. */
export interface ParseGuestFlagsOptions {
  /** The usage text that a bad value is reported with. */
  usage: string;
  /** The workload without `--workload`. */
  workload: string;
  /** Whether RAM is prefilled without `--prefill`. */
  prefill: boolean;
}

/**
 * Reads the values of {@linkcode GUEST_FLAGS}: RAM size, workload, seed,
 * capabilities and parameters.
 *
 * @example Usage
 * ```ts
 * import { parseGuestFlags } from "./guest_flags.ts";
 * import assert from "node:assert/strict";
 *
 * const settings = parseGuestFlags({ ram: "64MiB", capability: ["xbzrle=on"] }, {
 *   usage: "Usage: livemig demo\n",
 *   workload: "idle",
 *   prefill: true,
 * });
 * assert.equal(settings.ramBytes, 64 << 20);
 * assert.deepEqual(settings.capabilities, { xbzrle: true });
 * assert.equal(settings.seed, 1);
 * ```
 *
 * @param flags The flag values.
 * @param options The usage text and the defaults.
 * @returns The settings.
 * @throws {UsageError} For a bad value.
 */
export function parseGuestFlags(
  flags: {
    ram?: string | undefined;
    workload?: string | undefined;
    seed?: string | undefined;
    prefill?: boolean | undefined;
    capability?: string[] | undefined;
    parameter?: string[] | undefined;
    json?: boolean | undefined;
  },
  options: ParseGuestFlagsOptions,
): GuestSettings {
  return asUsageError(options.usage, () => {
    const ramBytes = parseRamSize(flags.ram ?? "256MiB");
    const seed = Number(flags.seed ?? "1");
    if (!Number.isSafeInteger(seed)) {
      throw new TypeError(
        `Cannot use --seed "${flags.seed}": it must be an integer`,
      );
    }
    return {
      ramBytes,
      prefill: flags.prefill ?? options.prefill,
      workload: parseWorkload(flags.workload ?? options.workload),
      seed,
      ...parseMigrationSettings(flags.capability, flags.parameter),
      json: flags.json ?? false,
    };
  });
}

/**
 * The simulated guest that {@linkcode GuestSettings} describe, running.
 *
 * @example Usage
 * ```ts
 * import { createGuest } from "./guest_flags.ts";
 * import assert from "node:assert/strict";
 *
 * const guest = createGuest({
 *   ramBytes: 1 << 20, prefill: false, workload: { kind: "idle" }, seed: 1,
 *   capabilities: {}, parameters: {}, json: false,
 * });
 * assert.equal(guest.memory.totalBytes, 1 << 20);
 * guest.pause();
 * ```
 *
 * @param settings The RAM size, workload, seed and prefill.
 * @param allocate Allocates its RAM; plain memory when `undefined`.
 * @returns The guest.
 */
export function createGuest(
  settings: GuestSettings,
  allocate?: (size: number) => Uint8Array,
): SimulatedGuest {
  return new SimulatedGuest({
    ramBytes: settings.ramBytes,
    workload: settings.workload,
    seed: settings.seed,
    prefill: settings.prefill,
    ...(allocate ? { allocate } : {}),
  });
}

/**
 * Reads `--ram`: a positive multiple of the page size; a decimal unit that
 * misses it (`1GB`) gets its binary twin suggested (`1GiB`).
 */
function parseRamSize(text: string): number {
  const bytes = parseSize(text, "--ram");
  if (bytes >= 4096 && bytes % 4096 === 0) return bytes;
  const decimal = /^\s*([\d.]+)\s*([KMGT])B\s*$/i.exec(text);
  const binary = decimal ? `${decimal[1]}${decimal[2]!.toUpperCase()}iB` : "";
  const twin = decimal ? parseSize(binary) : 0;
  throw new RangeError(
    `Cannot use --ram ${text}: it must be a positive multiple of 4096 bytes${
      twin >= 4096 && twin % 4096 === 0
        ? ` (${text} is ${bytes} bytes; did you mean ${binary}?)`
        : ""
    }`,
  );
}
