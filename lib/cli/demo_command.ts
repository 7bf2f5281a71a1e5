import {
  connectTransport,
  DestinationMigration,
  formatBytes,
  formatWorkload,
  type IncomingResult,
  listenTransport,
  type MigrationInfo,
  ramSha256,
  SourceMigration,
} from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";
import { type Command, defineCommand } from "./define_command.ts";
import { formatMigrationSummary } from "./format_migration_summary.ts";
import {
  createGuest,
  GUEST_FLAGS,
  GUEST_FLAGS_USAGE,
  type GuestSettings,
} from "./guest_flags.ts";
import { parseGuestFlags } from "./guest_flags.ts";
import {
  guestRamAllocator,
  parseHugePagesMode,
} from "./guest_ram_allocator.ts";
import { cancelOnInterrupt } from "./on_interrupt.ts";
import { showProgress } from "./show_progress.ts";
import { UsageError } from "./usage_error.ts";

const USAGE = `Usage: livemig demo [options]

Live-migrates a simulated guest (default: 256 MiB filled with data, workload
hot-set:16MiB@32MB/s) from a source to a destination in this process over
loopback TCP, with QEMU's default parameters (max-bandwidth 128 MiB/s,
downtime-limit 300 ms), and checks that the destination's RAM equals the
source's at switchover (SHA-256 per block).

Options:
${GUEST_FLAGS_USAGE}

Exit status: 0 completed with identical RAM, 1 failed or RAM differs,
2 usage error.
`;

/** SHA-256 of each RAM block, by idstr. */
type Digests = Record<string, string>;

/**
 * `livemig demo`: live-migrates a simulated guest from a source to a
 * destination in this process over loopback TCP and checks that both ends
 * hold the same RAM.
 *
 * @example Usage
 * ```ts
 * import { DEMO_COMMAND } from "./demo_command.ts";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * const io = { writeOut: (text: string) => (out += text), writeErr: () => {}, errIsTerminal: false };
 * assert.equal(await DEMO_COMMAND.run(["--ram", "4MiB", "--workload", "idle", "--json"], io), 0);
 * assert.equal(JSON.parse(out)["ram-identical"], true);
 * ```
 */
export const DEMO_COMMAND: Command = defineCommand({
  usage: USAGE,
  flags: GUEST_FLAGS,
  positionals: [],
  wrongCount: () => "demo takes no positional arguments",
  async run({ flags }, io) {
    const settings = parseGuestFlags(flags, {
      usage: USAGE,
      workload: "hot-set:16MiB@32MB/s",
      prefill: true,
    });
    if (settings.capabilities["pause-before-switchover"]) {
      throw new UsageError(
        "demo cannot continue from pre-switchover (it has no monitor): use migrate -c pause-before-switchover=on --qmp ADDRESS and migrate-continue there",
        USAGE,
      );
    }
    const hugePages = parseHugePagesMode(flags, USAGE);
    const listener = await listenTransport("tcp:127.0.0.1:0");
    const guest = createGuest(settings, guestRamAllocator(io, { hugePages }));
    const source = new SourceMigration(guest, {
      capabilities: settings.capabilities,
      parameters: settings.parameters,
    });
    const digests: { destination: Digests } = { destination: {} };
    const allocate = guestRamAllocator(io, { hugePages, populate: true });
    const destination = new DestinationMigration({
      ...(allocate ? { allocate } : {}),
      beforeResume: async (loaded) => {
        digests.destination = await ramSha256(loaded.memory);
      },
    });
    if (!settings.json) {
      io.writeOut(
        `livemig demo: ${formatBytes(settings.ramBytes)} guest${
          settings.prefill ? " (RAM in use)" : ""
        } running ${
          formatWorkload(settings.workload)
        }, migrating to ${listener.address}\n`,
      );
    }
    const done = showProgress(source, io);
    let sent: MigrationInfo;
    let received: IncomingResult;
    try {
      const [transport, accepted] = await Promise.all([
        connectTransport(listener.address),
        listener.accept(),
      ]);
      [sent, received] = await cancelOnInterrupt(
        source,
        Promise.all([
          source.migrate(transport),
          destination.incoming(accepted),
        ]),
        { io },
      );
    } catch (error) {
      done();
      guest.pause();
      destination.guest?.pause();
      await listener.close();
      if (settings.json) {
        io.writeOut(
          JSON.stringify({
            source: source.query(),
            destination: destination.query(),
          }) + "\n",
        );
      }
      throw error;
    }
    done();
    received.guest.pause();
    // A background snapshot leaves the source guest running: its digest
    // is of the snapshot's RAM.
    guest.pause();
    const sourceDigests = sent["x-livemig-snapshot-ram-sha256"] ??
      await ramSha256(guest.memory);
    await listener.close();
    return report(
      { sent, received, source: sourceDigests, ...digests },
      { io, settings },
    );
  },
});

/** Prints how the demo went; returns 0 if both ends hold the same RAM. */
function report(
  result: {
    sent: MigrationInfo;
    received: IncomingResult;
    source: Digests;
    destination: Digests;
  },
  { io, settings }: { io: CliIo; settings: GuestSettings },
): number {
  const same = sameDigests(result.source, result.destination);
  if (settings.json) {
    io.writeOut(
      JSON.stringify({
        source: { ...result.sent, "ram-sha256": result.source },
        destination: {
          ...result.received.info,
          "ram-sha256": result.destination,
        },
        "ram-identical": same,
      }) + "\n",
    );
    return same ? 0 : 1;
  }
  io.writeOut(`source       ${formatMigrationSummary(result.sent)}\n`);
  io.writeOut(`destination  ${result.received.info.status}, guest resumed\n`);
  for (const [name, digest] of Object.entries(result.source)) {
    io.writeOut(
      `RAM check    ${name} sha256 ${digest.slice(0, 16)}… ${
        result.destination[name] === digest
          ? "identical on both ends"
          : "DIFFERS on the destination"
      }\n`,
    );
  }
  return same ? 0 : 1;
}

function sameDigests(a: Digests, b: Digests): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length &&
    keys.every((key) => a[key] === b[key]);
}
