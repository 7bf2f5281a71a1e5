import {
  migrateToUri,
  MigrationAbortedError,
  type MigrationCapabilities,
  parseTransportUri,
  ramSha256,
  SourceAutoRecovery,
  SourceMigration,
} from "../../mod.ts";
import { continueOnSignal } from "./continue_on_signal.ts";
import { type Command, defineCommand } from "./define_command.ts";
import { formatMigrationSummary } from "./format_migration_summary.ts";
import {
  createGuest,
  GUEST_FLAGS,
  GUEST_FLAGS_USAGE,
  parseGuestFlags,
} from "./guest_flags.ts";
import { guestRamAllocator } from "./guest_ram_allocator.ts";
import { cancelOnInterrupt } from "./on_interrupt.ts";
import { showProgress } from "./show_progress.ts";
import { asUsageError } from "./usage_error.ts";

const USAGE = `Usage: livemig migrate URI [options]

Runs a simulated guest and live-migrates it to the destination at URI:
tcp:HOST:PORT, unix:PATH, exec:COMMAND (the stream goes to COMMAND's stdin)
or file:PATH[,offset=N]. Ctrl-C cancels the migration (not in postcopy).

"completed" means the destination confirmed it loaded everything: to tcp:
and unix: the return-path capability is on unless -c return-path=off (then
"completed" only means the whole stream was sent, and a warning says so).
exec: and file: cannot answer, so return-path is off there: "completed"
means the command took the whole stream and exited with status 0, or the
file was written; -c return-path=on is refused for file: and allowed for
exec: commands that relay the destination's answers (exec:nc HOST PORT).

Options:
${GUEST_FLAGS_USAGE}
  With -c pause-before-switchover=on the guest stops and the migration waits
  in pre-switchover until the process gets SIGUSR1 (migrate-continue).
  --postcopy-after N   Switch to postcopy after N passes over RAM (0: at
                       once, before any page is sent; 1: after every page
                       went once; needs -c postcopy-ram=on here and on
                       the destination)
  --recover URI        When postcopy pauses (connection lost), reconnect to
                       the destination's recovery address URI and resume

Exit status: 0 completed, 1 failed or cancelled, 2 usage error.
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
    "postcopy-after": { type: "string" },
    recover: { type: "string" },
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
    asUsageError(USAGE, () => {
      if (postcopyAfter !== undefined) {
        checkPostcopyAfter(postcopyAfter, settings.capabilities);
      }
      if (recoverUri !== undefined) parseTransportUri(recoverUri);
      settings.capabilities = withReturnPath(settings.capabilities, uri);
    });
    if (!confirmsCompletion(settings.capabilities, uri)) {
      io.writeErr(
        `livemig: return-path is off: "completed" will mean that the whole stream was sent, not that the destination loaded it\n`,
      );
    }
    const hugePages = flags.hugepages ?? false;
    const guest = createGuest(settings, guestRamAllocator(io, { hugePages }));
    const source = new SourceMigration(guest, {
      capabilities: settings.capabilities,
      parameters: settings.parameters,
      ...(postcopyAfter === undefined
        ? {}
        : { postcopyAfterPasses: Number(postcopyAfter) }),
    });
    const done = showProgress(source, io);
    const healing = recoverUri === undefined
      ? undefined
      : new SourceAutoRecovery(source, recoverUri, {
        onPaused: () =>
          io.writeErr(
            `livemig: postcopy paused; reconnecting at ${recoverUri}\n`,
          ),
      });
    const continuing = continueOnSignal(source, io);
    try {
      const info = await cancelOnInterrupt(source, migrateToUri(source, uri));
      healing?.stop();
      continuing.stop();
      done();
      if (settings.json) {
        const digests = await ramSha256(guest.memory);
        io.writeOut(JSON.stringify({ ...info, "ram-sha256": digests }) + "\n");
      } else {
        io.writeOut(`${formatMigrationSummary(info)}\n`);
      }
      return 0;
    } catch (error) {
      healing?.stop();
      continuing.stop();
      done();
      guest.pause();
      if (settings.json) {
        io.writeOut(
          JSON.stringify({
            ...source.query(),
            "ram-sha256": await ramSha256(guest.memory),
          }) + "\n",
        );
      }
      if (error instanceof MigrationAbortedError) {
        io.writeErr(`livemig: ${error.message}\n`);
        return 1;
      }
      throw error;
    }
  },
});

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
 * The capabilities with `return-path` on by default where the destination
 * can answer (tcp:, unix:); refuses it for a file: URI, which cannot.
 */
function withReturnPath(
  capabilities: Partial<MigrationCapabilities>,
  uri: string,
): Partial<MigrationCapabilities> {
  const { scheme } = parseTransportUri(uri);
  const asked = capabilities["return-path"];
  if (scheme === "file" && asked) {
    throw new TypeError(
      `Cannot use return-path with "${uri}": a file cannot answer`,
    );
  }
  if (asked !== undefined || (scheme !== "tcp" && scheme !== "unix")) {
    return capabilities;
  }
  return { ...capabilities, "return-path": true };
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
