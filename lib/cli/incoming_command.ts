import {
  DEFAULT_CAPABILITIES,
  DEFAULT_PARAMETERS,
  describeError,
  DestinationMigration,
  escapeUntrustedText,
  type IncomingMigrationListener,
  type IncomingResult,
  listenForMigration,
  MigrationAbortedError,
  type MigrationCapabilities,
  type MigrationParameters,
  parseSize,
  parseTransportUri,
  parseUuid,
  ramSha256,
  type TlsOptions,
} from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";
import { type Command, defineCommand } from "./define_command.ts";
import { formatJson } from "./format_json.ts";
import { describeCliError } from "./describe_cli_error.ts";
import { dumpRam } from "./dump_ram.ts";
import { formatIncomingSummary } from "./format_incoming_summary.ts";
import {
  guestRamAllocator,
  HUGE_PAGES_FLAGS,
  HUGE_PAGES_USAGE,
  parseHugePagesMode,
} from "./guest_ram_allocator.ts";
import { parseIdleTimeout } from "./parse_idle_timeout.ts";
import { parseMigrationSettings } from "./parse_migration_settings.ts";
import { PROGRESS_MODES, type ProgressMode } from "./show_progress.ts";
import { asUsageError, UsageError } from "./usage_error.ts";
import { watchIncoming } from "./watch_incoming.ts";
import { withReturnPath } from "./with_return_path.ts";
import {
  loadWasmProgram,
  parseWasmFlags,
  reportWasmChecksum,
  WASM_FLAGS,
  WASM_FLAGS_USAGE,
  wasmGuestOptions,
} from "./wasm_flags.ts";
import { parseTlsFlags, TLS_FLAGS, TLS_FLAGS_USAGE } from "./tls_flags.ts";
import { checkWorkerPermission } from "./check_worker_permission.ts";

const USAGE = `Usage: livemig incoming URI [options]

Waits for a migration at URI (tcp:HOST:PORT, unix:PATH, exec:COMMAND reading
the stream from COMMAND's stdout, file:PATH[,offset=N]) and loads it into a
new guest, which resumes once the whole stream is loaded. Accepts streams
from livemig and from QEMU 7.2; a file: URI naming a mapped-ram file is
loaded as one. While a migration runs, another connection to URI is closed
at once.

Options:
  --ram-dump DIR       Write each RAM block to DIR/<name>.bin before the
                       guest resumes (if that fails, the migration fails)
  --max-ram SIZE       Largest RAM a source may announce (default 16GiB)
  --uuid UUID          This VM's UUID, as QEMU's -uuid: a source with
                       validate-uuid on that sends another one is refused
  --idle-timeout DURATION
                       Fail when the source sends nothing for DURATION,
                       e.g. 30s (default: wait forever, as QEMU does)
${HUGE_PAGES_USAGE}
  --recover URI        When postcopy pauses, wait for the source at URI and
                       recover
${TLS_FLAGS_USAGE}
  --progress MODE      auto (default), tty (one line rewritten), lines (a
                       line every 5 s) or off
  -c, --capability NAME=on|off
                       events (print each MIGRATION event as a JSON line on
                       stderr), postcopy-ram, postcopy-preempt, mapped-ram
                       (on: URI must be a mapped-ram file; off: a stream),
                       multifd (tcp: and unix: only; the source opens
                       multifd-channels more connections for the pages)
                       switchover-ack (tcp: and unix: only, on the return
                       path the source opens: tell the source once the RAM
                       block list is loaded)
  -p, --parameter NAME=VALUE
                       accepted and checked as on a source; with multifd on,
                       multifd-channels (default 2) and multifd-compression
                       (none, zlib, zstd) must be the source's; the others
                       shape only what the source sends
  --json               Print the final info (plus ram-sha256, and
                       ram-sha256-received: RAM as it arrived) as JSON;
                       hashing RAM before the guest resumes lengthens the
                       downtime (about 0.8 s per GiB)
${WASM_FLAGS_USAGE}
                       (--init does not apply here)
  -h, --help           Show this help

Ctrl-C (or SIGTERM) fails the migration, the source keeping its guest; in
postcopy, where the guest is split between both ends, a first Ctrl-C only
warns and a second within 5 s (or SIGTERM) quits with status
postcopy-paused, losing the guest.

Exit status: 0 completed, 1 failed (or given up in postcopy), 2 usage error.
`;

/** The command line of `incoming`, checked. */
interface IncomingSettings {
  capabilities: Partial<MigrationCapabilities>;
  parameters: Partial<MigrationParameters>;
  maxRamBytes: number;
  uuid: string | undefined;
  recoverUri: string | undefined;
  idleTimeoutMs: number;
  progress: ProgressMode;
  dumpDir: string | undefined;
  json: boolean;
  tls: TlsOptions | undefined;
}

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
 * const args = [`file:${stream}`, "--json", "--no-hugepages"];
 * assert.equal(await INCOMING_COMMAND.run(args, io), 0);
 * assert.equal(JSON.parse(out).status, "completed");
 * assert.equal(err, `livemig: waiting for a migration at file:${stream}\n`);
 * ```
 */
export const INCOMING_COMMAND: Command = defineCommand({
  usage: USAGE,
  flags: {
    "ram-dump": { type: "string" },
    "max-ram": { type: "string" },
    uuid: { type: "string" },
    "idle-timeout": { type: "string" },
    recover: { type: "string" },
    progress: { type: "string" },
    capability: { type: "string", short: "c", multiple: true },
    parameter: { type: "string", short: "p", multiple: true },
    ...HUGE_PAGES_FLAGS,
    json: { type: "boolean" },
    ...WASM_FLAGS,
    ...TLS_FLAGS,
  },
  positionals: [{ name: "URI", uri: true }],
  wrongCount: (count) =>
    count === 0 ? "incoming needs a URI" : "incoming takes one URI",
  async run({ flags, positionals: [uri] }, io) {
    const settings = {
      ...asUsageError(USAGE, () => parseIncomingFlags(flags, uri)),
      tls: await parseTlsFlags(flags, "server", USAGE),
    };
    const wasm = parseWasmFlags(flags, USAGE);
    if (wasm?.init !== undefined) {
      throw new UsageError(
        "--init does not go with incoming: the program's state arrives from the source",
        USAGE,
      );
    }
    const program = wasm && await loadWasmProgram(wasm);
    const capabilities = { ...DEFAULT_CAPABILITIES, ...settings.capabilities };
    if (capabilities.multifd) checkWorkerPermission("multifd", USAGE);
    const digests: { loaded: Record<string, string> } = { loaded: {} };
    const allocate = guestRamAllocator(io, {
      hugePages: parseHugePagesMode(flags, USAGE),
      populate: true,
    });
    const { json, dumpDir } = settings;
    const destination = new DestinationMigration({
      ...(allocate ? { allocate } : {}),
      maxRamBytes: settings.maxRamBytes,
      ...(settings.uuid === undefined ? {} : { uuid: settings.uuid }),
      events: capabilities.events,
      postcopy: capabilities["postcopy-ram"],
      preempt: capabilities["postcopy-preempt"],
      switchoverAck: capabilities["switchover-ack"],
      ...(capabilities.multifd
        ? {
          multifd: {
            channels: settings.parameters["multifd-channels"] ??
              DEFAULT_PARAMETERS["multifd-channels"],
            compression: settings.parameters["multifd-compression"] ??
              DEFAULT_PARAMETERS["multifd-compression"],
          },
        }
        : {}),
      ramSha256Received: json,
      ...(program && wasm
        ? { createGuest: program.guestFactory(wasmGuestOptions(wasm)) }
        : {}),
      beforeResume: async (guest) => {
        if (json) digests.loaded = await ramSha256(guest.memory);
        if (dumpDir !== undefined) await dumpRam(guest.memory, dumpDir);
      },
    });
    let listener: IncomingMigrationListener | undefined;
    const watching = watchIncoming(destination, io, {
      ...settings,
      events: capabilities.events,
      stopListening: () => void listener?.close(),
    });
    try {
      destination.listen(); // status setup, the first MIGRATION event
      listener = await listen(destination, uri, settings, io);
      const result = await listener.incoming();
      await watching.stop();
      if (wasm !== undefined) await reportWasmChecksum(result.guest, wasm, io);
      result.guest.pause();
      report(result, { io, json, digests: digests.loaded, dumpDir });
      return 0;
    } catch (error) {
      await watching.stop();
      if (error instanceof UsageError) throw error;
      destination.guest?.pause();
      return reportFailure(destination, error, { io, json });
    } finally {
      await listener?.close();
    }
  },
});

/**
 * Checks the flags of `incoming` for a migration arriving at `uri`
 * (switchover-ack needs a return path: tcp: or unix:, not turned off).
 */
function parseIncomingFlags(flags: {
  capability?: string[] | undefined;
  parameter?: string[] | undefined;
  "max-ram"?: string | undefined;
  uuid?: string | undefined;
  "idle-timeout"?: string | undefined;
  recover?: string | undefined;
  progress?: string | undefined;
  "ram-dump"?: string | undefined;
  json?: boolean | undefined;
}, uri: string): Omit<IncomingSettings, "tls"> {
  // Parameters are checked as QEMU checks them; none of them changes how a
  // destination loads (they shape what a source sends).
  const { capabilities, parameters } = parseMigrationSettings(
    flags.capability,
    flags.parameter,
  );
  if (
    capabilities["switchover-ack"] &&
    !withReturnPath(capabilities, uri)["return-path"]
  ) {
    // QEMU checks this pair on both ends; the destination answers on the
    // return path the source opens, which tcp: and unix: carry.
    throw new TypeError(
      "Capability 'switchover-ack' requires capability 'return-path'",
    );
  }
  const progress = flags.progress ?? "auto";
  if (!PROGRESS_MODES.includes(progress as ProgressMode)) {
    throw new TypeError(
      `Cannot use --progress "${progress}": expected ${
        PROGRESS_MODES.join(", ")
      }`,
    );
  }
  if (flags.recover !== undefined) parseTransportUri(flags.recover);
  return {
    capabilities,
    parameters,
    maxRamBytes: parseSize(flags["max-ram"] ?? "16GiB", "--max-ram"),
    uuid: flags.uuid === undefined ? undefined : checkUuidFlag(flags.uuid),
    idleTimeoutMs: parseIdleTimeout(flags["idle-timeout"], USAGE),
    recoverUri: flags.recover,
    progress: progress as ProgressMode,
    dumpDir: flags["ram-dump"],
    json: flags.json ?? false,
  };
}

/**
 * Listens at `uri`: a stream, or a mapped-ram file (said on stderr when
 * `-c mapped-ram` did not say so).
 */
async function listen(
  destination: DestinationMigration,
  uri: string,
  settings: IncomingSettings,
  io: CliIo,
): Promise<IncomingMigrationListener> {
  const target = parseTransportUri(uri);
  const mappedRam = settings.capabilities["mapped-ram"];
  if (mappedRam && target.scheme !== "file") {
    throw new UsageError(
      `-c mapped-ram=on needs a file: URI, not "${uri}"`,
      USAGE,
    );
  }
  const listener = await listenForMigration(destination, uri, {
    ...(mappedRam === undefined ? {} : { mappedRam }),
    ...(settings.idleTimeoutMs > 0
      ? { idleTimeoutMs: settings.idleTimeoutMs }
      : {}),
    ...(settings.tls ? { tls: settings.tls } : {}),
    onRefused: (peer) =>
      io.writeErr(
        `livemig: refused a connection from ${
          escapeUntrustedText(peer)
        }: a migration is in progress\n`,
      ),
  });
  io.writeErr(`livemig: waiting for a migration at ${listener.address}\n`);
  if (listener.format === "mapped-ram" && mappedRam === undefined) {
    io.writeErr(
      `livemig: ${uri} is a mapped-ram file: loading its pages from their fixed offsets (as -c mapped-ram=on does)\n`,
    );
  }
  return listener;
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
      formatJson({
        ...result.info,
        "ram-sha256": options.digests,
        "ram-sha256-received": result.ramSha256Received,
      }) + "\n",
    );
    return;
  }
  io.writeOut(`${formatIncomingSummary(result)}\n`);
  if (dumpDir !== undefined) io.writeOut(`RAM written to ${dumpDir}\n`);
}

/**
 * Prints why the migration did not complete: the JSON status, the exit
 * status and the message agree (a destination that never got its source
 * is failed first, so its status says so).
 */
function reportFailure(
  destination: DestinationMigration,
  error: unknown,
  { io, json }: { io: CliIo; json: boolean },
): number {
  if (destination.status === "none" || destination.status === "setup") {
    destination.abort(describeError(error));
  }
  const info = destination.query();
  if (json) io.writeOut(formatJson(info) + "\n");
  const message = error instanceof MigrationAbortedError
    ? describeCliError(error)
    : `Cannot complete the incoming migration: ${
      describeCliError(info["error-desc"] ?? error)
    }`;
  io.writeErr(`livemig: ${message}\n`);
  return 1;
}

/** Checks `--uuid` (QEMU's -uuid form). */
function checkUuidFlag(uuid: string): string {
  parseUuid(uuid);
  return uuid;
}
