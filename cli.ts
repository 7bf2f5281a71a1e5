/**
 * The livemig command line: `analyze`, `demo` and the migration commands.
 *
 * `main(args, io)` parses the arguments, runs the library and returns the
 * exit code (0 success, 1 failure, 2 usage error); it never exits the
 * process itself, so tests call it directly.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  analyzeMappedRamFile,
  analyzeMigrationStream,
  connectTransport,
  convertMappedRamToStream,
  convertStreamToMappedRam,
  createHugePageAllocator,
  DEFAULT_CAPABILITIES,
  DestinationAutoRecovery,
  DestinationMigration,
  formatBytes,
  formatProgressLine,
  formatStreamAnalysis,
  formatWorkload,
  type GuestMemory,
  isMappedRamFile,
  listenForMigration,
  listenTransport,
  migrateToUri,
  MigrationAbortedError,
  type MigrationCapabilities,
  type MigrationInfo,
  type MigrationParameters,
  MigrationProxy,
  type MigrationProxyInfo,
  NotSupportedError,
  openRandomAccessFile,
  parseCapabilityArgument,
  parseParameterArgument,
  parseSize,
  parseTransportUri,
  parseWorkload,
  type ProxyStreamStats,
  ramBlockFileName,
  ramSha256,
  SimulatedGuest,
  SourceAutoRecovery,
  SourceMigration,
  StreamFormatError,
  type Transport,
  type WorkloadSpec,
} from "./mod.ts";

/** Where the command line writes. */
export interface CliIo {
  /**
   * Writes to standard output.
   *
   * @param text The text.
   */
  writeOut(text: string): void;
  /**
   * Writes to standard error.
   *
   * @param text The text.
   */
  writeErr(text: string): void;
  /** Whether standard error is a terminal (progress is shown only then). */
  readonly errIsTerminal: boolean;
}

/** The livemig version. */
export const VERSION = "0.1.0";

const USAGE = `livemig ${VERSION}: QEMU live migration for Deno

Usage: livemig <command> [options]

Commands:
  demo             Live-migrate a simulated 256 MiB guest over loopback TCP
  migrate URI      Migrate a simulated guest to a destination at URI
  incoming URI     Receive a migration at URI into a new guest
  proxy IN OUT     Forward a migration from IN to OUT, re-encoding its RAM
  analyze FILE     Summarise a QEMU migration stream or mapped-ram file
  convert IN OUT   Convert a stream file to a mapped-ram file or back

Options:
  -h, --help       Show help (also: livemig <command> --help)
  --version        Show the version

Run with deno: deno run --allow-read --allow-write cli.ts <command> ...
`;

const ANALYZE_USAGE = `Usage: livemig analyze FILE [options]

Summarise a QEMU migration stream: header, machine, commands, sections,
per RAM block its size and its zero / normal / xbzrle page counts, device
sections walked through the vmdesc trailer. Mapped-ram files (QEMU 9.0+
file layout) are recognised and summarised too.

Options:
  --json               Print the summary as one JSON object (last line)
  --extract-ram DIR    Write each RAM block's final content to DIR/<name>.bin
                       (<name> = block idstr, characters outside
                       [A-Za-z0-9._-] replaced by _)
  --dump state         Print device fields decoded through the vmdesc
  --check-xbzrle       Re-encode every XBZRLE record from the page it patched
                       and count byte-identical ones (exit 1 if any differs)
  -h, --help           Show this help

Exit status: 0 valid stream, 1 stream or I/O error, 2 usage error.
`;

const GUEST_OPTIONS =
  `  --ram SIZE           Guest RAM (default 256MiB; units B, KiB, MiB, GiB, MB...)
  --workload SPEC      idle | random:RATE | hot-set:SIZE@RATE | sweep[:RATE] | fill
                       (RATE in bytes/s of RAM dirtied, e.g. 50MB/s)
  --seed N             Seed of the workload (default 1)
  --prefill            Fill RAM with non-zero data first, like a busy guest
  --hugepages          Back guest RAM with transparent huge pages (Linux,
                       needs --allow-ffi): first touch of RAM is about twice
                       as fast, as QEMU does for its guests
  -c, --capability NAME=on|off
                       A migration capability (repeatable): xbzrle,
                       return-path, events, pause-before-switchover, ...
  -p, --parameter NAME=VALUE
                       A migration parameter (repeatable), with units:
                       max-bandwidth=1GiB/s, downtime-limit=300ms,
                       avail-switchover-bandwidth=100MB/s, xbzrle-cache-size=64MiB
  --json               Print the final query-migrate info (plus ram-sha256
                       per block) as one JSON object, the last line
  -h, --help           Show this help`;

const CONVERT_USAGE = `Usage: livemig convert IN OUT --to mapped-ram|stream

Converts a QEMU migration stream file to a mapped-ram file (QEMU 10.0's
layout: pages at fixed offsets, a written-pages bitmap per block) or a
mapped-ram file back to a stream that QEMU 7.2 can load (only records 7.2
knows). RAM ends up identical; device state is carried across as is.

Options:
  --to FORMAT          mapped-ram or stream (required)
  --json               Print what was converted as JSON (last line)
  -h, --help           Show this help

Exit status: 0 converted, 1 bad input or I/O error, 2 usage error.
`;

const DEMO_USAGE = `Usage: livemig demo [options]

Live-migrates a simulated guest (default: 256 MiB filled with data, workload
hot-set:16MiB@32MB/s) from a source to a destination in this process over
loopback TCP, with QEMU's default parameters (max-bandwidth 128 MiB/s,
downtime-limit 300 ms), and checks that the destination's RAM equals the
source's at switchover (SHA-256 per block).

Options:
${GUEST_OPTIONS}

Exit status: 0 completed with identical RAM, 1 failed or RAM differs,
2 usage error.
`;

const MIGRATE_USAGE = `Usage: livemig migrate URI [options]

Runs a simulated guest and live-migrates it to the destination at URI:
tcp:HOST:PORT, unix:PATH, exec:COMMAND (the stream goes to COMMAND's stdin)
or file:PATH[,offset=N]. Ctrl-C cancels the migration (not in postcopy).

Options:
${GUEST_OPTIONS}
  With -c pause-before-switchover=on the guest stops and the migration waits
  in pre-switchover until the process gets SIGUSR1 (migrate-continue).
  --postcopy-after N   Switch to postcopy after N dirty-bitmap passes (0: at
                       once, before any page is sent; needs -c
                       postcopy-ram=on here and on the destination)
  --recover URI        When postcopy pauses (connection lost), reconnect to
                       the destination's recovery address URI and resume

Exit status: 0 completed, 1 failed or cancelled, 2 usage error.
`;

const INCOMING_USAGE = `Usage: livemig incoming URI [options]

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
  --json               Print the final info (plus ram-sha256) as JSON
  -h, --help           Show this help

Exit status: 0 completed, 1 failed, 2 usage error.
`;

const PROXY_USAGE = `Usage: livemig proxy LISTEN_URI TARGET_URI [options]

Waits for a migration at LISTEN_URI (tcp:HOST:PORT or unix:PATH), then
connects to the destination at TARGET_URI (QEMU started with -incoming, or
livemig incoming) and forwards the stream, re-encoding every RAM record with
livemig's own stages: zero-page detection, XBZRLE on or off whatever the
source used, CONTINUE, and a bandwidth limit. Header, commands and device
state pass through unchanged; the return path is relayed back to the source.

Options:
  -c, --capability xbzrle=on|off
                       Send pages re-sent after the first round as XBZRLE
                       deltas (default off)
  -p, --parameter NAME=VALUE
                       max-bandwidth=RATE (default: no limit), e.g. 10MiB/s;
                       max-postcopy-bandwidth=RATE for the background copy
                       once the source starts postcopy (default: no limit);
                       xbzrle-cache-size=SIZE (default 64MiB)
  --json               Print the final statistics as one JSON object, the
                       last line
  -h, --help           Show this help

Exit status: 0 completed, 1 failed, 2 usage error.
`;

/** An error in the command line itself (exit status 2). */
class UsageError extends Error {
  constructor(message: string, readonly usage: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Runs the command line with `args` and returns the exit code.
 *
 * @example Usage
 * ```ts
 * import { main } from "@livemig/livemig/cli";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * const io = { writeOut: (t: string) => (out += t), writeErr: () => {}, errIsTerminal: false };
 * assert.equal(await main(["--version"], io), 0);
 * assert.match(out, /^livemig 0\.1\.0/);
 * assert.equal(await main(["no-such-command"], io), 2);
 * ```
 *
 * @param args The arguments, without the program name.
 * @param io Where to write; defaults to the process's stdout and stderr.
 * @returns The exit code: 0 success, 1 failure, 2 usage error.
 */
export async function main(
  args: string[],
  io: CliIo = processIo(),
): Promise<number> {
  try {
    const [command, ...rest] = args;
    switch (command) {
      case undefined:
      case "-h":
      case "--help":
      case "help":
        io.writeOut(USAGE);
        return command === undefined ? 2 : 0;
      case "--version":
        io.writeOut(`livemig ${VERSION}\n`);
        return 0;
      case "analyze":
        return await analyze(rest, io);
      case "demo":
        return await demo(rest, io);
      case "migrate":
        return await migrate(rest, io);
      case "incoming":
        return await incoming(rest, io);
      case "proxy":
        return await proxy(rest, io);
      case "convert":
        return await convert(rest, io);
      default:
        throw new UsageError(`Unknown command "${command}"`, USAGE);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      io.writeErr(`livemig: ${error.message}\n\n${error.usage}`);
      return 2;
    }
    io.writeErr(`livemig: ${describe(error)}\n`);
    return 1;
  }
}

function parse<
  T extends Record<
    string,
    { type: "string" | "boolean"; short?: string; multiple?: boolean }
  >,
>(
  args: string[],
  options: T,
  usage: string,
) {
  try {
    return parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError(
      error instanceof Error ? error.message : String(error),
      usage,
    );
  }
}

async function analyze(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    json: { type: "boolean" },
    "extract-ram": { type: "string" },
    dump: { type: "string" },
    "check-xbzrle": { type: "boolean" },
  }, ANALYZE_USAGE);
  if (values.help) {
    io.writeOut(ANALYZE_USAGE);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0
        ? "analyze needs a FILE"
        : `analyze takes one FILE: received ${positionals.length}`,
      ANALYZE_USAGE,
    );
  }
  if (values.dump !== undefined && values.dump !== "state") {
    throw new UsageError(
      `--dump accepts only "state": received "${values.dump}"`,
      ANALYZE_USAGE,
    );
  }
  const path = positionals[0]!;
  const progress = io.errIsTerminal
    ? (bytes: number) =>
      io.writeErr(`\ranalyzing ${path}: ${(bytes / 1e6).toFixed(1)} MB`)
    : undefined;
  const options = {
    keepRam: values["extract-ram"] !== undefined,
    dumpState: values.dump === "state",
    ...(progress ? { onProgress: progress } : {}),
  };
  let result;
  const random = await openRandomAccessFile(path, { readOnly: true });
  try {
    if (await isMappedRamFile(random)) {
      result = await analyzeMappedRamFile(random, options);
    } else {
      const file = await Deno.open(path);
      result = await analyzeMigrationStream(file.readable, {
        ...options,
        checkXbzrle: values["check-xbzrle"] ?? false,
      });
    }
  } finally {
    await random.close();
    if (progress) io.writeErr("\r\x1b[K");
  }
  const { analysis, ram, state } = result;
  const dir = values["extract-ram"];
  const written: string[] = [];
  if (dir !== undefined && ram) {
    await Deno.mkdir(dir, { recursive: true });
    for (const block of ram.blocks) {
      const target = `${dir}/${ramBlockFileName(block.idstr)}`;
      const out = await Deno.open(target, {
        write: true,
        create: true,
        truncate: true,
      });
      try {
        for (const chunk of ram.chunks(block.idstr)) await writeAll(out, chunk);
      } finally {
        out.close();
      }
      written.push(target);
    }
  }
  if (values.json) {
    const json: Record<string, unknown> = { ...analysis };
    if (state) json.state = state;
    if (dir !== undefined) json["extracted"] = written;
    io.writeOut(JSON.stringify(json) + "\n");
  } else {
    io.writeOut(formatStreamAnalysis(analysis));
    for (const target of written) io.writeOut(`wrote ${target}\n`);
    if (state) io.writeOut(JSON.stringify(state, null, 2) + "\n");
  }
  const check = analysis["check-xbzrle"];
  return check && check.identical < check.records ? 1 : 0;
}

async function convert(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    to: { type: "string" },
    json: { type: "boolean" },
  }, CONVERT_USAGE);
  if (values.help) {
    io.writeOut(CONVERT_USAGE);
    return 0;
  }
  if (positionals.length !== 2) {
    throw new UsageError(
      `convert takes IN and OUT: received ${positionals.length} paths`,
      CONVERT_USAGE,
    );
  }
  if (values.to !== "mapped-ram" && values.to !== "stream") {
    throw new UsageError(
      values.to === undefined
        ? "convert needs --to mapped-ram or --to stream"
        : `--to accepts mapped-ram or stream: received "${values.to}"`,
      CONVERT_USAGE,
    );
  }
  const [input, output] = positionals as [string, string];
  if (values.to === "mapped-ram") {
    const source = await Deno.open(input);
    const target = await openRandomAccessFile(output, {
      create: true,
      truncate: true,
    });
    try {
      const result = await convertStreamToMappedRam(source.readable, target);
      io.writeOut(
        values.json
          ? JSON.stringify({ to: "mapped-ram", ...result }) + "\n"
          : `wrote ${output}: mapped-ram, ${result.blocks.length} blocks, ${result.storedPages} pages stored, ${result.zeroPages} zero pages, ${result.size} bytes\n`,
      );
    } finally {
      await target.close();
    }
    return 0;
  }
  const source = await openRandomAccessFile(input, { readOnly: true });
  try {
    if (!await isMappedRamFile(source)) {
      throw new StreamFormatError(
        `Cannot convert "${input}" to a stream: it is not a mapped-ram file`,
        { offset: 0 },
      );
    }
    const target = await Deno.open(output, {
      write: true,
      create: true,
      truncate: true,
    });
    const result = await convertMappedRamToStream(source, target.writable);
    io.writeOut(
      values.json
        ? JSON.stringify({ to: "stream", ...result }) + "\n"
        : `wrote ${output}: stream, ${result.blocks.length} blocks, ${result.pages} pages (${result.zeroPages} zero), ${result.bytes} bytes\n`,
    );
  } finally {
    await source.close();
  }
  return 0;
}

/** Options shared by the commands that run a simulated guest. */
interface GuestCommand {
  ramBytes: number;
  prefill: boolean;
  workload: WorkloadSpec;
  seed: number;
  capabilities: Partial<MigrationCapabilities>;
  parameters: Partial<MigrationParameters>;
  json: boolean;
}

const GUEST_FLAGS = {
  ram: { type: "string" },
  workload: { type: "string" },
  seed: { type: "string" },
  prefill: { type: "boolean" },
  hugepages: { type: "boolean" },
  capability: { type: "string", short: "c", multiple: true },
  parameter: { type: "string", short: "p", multiple: true },
  json: { type: "boolean" },
} as const;

function guestCommand(
  values: {
    ram?: string | undefined;
    workload?: string | undefined;
    seed?: string | undefined;
    prefill?: boolean | undefined;
    capability?: string[] | undefined;
    parameter?: string[] | undefined;
    json?: boolean | undefined;
  },
  usage: string,
  defaults: { workload: string; prefill: boolean },
): GuestCommand {
  return usageErrors(usage, () => {
    const ramBytes = parseSize(values.ram ?? "256MiB", "--ram");
    if (ramBytes < 4096 || ramBytes % 4096 !== 0) {
      throw new RangeError(
        `Cannot use --ram ${values.ram}: it must be a positive multiple of 4096 bytes`,
      );
    }
    const seed = Number(values.seed ?? "1");
    if (!Number.isSafeInteger(seed)) {
      throw new TypeError(
        `Cannot use --seed "${values.seed}": it must be an integer`,
      );
    }
    return {
      ramBytes,
      prefill: values.prefill ?? defaults.prefill,
      workload: parseWorkload(values.workload ?? defaults.workload),
      seed,
      ...flagsToSettings(values.capability, values.parameter),
      json: values.json ?? false,
    };
  });
}

function flagsToSettings(
  capabilityFlags: string[] | undefined,
  parameterFlags: string[] | undefined,
): {
  capabilities: Partial<MigrationCapabilities>;
  parameters: Partial<MigrationParameters>;
} {
  const capabilities: Partial<MigrationCapabilities> = {};
  for (const flag of capabilityFlags ?? []) {
    const [name, on] = parseCapabilityArgument(flag);
    capabilities[name] = on;
  }
  const parameters: Partial<MigrationParameters> = {};
  for (const flag of parameterFlags ?? []) {
    const [name, value] = parseParameterArgument(flag);
    parameters[name] = value;
  }
  return { capabilities, parameters };
}

/** Runs `parse`, turning argument errors into usage errors. */
function usageErrors<T>(usage: string, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (
      error instanceof TypeError || error instanceof RangeError ||
      error instanceof NotSupportedError
    ) {
      throw new UsageError(error.message, usage);
    }
    throw error;
  }
}

function checkUri(
  uri: string | undefined,
  command: string,
  usage: string,
): string {
  if (uri === undefined) throw new UsageError(`${command} needs a URI`, usage);
  usageErrors(usage, () => parseTransportUri(uri));
  return uri;
}

/** Shows progress on stderr when it is a terminal; returns a finisher. */
function showProgress(target: EventTarget, io: CliIo): () => void {
  if (!io.errIsTerminal) return () => {};
  const listener = (event: Event) => {
    io.writeErr(
      `\r\x1b[K${
        formatProgressLine((event as CustomEvent<MigrationInfo>).detail)
      }`,
    );
  };
  target.addEventListener("progress", listener);
  return () => {
    target.removeEventListener("progress", listener);
    io.writeErr("\r\x1b[K");
  };
}

/** Cancels `source` on Ctrl-C while `run` runs. */
async function cancellableBy<T>(
  source: SourceMigration,
  run: Promise<T>,
): Promise<T> {
  const onSignal = () => {
    try {
      source.cancel();
    } catch {
      // postcopy cannot be cancelled; the migration goes on
    }
  };
  let listening = false;
  try {
    Deno.addSignalListener("SIGINT", onSignal);
    listening = true;
  } catch {
    // no signal support (or no permission): Ctrl-C stops the process
  }
  try {
    return await run;
  } finally {
    if (listening) Deno.removeSignalListener("SIGINT", onSignal);
  }
}

function summary(info: MigrationInfo): string {
  const ram = info.ram;
  const seconds = ((info["total-time"] ?? 0) / 1000).toFixed(2);
  if (!ram) return `${info.status} after ${seconds} s`;
  return `${info.status} in ${seconds} s: downtime ${
    info.downtime ?? "-"
  } ms, ${ram["dirty-sync-count"]} passes, ${
    formatBytes(ram.transferred)
  } sent (${ram.duplicate} zero, ${ram.normal} normal${
    info["xbzrle-cache"] ? `, xbzrle hits ${info["xbzrle-cache"].pages}` : ""
  } pages), ${ram.mbps.toFixed(0)} Mbit/s`;
}

async function demo(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, GUEST_FLAGS, DEMO_USAGE);
  if (values.help) {
    io.writeOut(DEMO_USAGE);
    return 0;
  }
  if (positionals.length > 0) {
    throw new UsageError("demo takes no positional arguments", DEMO_USAGE);
  }
  const options = guestCommand(values, DEMO_USAGE, {
    workload: "hot-set:16MiB@32MB/s",
    prefill: true,
  });
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const allocate = values.hugepages ? hugePageAllocator(io, false) : undefined;
  const guest = new SimulatedGuest({
    ramBytes: options.ramBytes,
    workload: options.workload,
    seed: options.seed,
    prefill: options.prefill,
    ...(allocate ? { allocate } : {}),
  });
  const source = new SourceMigration(guest, options);
  let destinationDigests: Record<string, string> = {};
  const destinationAllocate = values.hugepages
    ? hugePageAllocator(io, true)
    : undefined;
  const destination = new DestinationMigration({
    ...(destinationAllocate ? { allocate: destinationAllocate } : {}),
    beforeResume: async (loaded) => {
      destinationDigests = await ramSha256(loaded.memory);
    },
  });
  if (!options.json) {
    io.writeOut(
      `livemig demo: ${formatBytes(options.ramBytes)} guest${
        options.prefill ? " (RAM in use)" : ""
      } running ${
        formatWorkload(options.workload)
      }, migrating to ${listener.address}\n`,
    );
  }
  const done = showProgress(source, io);
  let sent: MigrationInfo;
  let received;
  try {
    const [transport, accepted] = await Promise.all([
      connectTransport(listener.address),
      listener.accept(),
    ]);
    [sent, received] = await cancellableBy(
      source,
      Promise.all([source.migrate(transport), destination.incoming(accepted)]),
    );
  } catch (error) {
    done();
    guest.pause();
    destination.guest?.pause();
    await listener.close();
    if (options.json) {
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
  const sourceDigests = await ramSha256(guest.memory);
  await listener.close();
  const same = sameDigests(sourceDigests, destinationDigests);
  if (options.json) {
    io.writeOut(
      JSON.stringify({
        source: { ...sent, "ram-sha256": sourceDigests },
        destination: { ...received.info, "ram-sha256": destinationDigests },
        "ram-identical": same,
      }) + "\n",
    );
  } else {
    io.writeOut(`source       ${summary(sent)}\n`);
    io.writeOut(`destination  ${received.info.status}, guest resumed\n`);
    for (const [name, digest] of Object.entries(sourceDigests)) {
      io.writeOut(
        `RAM check    ${name} sha256 ${digest.slice(0, 16)}… ${
          destinationDigests[name] === digest
            ? "identical on both ends"
            : "DIFFERS on the destination"
        }\n`,
      );
    }
  }
  return same ? 0 : 1;
}

async function migrate(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    ...GUEST_FLAGS,
    "postcopy-after": { type: "string" },
    recover: { type: "string" },
  }, MIGRATE_USAGE);
  if (values.help) {
    io.writeOut(MIGRATE_USAGE);
    return 0;
  }
  if (positionals.length > 1) {
    throw new UsageError("migrate takes one URI", MIGRATE_USAGE);
  }
  const uri = checkUri(positionals[0], "migrate", MIGRATE_USAGE);
  const options = guestCommand(values, MIGRATE_USAGE, {
    workload: "idle",
    prefill: false,
  });
  const postcopyAfter = values["postcopy-after"];
  const recoverUri = values.recover;
  usageErrors(MIGRATE_USAGE, () => {
    if (postcopyAfter !== undefined) {
      const passes = Number(postcopyAfter);
      if (!Number.isSafeInteger(passes) || passes < 0) {
        throw new RangeError(
          `Cannot use --postcopy-after "${postcopyAfter}": it must be a number of passes (0 or more)`,
        );
      }
      if (!options.capabilities["postcopy-ram"]) {
        throw new TypeError(
          "Cannot use --postcopy-after: it needs -c postcopy-ram=on on both ends",
        );
      }
    }
    if (recoverUri !== undefined) parseTransportUri(recoverUri);
  });
  const allocate = values.hugepages ? hugePageAllocator(io, false) : undefined;
  const guest = new SimulatedGuest({
    ramBytes: options.ramBytes,
    workload: options.workload,
    seed: options.seed,
    prefill: options.prefill,
    ...(allocate ? { allocate } : {}),
  });
  const source = new SourceMigration(guest, {
    ...options,
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
    const info = await cancellableBy(source, migrateToUri(source, uri));
    healing?.stop();
    continuing.stop();
    done();
    if (options.json) {
      const digests = await ramSha256(guest.memory);
      io.writeOut(JSON.stringify({ ...info, "ram-sha256": digests }) + "\n");
    } else {
      io.writeOut(`${summary(info)}\n`);
    }
    return 0;
  } catch (error) {
    healing?.stop();
    continuing.stop();
    done();
    guest.pause();
    if (options.json) {
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
}

async function incoming(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    "ram-dump": { type: "string" },
    "max-ram": { type: "string" },
    recover: { type: "string" },
    capability: { type: "string", short: "c", multiple: true },
    parameter: { type: "string", short: "p", multiple: true },
    hugepages: { type: "boolean" },
    json: { type: "boolean" },
  }, INCOMING_USAGE);
  if (values.help) {
    io.writeOut(INCOMING_USAGE);
    return 0;
  }
  if (positionals.length > 1) {
    throw new UsageError("incoming takes one URI", INCOMING_USAGE);
  }
  const uri = checkUri(positionals[0], "incoming", INCOMING_USAGE);
  // Parameters are checked as QEMU checks them; none of them changes how a
  // destination loads (they shape what a source sends).
  const { capabilities } = usageErrors(
    INCOMING_USAGE,
    () => flagsToSettings(values.capability, values.parameter),
  );
  const maxRamBytes = usageErrors(
    INCOMING_USAGE,
    () => parseSize(values["max-ram"] ?? "16GiB", "--max-ram"),
  );
  const recoverUri = values.recover;
  if (recoverUri !== undefined) {
    usageErrors(INCOMING_USAGE, () => parseTransportUri(recoverUri));
  }
  const dumpDir = values["ram-dump"];
  let digests: Record<string, string> = {};
  const settings = { ...DEFAULT_CAPABILITIES, ...capabilities };
  const allocate = values.hugepages ? hugePageAllocator(io, true) : undefined;
  const destination = new DestinationMigration({
    ...(allocate ? { allocate } : {}),
    maxRamBytes,
    events: settings.events,
    postcopy: settings["postcopy-ram"],
    preempt: settings["postcopy-preempt"],
    beforeResume: async (guest) => {
      if (values.json) digests = await ramSha256(guest.memory);
      if (dumpDir !== undefined) await dumpRam(guest.memory, dumpDir);
    },
  });
  destination.listen();
  const target = usageErrors(INCOMING_USAGE, () => parseTransportUri(uri));
  if (settings["mapped-ram"] && target.scheme !== "file") {
    throw new UsageError(
      `-c mapped-ram=on needs a file: URI, not "${uri}"`,
      INCOMING_USAGE,
    );
  }
  const listener = await listenForMigration(destination, uri, {
    mappedRam: settings["mapped-ram"],
  });
  io.writeErr(`livemig: waiting for a migration at ${listener.address}\n`);
  destination.addEventListener("status", (event) => {
    const status = (event as CustomEvent).detail.status as string;
    if (status.startsWith("postcopy")) io.writeErr(`livemig: ${status}\n`);
  });
  const healing = recoverUri === undefined
    ? undefined
    : new DestinationAutoRecovery(destination, recoverUri, {
      onWaiting: (address) =>
        io.writeErr(
          `livemig: postcopy paused; waiting for the source at ${address}\n`,
        ),
      onError: (error) =>
        io.writeErr(
          `livemig: cannot recover at ${recoverUri}: ${
            error instanceof Error ? error.message : error
          }\n`,
        ),
    });
  try {
    const result = await listener.incoming();
    await healing?.stop();
    result.guest.pause();
    if (values.json) {
      io.writeOut(
        JSON.stringify({ ...result.info, "ram-sha256": digests }) + "\n",
      );
    } else {
      io.writeOut(
        `completed: ${formatBytes(result.info.ram?.total ?? 0)} of RAM from a ${
          result.livemig ? "livemig" : `${result.machine ?? "QEMU"}`
        } source, ${result.info.ram?.duplicate} zero and ${result.info.ram?.normal} normal pages\n`,
      );
      if (dumpDir !== undefined) io.writeOut(`RAM written to ${dumpDir}\n`);
    }
    return 0;
  } catch (error) {
    await healing?.stop();
    destination.guest?.pause();
    if (values.json) io.writeOut(JSON.stringify(destination.query()) + "\n");
    if (error instanceof MigrationAbortedError) {
      io.writeErr(`livemig: ${error.message}\n`);
      return 1;
    }
    throw error;
  } finally {
    await listener.close();
  }
}

async function proxy(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    capability: { type: "string", short: "c", multiple: true },
    parameter: { type: "string", short: "p", multiple: true },
    json: { type: "boolean" },
  }, PROXY_USAGE);
  if (values.help) {
    io.writeOut(PROXY_USAGE);
    return 0;
  }
  if (positionals.length !== 2) {
    throw new UsageError(
      `proxy takes LISTEN_URI and TARGET_URI: received ${positionals.length} arguments`,
      PROXY_USAGE,
    );
  }
  const listenUri = checkUri(positionals[0], "proxy", PROXY_USAGE);
  const targetUri = checkUri(positionals[1], "proxy", PROXY_USAGE);
  const settings = usageErrors(PROXY_USAGE, () => {
    const { capabilities, parameters } = flagsToSettings(
      values.capability,
      values.parameter,
    );
    for (const name of Object.keys(capabilities)) {
      if (name !== "xbzrle") {
        throw new TypeError(
          `Cannot set capability "${name}" on the proxy: only xbzrle changes what it sends`,
        );
      }
    }
    for (const name of Object.keys(parameters)) {
      if (
        name !== "max-bandwidth" && name !== "xbzrle-cache-size" &&
        name !== "max-postcopy-bandwidth"
      ) {
        throw new TypeError(
          `Cannot set parameter "${name}" on the proxy: only max-bandwidth, max-postcopy-bandwidth and xbzrle-cache-size apply`,
        );
      }
    }
    return { capabilities, parameters };
  });
  const migrationProxy = new MigrationProxy(settings);
  migrationProxy.listen();
  const listener = await listenTransport(listenUri);
  io.writeErr(
    `livemig: waiting for a migration at ${listener.address}, forwarding to ${targetUri}\n`,
  );
  const onSignal = () => migrationProxy.abort("interrupted");
  let listening = false;
  try {
    Deno.addSignalListener("SIGINT", onSignal);
    listening = true;
  } catch {
    // no signal support (or no permission): Ctrl-C stops the process
  }
  try {
    const source = await listener.accept();
    let destination: Transport;
    try {
      destination = await connectTransport(targetUri);
    } catch (error) {
      await source.close();
      throw error;
    }
    const info = await migrationProxy.run(source, destination);
    io.writeOut(
      values.json ? JSON.stringify(info) + "\n" : formatProxyInfo(info),
    );
    return 0;
  } catch (error) {
    if (values.json) {
      const info = migrationProxy.query();
      io.writeOut(
        JSON.stringify(
          info.status === "failed"
            ? info
            : { ...info, status: "failed", "error-desc": describe(error) },
        ) + "\n",
      );
    }
    io.writeErr(`livemig: ${describe(error)}\n`);
    return 1;
  } finally {
    if (listening) Deno.removeSignalListener("SIGINT", onSignal);
    await listener.close();
  }
}

function formatProxyInfo(info: MigrationProxyInfo): string {
  const pages = (stats: ProxyStreamStats | undefined, sent: boolean) =>
    `${stats?.duplicate} zero, ${stats?.normal} normal, ${stats?.xbzrle} xbzrle${
      sent
        ? `, ${stats?.unchanged} unchanged (not sent)`
        : stats?.compressed
        ? `, ${stats.compressed} compressed`
        : ""
    } pages`;
  const tail = info["device-tail"];
  const cache = info["xbzrle-cache"];
  const returnPath = info["return-path"];
  const lines = [
    `${info.status} in ${((info["total-time"] ?? 0) / 1000).toFixed(2)} s, ${
      (info.mbps ?? 0).toFixed(1)
    } Mbit/s to the destination${
      info["max-bandwidth"] > 0
        ? ` (limit ${formatBytes(info["max-bandwidth"])}/s)`
        : ""
    }`,
    `received     ${formatBytes(info.received?.transferred ?? 0)}: ${
      pages(info.received, false)
    }`,
    `sent         ${formatBytes(info.sent?.transferred ?? 0)}: ${
      pages(info.sent, true)
    }`,
  ];
  if (tail) {
    lines.push(
      `device state ${formatBytes(tail.bytes)} passed through${
        tail.validated ? ", validated by the vmdesc" : ""
      }`,
    );
  }
  if (cache) {
    lines.push(
      `xbzrle cache ${cache.pages} hits, ${
        cache["cache-miss"]
      } misses, ${cache.overflow} overflows, ${
        formatBytes(cache.bytes)
      } encoded`,
    );
  }
  if (returnPath) {
    lines.push(
      `return path  ${
        formatBytes(returnPath.transferred)
      }, ${returnPath.messages} messages`,
    );
  }
  return lines.join("\n") + "\n";
}

/**
 * With pause-before-switchover, the migration waits in pre-switchover for
 * `migrate-continue`; on the command line that is SIGUSR1.
 */
function continueOnSignal(
  source: SourceMigration,
  io: CliIo,
): { stop(): void } {
  const onSignal = () => {
    if (source.status === "pre-switchover") source.continue("pre-switchover");
  };
  const onStatus = (event: Event) => {
    if ((event as CustomEvent).detail.status !== "pre-switchover") return;
    io.writeErr(
      `livemig: paused before switchover (guest stopped); continue with: kill -USR1 ${Deno.pid}\n`,
    );
  };
  let listening = false;
  try {
    Deno.addSignalListener("SIGUSR1", onSignal);
    listening = true;
  } catch {
    // no signals here: the library's continue() is the only way
  }
  source.addEventListener("status", onStatus);
  return {
    stop() {
      source.removeEventListener("status", onStatus);
      if (listening) Deno.removeSignalListener("SIGUSR1", onSignal);
    },
  };
}

/**
 * The allocator for `--hugepages`: transparent huge pages when FFI is
 * allowed, else `undefined` (plain memory) after saying why on stderr.
 */
function hugePageAllocator(
  io: CliIo,
  populate: boolean,
): ((size: number) => Uint8Array) | undefined {
  const hugePages = createHugePageAllocator({ populate });
  if (hugePages.available) return hugePages.allocate;
  io.writeErr(
    `livemig: --hugepages needs --allow-ffi and Linux's libc (${hugePages.reason}); using plain memory\n`,
  );
  return undefined;
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

function sameDigests(
  a: Record<string, string>,
  b: Record<string, string>,
): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length &&
    keys.every((key) => a[key] === b[key]);
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.byteLength;) {
    done += await file.write(bytes.subarray(done));
  }
}

function describe(error: unknown): string {
  if (error instanceof StreamFormatError) return error.message;
  if (error instanceof Deno.errors.NotFound) {
    return `Cannot open file: ${error.message}`;
  }
  if (error instanceof Error) return error.message;
  return String(error);
}

function processIo(): CliIo {
  const encoder = new TextEncoder();
  const write = (stream: typeof Deno.stdout, text: string) => {
    const bytes = encoder.encode(text);
    for (let done = 0; done < bytes.byteLength;) {
      done += stream.writeSync(bytes.subarray(done));
    }
  };
  return {
    writeOut: (text) => write(Deno.stdout, text),
    writeErr: (text) => write(Deno.stderr, text),
    errIsTerminal: Deno.stderr.isTerminal(),
  };
}

if (import.meta.main) {
  Deno.exitCode = await main(Deno.args);
}
