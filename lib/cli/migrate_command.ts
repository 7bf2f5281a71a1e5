import {
  checkCapabilities,
  connectTransport,
  DEFAULT_CAPABILITIES,
  type MigratableGuest,
  migrateToUri,
  MigrationAbortedError,
  type MigrationCapabilities,
  type MigrationEventDetail,
  type MigrationInfo,
  parseTransportUri,
  parseUuid,
  ramSha256,
  sampleOfMigrationInfo,
  SourceAutoRecovery,
  SourceMigration,
} from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";
import { type Command, defineCommand } from "./define_command.ts";
import { describeCliError } from "./describe_cli_error.ts";
import { formatJson } from "./format_json.ts";
import { printMigrationEvents } from "./print_migration_events.ts";
import { withReturnPath } from "./with_return_path.ts";
import { formatMigrationSummary } from "./format_migration_summary.ts";
import {
  createGuest,
  GUEST_FLAGS,
  GUEST_FLAGS_USAGE,
  type GuestSettings,
  parseGuestFlags,
} from "./guest_flags.ts";
import {
  guestRamAllocator,
  parseHugePagesMode,
} from "./guest_ram_allocator.ts";
import { cancelOnInterrupt } from "./on_interrupt.ts";
import { serveMonitor } from "./serve_monitor.ts";
import { parseProgressMode, showProgress } from "./show_progress.ts";
import { startReport } from "./start_report.ts";
import { asUsageError, UsageError } from "./usage_error.ts";
import {
  loadWasmProgram,
  parseWasmFlags,
  refuseGuestFlags,
  startWasmGuest,
  WASM_FLAGS,
  WASM_FLAGS_USAGE,
} from "./wasm_flags.ts";
import { parseTlsFlags, TLS_FLAGS, TLS_FLAGS_USAGE } from "./tls_flags.ts";
import { checkWorkerPermission } from "./check_worker_permission.ts";

const USAGE = `Usage: livemig migrate URI [options]

Runs a simulated guest (or, with --wasm, a WebAssembly program) and
live-migrates it to the destination at URI:
tcp:HOST:PORT, unix:PATH, exec:COMMAND (the stream goes to COMMAND's stdin)
or file:PATH[,offset=N]. Ctrl-C (or SIGTERM) cancels the migration and the
guest keeps running here. In postcopy the destination runs the guest and
only this process has the pages it still lacks: if the connection breaks
the migration pauses (postcopy-paused) and waits, and giving up loses the
guest, so it takes Ctrl-C twice within 5 s, or SIGTERM (exit status 1,
status postcopy-paused).

-c background-snapshot=on writes a snapshot instead (a file: URI is the
usual target): the RAM as it was when it started, while the guest keeps
running; the guest stops only to take its device state, each page goes
once (a page the guest is about to write is copied first), and the
migration completes with the guest still running here. --json's
ram-sha256 is then that of the snapshot's RAM, what "incoming" reports
once it loaded it. A snapshot runs without return-path (QEMU refuses the
pair), and refuses xbzrle, postcopy-ram, multifd, auto-converge and the
other capabilities QEMU 7.2 refuses with it, in QEMU's words.

"completed" means the destination confirmed it loaded everything: to tcp:
and unix: the return-path capability is on unless -c return-path=off (then
"completed" only means the whole stream was sent, and a warning says so).
exec: and file: cannot answer, so return-path is off there: "completed"
means the command took the whole stream and exited with status 0, or the
file was written; -c return-path=on is refused for file: and allowed for
exec: commands that relay the destination's answers (exec:nc HOST PORT).

Options:
${GUEST_FLAGS_USAGE}
${WASM_FLAGS_USAGE}
  --qmp ADDRESS        Serve a QMP monitor (unix:PATH or tcp:HOST:PORT) for
                       the migration: query-migrate, migrate-continue,
                       migrate_cancel, migrate-set-parameters, events
  With -c pause-before-switchover=on the guest stops and the migration waits
  in pre-switchover for migrate-continue on that monitor (needs --qmp).
  --postcopy-after N   Switch to postcopy after N passes over RAM (0: at
                       once, before any page is sent; 1: after every page
                       went once; needs -c postcopy-ram=on here and on
                       the destination)
  --uuid UUID          The VM's UUID, as QEMU's -uuid: with -c validate-uuid=on
                       the stream carries it and the destination refuses
                       it unless its own UUID matches
  --recover URI        When postcopy pauses (connection lost), reconnect to
                       the destination's recovery address URI and resume
  --progress MODE      auto (default), tty (one line rewritten), lines (a
                       line every 5 s) or off; the ETA comes from the
                       planner's model with the measured rates, with how
                       much later it may come, or says "not converging"
  --report FILE.svg    Write a picture of the migration: remaining bytes,
                       bandwidth and dirty rate over time, passes, statuses,
                       the switchover and the downtime
${TLS_FLAGS_USAGE}

Exit status: 0 completed, 1 failed, cancelled or given up in postcopy, 2 usage
error.
`;

/**
 * `livemig migrate URI`: runs a simulated guest and live-migrates it to
 * the destination at URI (`livemig incoming`, or QEMU started with
 * `-incoming`).
 *
 * @example Usage
 * ```ts
 * import { MIGRATE_COMMAND } from "./migrate_command.ts";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * const io = { writeOut: (text: string) => (out += text), writeErr: () => {}, errIsTerminal: false };
 * const path = await Deno.makeTempFile({ suffix: ".mig" });
 * assert.equal(await MIGRATE_COMMAND.run([`file:${path}`, "--ram", "1MiB", "--json"], io), 0);
 * assert.equal(JSON.parse(out).status, "completed");
 * await Deno.remove(path);
 * ```
 */
export const MIGRATE_COMMAND: Command = defineCommand({
  usage: USAGE,
  flags: {
    ...GUEST_FLAGS,
    ...WASM_FLAGS,
    "postcopy-after": { type: "string" },
    recover: { type: "string" },
    uuid: { type: "string" },
    qmp: { type: "string" },
    progress: { type: "string" },
    report: { type: "string" },
    ...TLS_FLAGS,
  },
  positionals: [{ name: "URI", uri: true }],
  wrongCount: (count) =>
    count === 0 ? "migrate needs a URI" : "migrate takes one URI",
  async run({ flags, positionals: [uri] }, io) {
    const settings = parseGuestFlags(flags, {
      usage: USAGE,
      workload: "idle",
      prefill: false,
    });
    const postcopyAfter = flags["postcopy-after"];
    const recoverUri = flags.recover;
    const uuid = flags.uuid;
    asUsageError(USAGE, () => {
      if (uuid !== undefined) parseUuid(uuid);
      if (postcopyAfter !== undefined) {
        checkPostcopyAfter(postcopyAfter, settings.capabilities);
      }
      if (recoverUri !== undefined) parseTransportUri(recoverUri);
      settings.capabilities = withReturnPath(settings.capabilities, uri);
      checkCapabilities({ ...DEFAULT_CAPABILITIES, ...settings.capabilities });
    });
    checkCompletion(settings.capabilities, { uri, qmp: flags.qmp, io });
    if (settings.capabilities.multifd) checkWorkerPermission("multifd", USAGE);
    const tls = await parseTlsFlags(flags, "client", USAGE);
    const guest = await sourceGuest(flags, settings, io);
    const source = new SourceMigration(guest, {
      capabilities: settings.capabilities,
      parameters: settings.parameters,
      ...(uuid === undefined ? {} : { uuid }),
      ...(postcopyAfter === undefined
        ? {}
        : { postcopyAfterPasses: Number(postcopyAfter) }),
    });
    const done = watchSource(source, { io, uri, flags });
    const healing = recoverUri === undefined
      ? undefined
      : new SourceAutoRecovery(source, recoverUri, {
        connect: (at) => connectTransport(at, tls ? { tls } : {}),
      });
    const pauses = announcePauses(source, io, recoverUri);
    const stopEvents = printMigrationEvents(source, io);
    const monitor = flags.qmp === undefined
      ? undefined
      : await serveMonitor(source, flags.qmp, io);
    try {
      const info = await cancelOnInterrupt(
        source,
        migrateToUri(source, uri, tls ? { tls } : {}),
        { io },
      );
      healing?.stop();
      pauses.stop();
      stopEvents();
      await monitor?.stop();
      await done(info);
      await printCompleted(info, { guest, json: settings.json, io });
      return 0;
    } catch (error) {
      healing?.stop();
      pauses.stop();
      stopEvents();
      await monitor?.stop();
      await done(source.query());
      guest.pause();
      if (settings.json) {
        const info = source.query();
        io.writeOut(
          formatJson({
            ...info,
            // Never started (the destination could not be reached): failed,
            // as QEMU's status is after a migrate that cannot connect.
            ...(info.status === "none"
              ? {
                status: "failed" as const,
                "error-desc": error instanceof Error
                  ? error.message
                  : String(error),
              }
              : {}),
            "ram-sha256": await ramSha256(guest.memory),
          }) + "\n",
        );
      }
      if (error instanceof MigrationAbortedError) {
        io.writeErr(`livemig: ${describeCliError(error)}\n`);
        return 1;
      }
      throw error;
    }
  },
});

/**
 * Prints a completed migration. A snapshot's digest is of the RAM it
 * holds, not of the RAM now; its guest, still running, ends with the
 * process.
 */
async function printCompleted(
  info: MigrationInfo,
  { guest, json, io }: { guest: MigratableGuest; json: boolean; io: CliIo },
): Promise<void> {
  const snapshot = info["x-livemig-snapshot-ram-sha256"];
  if (json) {
    const digests = snapshot ?? await ramSha256(guest.memory);
    io.writeOut(formatJson({ ...info, "ram-sha256": digests }) + "\n");
  } else {
    io.writeOut(`${formatMigrationSummary(info)}\n`);
    if (snapshot) io.writeOut(formatSnapshotDigests(snapshot));
  }
  if (snapshot) await guest.pause();
}

/** The human lines for a snapshot's digests. */
function formatSnapshotDigests(digests: Record<string, string>): string {
  return Object.entries(digests).map(([block, sha]) =>
    `snapshot of the RAM at the start: ${block} sha256 ${sha} (the guest kept running until now)\n`
  ).join("");
}

/**
 * `--progress` and `--report`: shows progress and records the source; the
 * function it returns stops both and writes the report.
 */
function watchSource(
  source: SourceMigration,
  options: {
    io: CliIo;
    uri: string;
    flags: { progress?: string | undefined; report?: string | undefined };
  },
): (end: MigrationInfo) => Promise<void> {
  const { io, uri, flags } = options;
  const mode = asUsageError(USAGE, () => parseProgressMode(flags.progress));
  const stopProgress = showProgress(source, io, { mode });
  const report = flags.report === undefined
    ? undefined
    : startSourceReport(source, flags.report, { uri, io });
  return async (end) => {
    stopProgress();
    await report?.(end);
  };
}

/** `--report`: records the source, writes the SVG at the end. */
function startSourceReport(
  source: SourceMigration,
  path: string,
  options: { uri: string; io: CliIo },
): (end: MigrationInfo) => Promise<void> {
  return startReport(source, {
    path,
    title: `livemig migrate ${options.uri}`,
    toSample: sampleOfMigrationInfo,
    outcome: (end) => ({
      status: end.status,
      totalTimeMs: end["total-time"] ?? 0,
      ...(end.downtime === undefined ? {} : { downtimeMs: end.downtime }),
      downtimeLimitMs: source.parameters["downtime-limit"],
      ...(end.ram ? { transferredBytes: end.ram.transferred } : {}),
    }),
    io: options.io,
  });
}

/** The guest to migrate: the `--wasm` program, or a simulated guest. */
async function sourceGuest(
  flags:
    & Parameters<typeof parseWasmFlags>[0]
    & Parameters<typeof parseHugePagesMode>[0]
    & Record<string, unknown>,
  settings: GuestSettings,
  io: CliIo,
): Promise<MigratableGuest> {
  const wasm = parseWasmFlags(flags, USAGE);
  if (wasm === undefined) {
    const hugePages = parseHugePagesMode(flags, USAGE);
    return createGuest(settings, guestRamAllocator(io, { hugePages }));
  }
  refuseGuestFlags(flags, USAGE);
  return startWasmGuest(await loadWasmProgram(wasm), wasm);
}

/**
 * Refuses pause-before-switchover without a monitor to continue it; warns
 * when "completed" will not mean that the destination loaded everything.
 */
function checkCompletion(
  capabilities: Partial<MigrationCapabilities>,
  { uri, qmp, io }: { uri: string; qmp: string | undefined; io: CliIo },
): void {
  if (capabilities["pause-before-switchover"] && qmp === undefined) {
    throw new UsageError(
      "-c pause-before-switchover=on needs --qmp ADDRESS: the migration continues with migrate-continue there",
      USAGE,
    );
  }
  if (!confirmsCompletion(capabilities, uri)) {
    const why = capabilities["background-snapshot"]
      ? "a background snapshot runs without return-path"
      : "return-path is off";
    io.writeErr(
      `livemig: ${why}: "completed" will mean that the whole stream was sent, not that the destination loaded it\n`,
    );
  }
}

/** Checks `--postcopy-after`: a number of passes, with postcopy-ram on. */
function checkPostcopyAfter(
  value: string,
  capabilities: { "postcopy-ram"?: boolean },
): void {
  const passes = Number(value);
  if (!Number.isSafeInteger(passes) || passes < 0) {
    throw new RangeError(
      `Cannot use --postcopy-after "${value}": it must be a number of passes (0 or more)`,
    );
  }
  if (!capabilities["postcopy-ram"]) {
    throw new TypeError(
      "Cannot use --postcopy-after: it needs -c postcopy-ram=on on both ends",
    );
  }
}

/**
 * Whether "completed" will be confirmed: by SHUT over a return path, or by
 * the end of an exec: command or of a file write.
 */
function confirmsCompletion(
  capabilities: Partial<MigrationCapabilities>,
  uri: string,
): boolean {
  const { scheme } = parseTransportUri(uri);
  return scheme === "exec" || scheme === "file" ||
    capabilities["return-path"] === true ||
    capabilities["postcopy-ram"] === true;
}

/**
 * Says on stderr when postcopy pauses, why, and what the user can do: the
 * process keeps the pages the destination still needs, so it waits (and
 * reconnects with --recover).
 */
function announcePauses(
  source: SourceMigration,
  io: CliIo,
  recoverUri: string | undefined,
): { stop(): void } {
  const onStatus = (event: Event) => {
    const { status } = (event as CustomEvent<MigrationEventDetail>).detail;
    if (status !== "postcopy-paused") return;
    const cause = source.query()["error-desc"] ?? "the connection was lost";
    io.writeErr(`livemig: postcopy paused: ${cause}\n`);
    io.writeErr(
      recoverUri === undefined
        ? "livemig: the guest runs on the destination, which still needs pages only this process has, so it waits (to heal a cut connection, start both ends with --recover URI); Ctrl-C twice or SIGTERM gives the guest up\n"
        : `livemig: reconnecting at ${recoverUri}; Ctrl-C twice or SIGTERM gives the guest up\n`,
    );
  };
  source.addEventListener("status", onStatus);
  return { stop: () => source.removeEventListener("status", onStatus) };
}
