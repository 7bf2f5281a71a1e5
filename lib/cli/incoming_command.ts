import {
  DEFAULT_CAPABILITIES,
  DestinationAutoRecovery,
  DestinationMigration,
  formatBytes,
  type GuestMemory,
  type IncomingResult,
  listenForMigration,
  MigrationAbortedError,
  type MigrationCapabilities,
  type MigrationEventDetail,
  parseSize,
  parseTransportUri,
  ramBlockFileName,
  ramSha256,
} from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";
import { type Command, defineCommand } from "./define_command.ts";
import { guestRamAllocator } from "./guest_ram_allocator.ts";
import { parseMigrationSettings } from "./parse_migration_settings.ts";
import { asUsageError, UsageError } from "./usage_error.ts";

const USAGE = `Usage: livemig incoming URI [options]

Waits for a migration at URI (tcp:HOST:PORT, unix:PATH, exec:COMMAND reading
the stream from COMMAND's stdout, file:PATH[,offset=N]) and loads it into a
new guest, which resumes once the whole stream is loaded. Accepts streams
from livemig and from QEMU 7.2.

Options:
  --ram-dump DIR       Write each RAM block to DIR/<name>.bin before the
                       guest resumes
  --max-ram SIZE       Largest RAM a source may announce (default 16GiB)
  --hugepages          Back guest RAM with transparent huge pages and fault it
                       in on another thread while the stream arrives (Linux,
                       needs --allow-ffi)
  --recover URI        When postcopy pauses, wait for the source at URI and
                       recover
  -c, --capability NAME=on|off
                       events, postcopy-ram, postcopy-preempt, mapped-ram
                       (with a file: URI: load a mapped-ram file)
  -p, --parameter NAME=VALUE
                       accepted and checked as on a source; they shape what
                       the source sends, so none changes the loading
  --json               Print the final info (plus ram-sha256, and
                       ram-sha256-received: RAM as it arrived) as JSON
  -h, --help           Show this help

Exit status: 0 completed, 1 failed, 2 usage error.
`;

/**
 * `livemig incoming URI`: waits for a migration at URI (from
 * `livemig migrate` or QEMU) and loads it into a new guest.
 *
 * @example Usage
 * ```ts
 * import { INCOMING_COMMAND } from "./incoming_command.ts";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * let err = "";
 * const io = {
 *   writeOut: (text: string) => (out += text),
 *   writeErr: (text: string) => (err += text),
 *   errIsTerminal: false,
 * };
 * const stream = new URL("../../fixtures/qemu/idle/stream.bin", import.meta.url).pathname;
 * assert.equal(await INCOMING_COMMAND.run([`file:${stream}`, "--json"], io), 0);
 * assert.equal(JSON.parse(out).status, "completed");
 * assert.equal(err, `livemig: waiting for a migration at file:${stream}\n`);
 * ```
 */
export const INCOMING_COMMAND: Command = defineCommand({
  usage: USAGE,
  flags: {
    "ram-dump": { type: "string" },
    "max-ram": { type: "string" },
    recover: { type: "string" },
    capability: { type: "string", short: "c", multiple: true },
    parameter: { type: "string", short: "p", multiple: true },
    hugepages: { type: "boolean" },
    json: { type: "boolean" },
  },
  positionals: [{ name: "URI", uri: true }],
  wrongCount: (count) =>
    count === 0 ? "incoming needs a URI" : "incoming takes one URI",
  async run({ flags, positionals: [uri] }, io) {
    // Parameters are checked as QEMU checks them; none of them changes how a
    // destination loads (they shape what a source sends).
    const { capabilities } = asUsageError(
      USAGE,
      () => parseMigrationSettings(flags.capability, flags.parameter),
    );
    const maxRamBytes = asUsageError(
      USAGE,
      () => parseSize(flags["max-ram"] ?? "16GiB", "--max-ram"),
    );
    const recoverUri = flags.recover;
    if (recoverUri !== undefined) {
      asUsageError(USAGE, () => parseTransportUri(recoverUri));
    }
    const settings = { ...DEFAULT_CAPABILITIES, ...capabilities };
    const json = flags.json ?? false;
    const dumpDir = flags["ram-dump"];
    const digests: { loaded: Record<string, string> } = { loaded: {} };
    const allocate = guestRamAllocator(io, {
      hugePages: flags.hugepages ?? false,
      populate: true,
    });
    const destination = new DestinationMigration({
      ...(allocate ? { allocate } : {}),
      maxRamBytes,
      events: settings.events,
      postcopy: settings["postcopy-ram"],
      preempt: settings["postcopy-preempt"],
      ramSha256Received: json,
      beforeResume: async (guest) => {
        if (json) digests.loaded = await ramSha256(guest.memory);
        if (dumpDir !== undefined) await dumpRam(guest.memory, dumpDir);
      },
    });
    destination.listen();
    const listener = await listen(destination, uri, settings);
    io.writeErr(`livemig: waiting for a migration at ${listener.address}\n`);
    destination.addEventListener("status", (event) => {
      const { status } = (event as CustomEvent<MigrationEventDetail>).detail;
      if (status.startsWith("postcopy")) io.writeErr(`livemig: ${status}\n`);
    });
    const healing = recoverUri === undefined
      ? undefined
      : healAt(destination, recoverUri, io);
    try {
      const result = await listener.incoming();
      await healing?.stop();
      result.guest.pause();
      report(result, { io, json, digests: digests.loaded, dumpDir });
      return 0;
    } catch (error) {
      await healing?.stop();
      destination.guest?.pause();
      if (json) io.writeOut(JSON.stringify(destination.query()) + "\n");
      if (error instanceof MigrationAbortedError) {
        io.writeErr(`livemig: ${error.message}\n`);
        return 1;
      }
      throw error;
    } finally {
      await listener.close();
    }
  },
});

/** Listens at `uri`: a stream, or with mapped-ram a file (else exit 2). */
function listen(
  destination: DestinationMigration,
  uri: string,
  settings: MigrationCapabilities,
) {
  const target = asUsageError(USAGE, () => parseTransportUri(uri));
  if (settings["mapped-ram"] && target.scheme !== "file") {
    throw new UsageError(
      `-c mapped-ram=on needs a file: URI, not "${uri}"`,
      USAGE,
    );
  }
  return listenForMigration(destination, uri, {
    mappedRam: settings["mapped-ram"],
  });
}

/** Recovers at `uri` whenever postcopy pauses, saying so on stderr. */
function healAt(
  destination: DestinationMigration,
  uri: string,
  io: CliIo,
): DestinationAutoRecovery {
  return new DestinationAutoRecovery(destination, uri, {
    onWaiting: (address) =>
      io.writeErr(
        `livemig: postcopy paused; waiting for the source at ${address}\n`,
      ),
    onError: (error) =>
      io.writeErr(
        `livemig: cannot recover at ${uri}: ${
          error instanceof Error ? error.message : error
        }\n`,
      ),
  });
}

/** Prints what was loaded. */
function report(
  result: IncomingResult,
  options: {
    io: CliIo;
    json: boolean;
    digests: Record<string, string>;
    dumpDir: string | undefined;
  },
): void {
  const { io, dumpDir } = options;
  if (options.json) {
    io.writeOut(
      JSON.stringify({
        ...result.info,
        "ram-sha256": options.digests,
        "ram-sha256-received": result.ramSha256Received,
      }) + "\n",
    );
    return;
  }
  io.writeOut(
    `completed: ${formatBytes(result.info.ram?.total ?? 0)} of RAM from a ${
      result.livemig ? "livemig" : `${result.machine ?? "QEMU"}`
    } source, ${result.info.ram?.duplicate} zero and ${result.info.ram?.normal} normal pages\n`,
  );
  if (dumpDir !== undefined) io.writeOut(`RAM written to ${dumpDir}\n`);
}

async function dumpRam(memory: GuestMemory, dir: string): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  for (const block of memory.blocks) {
    await Deno.writeFile(
      `${dir}/${ramBlockFileName(block.idstr)}`,
      block.bytes,
    );
  }
}
