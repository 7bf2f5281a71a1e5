import {
  DestinationAutoRecovery,
  type DestinationMigration,
  listenTransport,
  type MigrationEventDetail,
  type TlsOptions,
} from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";
import { INTERRUPT_WINDOW_MS } from "./decide_interrupt.ts";
import { describeCliError } from "./describe_cli_error.ts";
import { formatIncomingProgress } from "./format_incoming_progress.ts";
import { handleInterrupts, type SignalSource } from "./handle_interrupts.ts";
import { printMigrationEvents } from "./print_migration_events.ts";
import { type ProgressMode, showProgress } from "./show_progress.ts";

/** Options for {@linkcode watchIncoming}. */
export interface WatchIncomingOptions {
  /** Where to wait for the source when postcopy pauses (`--recover`). */
  recoverUri: string | undefined;
  /** Milliseconds a connection may stay silent (0: forever). */
  idleTimeoutMs: number;
  /** TLS for the recovery connection, as for the migration's (`--tls-creds`). */
  tls?: TlsOptions | undefined;
  /** How to show progress. */
  progress: ProgressMode;
  /** Whether to print MIGRATION events (`-c events=on`). */
  events: boolean;
  /** Stops waiting for a source that has not connected yet. */
  stopListening(): void;
  /** Where signals come from (the process by default). */
  signals?: SignalSource;
}

/**
 * Everything `incoming` does while the migration runs, besides loading
 * it: says on stderr when postcopy starts, pauses or recovers (and what the
 * user can do), answers Ctrl-C and SIGTERM, shows progress and events,
 * recovers at `--recover`. Returns the handle that stops all of it.
 *
 * Ctrl-C or SIGTERM before postcopy fails the migration (the source keeps
 * its guest). In postcopy the guest is split between both ends, so a first
 * Ctrl-C only warns; a second within 5 s, or SIGTERM, gives the migration
 * up (it stays `postcopy-paused`). Listening for the signals keeps the
 * process alive while postcopy is paused.
 *
 * @example Usage
 * ```ts
 * import { watchIncoming } from "./watch_incoming.ts";
 * import { DestinationMigration } from "../../mod.ts";
 * import assert from "node:assert/strict";
 *
 * let err = "";
 * const io = { writeOut: () => {}, writeErr: (text: string) => (err += text), errIsTerminal: false };
 * const destination = new DestinationMigration({ events: true });
 * const watching = watchIncoming(destination, io, {
 *   recoverUri: undefined, idleTimeoutMs: 0, progress: "off", events: true, stopListening: () => {},
 * });
 * destination.listen();
 * await watching.stop();
 * assert.match(err, /"event": "MIGRATION"/);
 * assert.equal(JSON.parse(err).data.status, "setup");
 * ```
 *
 * @param destination The destination.
 * @param io Where to write.
 * @param options What to show, where to recover, the signals.
 * @returns `stop()` ends the watching.
 */
export function watchIncoming(
  destination: DestinationMigration,
  io: CliIo,
  options: WatchIncomingOptions,
): { stop(): Promise<void> } {
  let givingUp = false;
  const onStatus = (event: Event) => {
    const { status } = (event as CustomEvent<MigrationEventDetail>).detail;
    if (status === "postcopy-paused" && !givingUp) {
      io.writeErr(pausedText(destination, options.recoverUri !== undefined));
    } else if (status.startsWith("postcopy")) {
      io.writeErr(`livemig: ${status}\n`);
    }
  };
  const onWarning = (event: Event) => {
    const { message } = (event as CustomEvent<{ message: string }>).detail;
    io.writeErr(`livemig: warning: ${message}\n`);
  };
  destination.addEventListener("status", onStatus);
  destination.addEventListener("warning", onWarning);
  const stops = [
    () => destination.removeEventListener("status", onStatus),
    () => destination.removeEventListener("warning", onWarning),
    showProgress(destination, io, {
      mode: options.progress,
      format: formatIncomingProgress,
    }),
    options.events ? printMigrationEvents(destination, io) : () => {},
  ];
  const interrupts = handleInterrupts({
    postcopy: () => destination.status.startsWith("postcopy"),
    cancel(signal) {
      const waiting = destination.status === "none" ||
        destination.status === "setup";
      destination.abort(
        `interrupted by ${signal}${
          waiting ? " while waiting for a source" : ""
        }`,
      );
      if (waiting) options.stopListening();
    },
    warn: () => io.writeErr(warningText(destination)),
    giveUp(signal) {
      givingUp = true;
      try {
        destination.abandon(`quit on ${signal}`);
      } catch {
        // it ended meanwhile
      }
    },
  }, options.signals ? { signals: options.signals } : {});
  const healing = options.recoverUri === undefined
    ? undefined
    : healAt(destination, options.recoverUri, io, options);
  return {
    async stop() {
      interrupts.stop();
      for (const stop of stops) stop();
      await healing?.stop();
    },
  };
}

/** How many of the guest's pages are still on the source. */
function missingPages(destination: DestinationMigration): number {
  const ram = destination.query().ram;
  return ram ? Math.ceil(ram.remaining / ram["page-size"]) : 0;
}

/** What stderr says when postcopy pauses. */
function pausedText(
  destination: DestinationMigration,
  recovering: boolean,
): string {
  const cause = destination.query()["error-desc"] ?? "the connection was lost";
  const lines = [
    `postcopy paused: ${describeCliError(cause)}`,
    `the guest runs here, but ${
      missingPages(destination)
    } of its pages are still on the source: neither end may give it up, so this end waits${
      recovering
        ? " for the source to reconnect"
        : " (to heal a cut connection, start both ends with --recover URI; guests under livemig run --qmp heal with migrate-recover)"
    }`,
    `Ctrl-C twice within ${
      INTERRUPT_WINDOW_MS / 1000
    } s, or SIGTERM, quits and loses the guest`,
  ];
  return lines.map((line) => `livemig: ${line}\n`).join("");
}

/** What stderr says at a first Ctrl-C in postcopy. */
function warningText(destination: DestinationMigration): string {
  return `livemig: the guest is in ${destination.status} and ${
    missingPages(destination)
  } of its pages are still on the source: quitting now loses it; press Ctrl-C again within ${
    INTERRUPT_WINDOW_MS / 1000
  } s (or send SIGTERM) to quit anyway\n`;
}

/** Recovers at `uri` whenever postcopy pauses, saying so on stderr. */
function healAt(
  destination: DestinationMigration,
  uri: string,
  io: CliIo,
  { idleTimeoutMs, tls }: WatchIncomingOptions,
): DestinationAutoRecovery {
  return new DestinationAutoRecovery(destination, uri, {
    listen: (at) =>
      listenTransport(at, {
        ...(idleTimeoutMs > 0 ? { idleTimeoutMs } : {}),
        ...(tls ? { tls } : {}),
      }),
    onWaiting: (address) =>
      io.writeErr(
        `livemig: postcopy paused; waiting for the source at ${address}\n`,
      ),
    onError: (error) =>
      io.writeErr(
        `livemig: cannot recover at ${uri}: ${describeCliError(error)}\n`,
      ),
  });
}
