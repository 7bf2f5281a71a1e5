import {
  listenTransport,
  type MigrationInfo,
  MigrationMonitor,
  type MonitorEnd,
  parseTransportUri,
  parseUuid,
  QmpError,
  ramSha256,
  sampleOfMigrationInfo,
} from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";
import { type Command, defineCommand } from "./define_command.ts";
import { createGuest, parseGuestFlags } from "./guest_flags.ts";
import {
  guestRamAllocator,
  HUGE_PAGES_FLAGS,
  HUGE_PAGES_USAGE,
  parseHugePagesMode,
} from "./guest_ram_allocator.ts";
import { startReport } from "./start_report.ts";
import { asUsageError, UsageError } from "./usage_error.ts";
import {
  loadWasmProgram,
  parseWasmFlags,
  refuseGuestFlags,
  reportWasmChecksum,
  startWasmGuest,
  WASM_FLAGS,
  WASM_FLAGS_USAGE,
  wasmGuestOptions,
  type WasmSettings,
} from "./wasm_flags.ts";
import type { WasmProgram } from "../../mod.ts";
import {
  configureMonitorTls,
  parseTlsFlags,
  TLS_FLAGS,
  TLS_FLAGS_USAGE,
} from "./tls_flags.ts";

const USAGE = `Usage: livemig run [--qmp ADDRESS] [options]

Runs a simulated guest (or, with --wasm, a WebAssembly program), like
qemu-system-x86_64, until it is told to quit
over QMP (or gets SIGTERM or Ctrl-C). Its QMP monitor answers like QEMU
7.2's: migrate it with migrate, receive one with migrate-incoming, steer
and watch it with the migration commands and events. Clients may connect
one after another, as to QEMU's -qmp ...,server=on,wait=off.

Options:
  --qmp ADDRESS        Where the monitor listens: unix:PATH or tcp:HOST:PORT
                       (port 0 picks a free one); without it the guest
                       runs until SIGTERM (or Ctrl-C)
  --incoming URI       Wait for a migration at URI (tcp:, unix:, exec:), as
                       QEMU's -incoming; "defer" waits for migrate-incoming
  -S                   Keep the guest stopped until cont (an incoming guest
                       stays paused once loaded)
  --uuid UUID          The VM's UUID, as QEMU's -uuid: sent with the
                       validate-uuid capability on; an incoming stream with
                       another one is refused
  --ram SIZE           Guest RAM (default 256MiB)
  --workload SPEC      idle | random:RATE | hot-set:SIZE@RATE | sweep[:RATE] |
                       fill (default idle)
  --seed N             Seed of the workload (default 1)
  --prefill            Fill RAM with non-zero data first
${HUGE_PAGES_USAGE}
${TLS_FLAGS_USAGE}
                       (run is the TLS server with --incoming, else the
                       client: the monitor gets object tls0, authz auth0
                       and tls-creds set, as a QMP client would add them)
  --json               On exit, print {"run-state", "migration" (the last
                       query-migrate), "ram-sha256" (per RAM block)} as the
                       last line of stdout
  --report FILE.svg    On exit, write a picture of the migration this guest
                       made or received: remaining bytes, bandwidth, dirty
                       rate, passes, statuses, switchover and downtime
${WASM_FLAGS_USAGE}
                       (without --qmp, run then exits)
  -h, --help           Show this help

It prints "QMP monitor at ADDRESS" (and "waiting for a migration at URI")
on stderr once it listens. Exit status: 0 after quit or a signal, 1 when an
incoming migration failed (a QEMU destination exits then too), 2 usage error.
`;

/**
 * `livemig run`: a simulated guest with a QEMU-compatible QMP monitor,
 * running until `quit`.
 *
 * @example Usage
 * ```ts
 * import { RUN_COMMAND } from "./run_command.ts";
 * import { QmpClient } from "../../mod.ts";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * let err = "";
 * const listening = Promise.withResolvers<string>();
 * const io = {
 *   writeOut: (text: string) => (out += text),
 *   writeErr: (text: string) => {
 *     err += text;
 *     const address = /QMP monitor at (\S+)/.exec(text)?.[1];
 *     if (address) listening.resolve(address);
 *   },
 *   errIsTerminal: false,
 * };
 * const running = RUN_COMMAND.run(["--qmp", "tcp:127.0.0.1:0", "--ram", "1MiB", "--json"], io);
 * const qmp = await QmpClient.connect(await listening.promise);
 * assert.equal((await qmp.execute<{ status: string }>("query-status")).status, "running");
 * await qmp.execute("quit");
 * await qmp.close();
 * assert.equal(await running, 0);
 * assert.equal(JSON.parse(out)["run-state"], "shutdown");
 * ```
 */
export const RUN_COMMAND: Command = defineCommand({
  usage: USAGE,
  flags: {
    qmp: { type: "string" },
    incoming: { type: "string" },
    uuid: { type: "string" },
    paused: { type: "boolean", short: "S" },
    ram: { type: "string" },
    workload: { type: "string" },
    seed: { type: "string" },
    prefill: { type: "boolean" },
    ...HUGE_PAGES_FLAGS,
    json: { type: "boolean" },
    report: { type: "string" },
    ...WASM_FLAGS,
    ...TLS_FLAGS,
  },
  positionals: [],
  wrongCount: () => "run takes no positional arguments",
  async run({ flags }, io) {
    const wasm = parseWasmFlags(flags, USAGE);
    if (wasm !== undefined) refuseGuestFlags(flags, USAGE);
    const qmpAddress = flags.qmp;
    const incoming = flags.incoming;
    const uuid = flags.uuid;
    if (uuid !== undefined) asUsageError(USAGE, () => parseUuid(uuid));
    if (qmpAddress !== undefined) {
      asUsageError(USAGE, () => checkQmpAddress(qmpAddress));
    } else if (incoming === "defer") {
      throw new UsageError(
        "--incoming defer needs --qmp ADDRESS: only migrate-incoming starts the migration",
        USAGE,
      );
    }
    if (incoming !== undefined && incoming !== "defer") {
      const scheme = asUsageError(USAGE, () => parseTransportUri(incoming))
        .scheme;
      if (scheme === "file") {
        throw new UsageError(
          `--incoming "${incoming}": QEMU 7.2 has no file: migration; use tcp:, unix: or exec:`,
          USAGE,
        );
      }
    }
    const tls = await parseTlsFlags(
      flags,
      incoming === undefined ? "client" : "server",
      USAGE,
    );
    const program = wasm && await loadWasmProgram(wasm);
    const monitor = createMonitor(
      flags,
      io,
      program && wasm ? { program, wasm } : undefined,
    );
    if (wasm?.steps !== undefined && incoming === undefined) {
      // The program stops after --steps: its checksum, then (without a
      // monitor to migrate it) the end of the run.
      void reportWasmChecksum(monitor.guest!, wasm, io).then(() => {
        if (qmpAddress === undefined) monitor.shutdown();
      });
    }
    if (tls !== undefined) await configureMonitorTls(monitor, tls);
    const report = flags.report === undefined
      ? undefined
      : startMonitorReport(monitor, flags.report, io);
    let serving = Promise.resolve();
    if (qmpAddress !== undefined) {
      const listener = await listenTransport(qmpAddress);
      io.writeErr(`livemig: QMP monitor at ${listener.address}\n`);
      serving = monitor.serve(listener);
    }
    const stopSignals = onTermination(() => monitor.shutdown());
    try {
      if (incoming !== undefined && incoming !== "defer") {
        const address = await monitor.migrateIncoming(incoming).catch(
          (error: unknown) => {
            if (!(error instanceof QmpError)) throw error;
            throw new Error(
              error.desc.startsWith("Cannot ")
                ? error.desc
                : `Cannot wait for a migration at ${incoming}: ${error.desc}`,
            );
          },
        );
        io.writeErr(`livemig: waiting for a migration at ${address}\n`);
      }
      const end = await monitor.ended;
      await report?.(monitor.queryMigrate() as unknown as MigrationInfo);
      return await finish(monitor, end, { io, json: flags.json ?? false });
    } finally {
      stopSignals();
      await monitor.close();
      await serving;
    }
  },
});

/** `--report`: records query-migrate once a migration starts. */
function startMonitorReport(
  monitor: MigrationMonitor,
  path: string,
  io: CliIo,
): (end: MigrationInfo) => Promise<void> {
  const target = {
    query: () => monitor.queryMigrate() as unknown as MigrationInfo,
  };
  return startReport(target, {
    path,
    title: "livemig run",
    toSample: sampleOfMigrationInfo,
    outcome: (end) => ({
      status: end.status,
      totalTimeMs: end["total-time"] ?? 0,
      ...(end.downtime === undefined ? {} : { downtimeMs: end.downtime }),
      downtimeLimitMs: Number(monitor.parameters["downtime-limit"]),
      ...(end.ram ? { transferredBytes: end.ram.transferred } : {}),
    }),
    io,
  });
}

/** The guest and its monitor, as the flags describe them. */
function createMonitor(
  flags: {
    incoming?: string | undefined;
    uuid?: string | undefined;
    paused?: boolean | undefined;
    ram?: string | undefined;
    workload?: string | undefined;
    seed?: string | undefined;
    prefill?: boolean | undefined;
    hugepages?: boolean | undefined;
    "no-hugepages"?: boolean | undefined;
  },
  io: CliIo,
  wasm?: { program: WasmProgram; wasm: WasmSettings },
): MigrationMonitor {
  const hugePages = parseHugePagesMode(flags, USAGE);
  const paused = flags.paused ?? false;
  const uuid = flags.uuid === undefined ? {} : { uuid: flags.uuid };
  if (wasm !== undefined) {
    if (flags.incoming !== undefined) {
      const options = wasmGuestOptions(wasm.wasm);
      return new MigrationMonitor({
        incoming: true,
        paused,
        destination: {
          createGuest: wasm.program.guestFactory(options),
          ...uuid,
        },
      });
    }
    const guest = startWasmGuest(wasm.program, wasm.wasm);
    return new MigrationMonitor({ guest, paused, source: uuid });
  }
  if (flags.incoming !== undefined) {
    const allocate = guestRamAllocator(io, { hugePages, populate: true });
    return new MigrationMonitor({
      incoming: true,
      paused,
      destination: allocate ? { allocate, ...uuid } : uuid,
    });
  }
  const settings = parseGuestFlags(flags, {
    usage: USAGE,
    workload: "idle",
    prefill: false,
  });
  const guest = createGuest(settings, guestRamAllocator(io, { hugePages }));
  return new MigrationMonitor({ guest, paused, source: uuid });
}

/** Prints the outcome and gives the exit status. */
async function finish(
  monitor: MigrationMonitor,
  end: MonitorEnd,
  options: { io: CliIo; json: boolean },
): Promise<number> {
  const { io, json } = options;
  const failed = end.reason === "incoming-failed";
  if (json) {
    const guest = monitor.guest;
    io.writeOut(
      JSON.stringify({
        "run-state": monitor.runState,
        migration: monitor.queryMigrate(),
        "ram-sha256": guest ? await ramSha256(guest.memory) : {},
      }, (_, value) => typeof value === "bigint" ? Number(value) : value) +
        "\n",
    );
  }
  if (failed) {
    const reason = end.error instanceof Error
      ? end.error.message
      : String(end.error);
    io.writeErr(`livemig: ${reason}\n`);
    return 1;
  }
  return 0;
}

function checkQmpAddress(address: string): void {
  const uri = parseTransportUri(address);
  if (uri.scheme !== "tcp" && uri.scheme !== "unix") {
    throw new TypeError(
      `Cannot use --qmp "${address}": the monitor listens on unix:PATH or tcp:HOST:PORT`,
    );
  }
}

/** Calls `handler` on SIGTERM and SIGINT; returns what stops listening. */
function onTermination(handler: () => void): () => void {
  const signals: Deno.Signal[] = [];
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    try {
      Deno.addSignalListener(signal, handler);
      signals.push(signal);
    } catch {
      // no signals here: quit over QMP ends the guest
    }
  }
  return () => {
    for (const signal of signals) Deno.removeSignalListener(signal, handler);
  };
}
