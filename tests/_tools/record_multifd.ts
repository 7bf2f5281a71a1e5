/**
 * Records real QEMU 7.2 multifd migrations into `fixtures/qemu-multifd/`:
 * every connection of each migration, byte for byte, and the RAM QEMU
 * ended with; and, as `refusals.json`, how 7.2 answers the multifd
 * settings it refuses or accepts.
 *
 * ```sh
 * npx -y deno@2.9.6 task qemu-multifd-fixtures              # every case
 * npx -y deno@2.9.6 task qemu-multifd-fixtures zstd-4       # the named case(s)
 * npx -y deno@2.9.6 task qemu-multifd-fixtures refusals     # only refusals.json
 * ```
 *
 * A case runs a destination QEMU (`-incoming defer`, then multifd set and
 * `migrate-incoming tcp:127.0.0.1:0`), a recording relay and a source QEMU
 * with livemig's dirtying firmware. The relay accepts each connection the
 * source opens, connects onward to the destination in the same order (a
 * 7.2 destination takes its first connection as the main channel), and
 * keeps what the source sent on each. After the source completes, its
 * `pmemsave` (legacy window zeroed) is the ground truth, and the
 * destination's must hash the same. The recordings are then decoded with
 * livemig's codec and rebuilt offline into RAM, which must hash the same
 * too. Files are written only once every check passed:
 *
 * ```
 * fixtures/qemu-multifd/<case>/main.bin         the main channel, source to destination
 * fixtures/qemu-multifd/<case>/channel-<id>.bin each multifd channel, named by the id in its initial packet
 * fixtures/qemu-multifd/<case>/scenario.json    inputs, the order connections arrived in, counts
 * fixtures/qemu-multifd/<case>/qemu.json        the source's final query-migrate reply
 * fixtures/qemu-multifd/<case>/ram.sha256       SHA-256 of pc.ram (pmemsave, 0xA0000-0xFFFFF zeroed)
 * ```
 *
 * Nothing is installed: without `qemu-system-x86_64` 7.2 and `nasm` on PATH
 * the tool says so and exits with code 1.
 *
 * @module
 */

import { concatBytes } from "../../lib/bytes/concat_bytes.ts";
import {
  buildFirmware,
  DEFAULT_MACHINE,
  type FirmwareDefines,
  incomingPort,
  LEGACY_WINDOW,
  type MigrationInfo,
  pmemsave,
  type QemuInstance,
  qemuSkipReason,
  qemuVersion,
  sha256Hex,
  startQemu,
  waitForRunState,
  waitForStatus,
  zeroLegacyWindow,
} from "../_helpers/qemu.ts";
import { QmpError } from "../_helpers/qmp.ts";
import type { QmpValue } from "../../lib/qmp/qmp_json.ts";
import { rebuildMultifdRam } from "../_helpers/multifd_ram.ts";
import type { MultifdCompression } from "../../mod.ts";

const FIXTURES = new URL("../../fixtures/qemu-multifd/", import.meta.url);

const RAM_MIB = 16;
const RAM_BYTES = RAM_MIB * 1024 * 1024;
const STATUS_ADDR = 0x1000;

/** Dirties one byte in each of 16 pages per pass (0x100000-0x10FFFF). */
const FIRMWARE: FirmwareDefines = {
  DIRTY_START: 0x100000,
  DIRTY_END: 0x110000,
  DIRTY_OFFSET: 0x80,
  PAUSE: 0x20000,
  STATUS_ADDR,
  PATTERN_START: 0x2000,
  PATTERN_PAGES: 4,
};

/** Keeps the source iterating until the switchover rule lets it finish. */
const ITERATING_PARAMETERS = {
  "downtime-limit": 1,
  "max-bandwidth": 1024 * 1024,
};
const SWITCHOVER = {
  afterDirtySyncCount: 3,
  parameters: { "downtime-limit": 2_000_000 },
};

/** One migration to record. */
interface MultifdCase {
  name: string;
  channels: number;
  compression: MultifdCompression;
}

const CASES: readonly MultifdCase[] = [2, 4].flatMap((channels) =>
  (["none", "zlib", "zstd"] as const).map((compression) => ({
    name: `${compression}-${channels}`,
    channels,
    compression,
  }))
);

function log(message: string): void {
  // deno-lint-ignore no-console
  console.log(message);
}

function logError(message: string): void {
  // deno-lint-ignore no-console
  console.error(message);
}

/**
 * Runs the tool.
 *
 * @param args Case names (or `refusals`); everything when empty.
 * @returns The process exit code.
 */
export async function main(args: string[]): Promise<number> {
  const known = [...CASES.map((c) => c.name), "refusals"];
  const unknown = args.filter((name) => !known.includes(name));
  if (unknown.length > 0) {
    logError(
      `Cannot record unknown case(s) ${
        unknown.map((name) => `"${name}"`).join(", ")
      }: known cases are ${known.join(", ")}`,
    );
    return 2;
  }
  const skip = qemuSkipReason();
  if (skip !== undefined) {
    logError(
      `Cannot record multifd fixtures: ${skip}. Install QEMU 7.2 and nasm ` +
        `(Debian: apt-get install qemu-system-x86 nasm); this tool installs nothing.`,
    );
    return 1;
  }
  const version = await qemuVersion();
  if (!/ version 7\.2\./.test(version)) {
    logError(`Cannot record multifd fixtures with "${version}": they pin 7.2`);
    return 1;
  }
  log(`Using ${version}`);
  for (const fixture of CASES) {
    if (args.length > 0 && !args.includes(fixture.name)) continue;
    log(`\n== ${fixture.name}`);
    await writeCase(fixture, await recordWithRetries(fixture), version);
  }
  if (args.length === 0 || args.includes("refusals")) {
    log("\n== refusals");
    await recordRefusals(version);
  }
  log("\nDone");
  return 0;
}

/** Everything a recorded case produced, before it is written. */
interface Recording {
  main: Uint8Array;
  /** By channel id. */
  channels: Uint8Array[];
  /** Channel id of each connection after the main one, in accept order. */
  acceptOrder: number[];
  ramSha256: string;
  final: MigrationInfo;
  effectiveParameters: unknown;
  dirtySyncCountAtSwitchover: number | null;
  stats: unknown;
  sourceCommandLine: string[];
  destinationCommandLine: string[];
  firmwareSha256: string;
}

const ATTEMPTS = 5;

/** Records a case, retrying runs that completed before the switchover rule applied. */
async function recordWithRetries(fixture: MultifdCase): Promise<Recording> {
  let fallback: Recording | undefined;
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    if (attempt > 1) log(`attempt ${attempt} of ${ATTEMPTS}`);
    const recording = await recordCase(fixture);
    if (recording.dirtySyncCountAtSwitchover !== null) return recording;
    fallback ??= recording;
    log("completed on its own; trying for a run that reaches the switchover");
  }
  log("using a run that completed on its own");
  return fallback!;
}

/** Records and checks one case. */
async function recordCase(fixture: MultifdCase): Promise<Recording> {
  const work = await Deno.makeTempDir({ prefix: "livemig-multifd-" });
  try {
    const firmware = await buildFirmware(FIRMWARE, work);
    const multifd = {
      "multifd-channels": fixture.channels,
      "multifd-compression": fixture.compression,
    };
    await using destination = await startQemu({
      firmware,
      ramMiB: RAM_MIB,
      incoming: "defer",
    });
    await destination.qmp.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "multifd", state: true }],
    });
    await destination.qmp.execute("migrate-set-parameters", multifd);
    await destination.qmp.execute("migrate-incoming", {
      uri: "tcp:127.0.0.1:0",
    });
    const destinationPort = await incomingPort(destination.qmp);
    using relay = startRelay(destinationPort, fixture.channels + 1);
    await using source = await startQemu({ firmware, ramMiB: RAM_MIB });
    const qmp = source.qmp;
    await qmp.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "multifd", state: true }],
    });
    await qmp.execute("migrate-set-parameters", {
      ...multifd,
      ...ITERATING_PARAMETERS,
    });
    const effectiveParameters = await qmp.execute("query-migrate-parameters");
    await qmp.execute("cont");
    await waitForGuest(source, 2);
    log(
      `migrate uri=tcp:127.0.0.1:${relay.port} (relay to ${destinationPort})`,
    );
    await qmp.execute("migrate", { uri: `tcp:127.0.0.1:${relay.port}` });
    const dirtySyncCountAtSwitchover = await driveSwitchover(source);
    await waitForStatus(qmp, "completed", 120_000);
    await waitForRunState(qmp, "postmigrate", 10_000);
    const final = await qmp.execute<MigrationInfo>("query-migrate");
    const ramSha256 = await ramHash(source, "source");
    await waitForStatus(destination.qmp, "completed", 30_000);
    const destinationHash = await ramHash(destination, "destination");
    if (destinationHash !== ramSha256) {
      throw new Error(
        `Cannot accept "${fixture.name}": destination RAM ${destinationHash} differs from source RAM ${ramSha256}`,
      );
    }
    const connections = await relay.recorded;
    const recording = await checkRecording(fixture, connections, final);
    const placeholders = (args: readonly string[]) =>
      args.map((arg) =>
        arg.replaceAll(work, "$WORK").replace(
          /\/[^\s,']*livemig-qemu-[^/\s,']+/g,
          "$QEMU_TMP",
        )
      );
    if (recording.sha256 !== ramSha256) {
      throw new Error(
        `Cannot accept "${fixture.name}": the recording rebuilds RAM ${recording.sha256}, QEMU held ${ramSha256}`,
      );
    }
    return {
      ...recording,
      ramSha256,
      final,
      effectiveParameters,
      dirtySyncCountAtSwitchover,
      sourceCommandLine: placeholders(source.commandLine),
      destinationCommandLine: placeholders(destination.commandLine),
      firmwareSha256: await sha256Hex(await Deno.readFile(firmware)),
    };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

/** Waits until the firmware wrote its status page and finished `passes` passes. */
async function waitForGuest(vm: QemuInstance, passes: number): Promise<void> {
  const path = `${vm.tempDir}/status.bin`;
  const deadline = performance.now() + 10_000;
  while (true) {
    const page = await pmemsave(vm.qmp, path, 16, { address: STATUS_ADDR });
    const magic = new TextDecoder().decode(page.subarray(0, 4));
    const done = new DataView(page.buffer).getUint32(8, true);
    if (magic === "LMFW" && done >= passes) return;
    if (performance.now() > deadline) {
      throw new Error(
        `Cannot start the guest: status page shows "${magic}" and ${done} passes after 10 s`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * Lets the source iterate until `dirty-sync-count` reaches the switchover
 * rule, then raises `downtime-limit` so it completes. Returns the count
 * seen then, or `null` when the source completed first.
 */
async function driveSwitchover(source: QemuInstance): Promise<number | null> {
  const info = await waitForStatus(
    source.qmp,
    ["active", "completed"],
    60_000,
    {
      pollMs: 5,
      until: (info) =>
        info.status === "completed" ||
        (info.ram?.["dirty-sync-count"] ?? 0) >= SWITCHOVER.afterDirtySyncCount,
    },
  );
  if (info.status === "completed") return null;
  const passes = info.ram!["dirty-sync-count"];
  await source.qmp.execute("migrate-set-parameters", SWITCHOVER.parameters);
  log(
    `dirty-sync-count ${passes}: set ${JSON.stringify(SWITCHOVER.parameters)}`,
  );
  return passes;
}

/** pmemsave of all guest RAM, legacy window zeroed, hashed. */
async function ramHash(vm: QemuInstance, label: string): Promise<string> {
  const dump = zeroLegacyWindow(
    await pmemsave(vm.qmp, `${vm.tempDir}/ram.bin`, RAM_BYTES),
  );
  const hash = await sha256Hex(dump);
  log(`${label} RAM sha256 ${hash}`);
  await Deno.remove(`${vm.tempDir}/ram.bin`);
  return hash;
}

/** One relayed connection: what the source sent, and what came back. */
interface RelayedConnection {
  sent: Uint8Array;
  returned: Uint8Array;
}

/** A TCP relay that records every connection of one migration. */
interface Relay extends Disposable {
  port: number;
  /** The connections in accept order, once all of them ended. */
  recorded: Promise<RelayedConnection[]>;
}

/**
 * Accepts `count` connections on 127.0.0.1 and connects each onward to
 * `port` before accepting the next, so the destination accepts them in the
 * source's order.
 */
function startRelay(port: number, count: number): Relay {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.TcpConn[] = [];
  const recorded = (async () => {
    const pumps: Promise<RelayedConnection>[] = [];
    try {
      for (let i = 0; i < count; i++) {
        const from = await listener.accept();
        conns.push(from);
        const to = await Deno.connect({ hostname: "127.0.0.1", port });
        conns.push(to);
        pumps.push(relayConnection(from, to));
      }
    } finally {
      listener.close();
    }
    return await Promise.all(pumps);
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    recorded,
    [Symbol.dispose]() {
      closeQuietly(listener);
      for (const conn of conns) closeQuietly(conn);
      recorded.catch(() => {});
    },
  };
}

async function relayConnection(
  from: Deno.TcpConn,
  to: Deno.TcpConn,
): Promise<RelayedConnection> {
  const sent: Uint8Array[] = [];
  const returned: Uint8Array[] = [];
  try {
    await Promise.all([
      pump(from, to, (chunk) => sent.push(chunk.slice())),
      pump(to, from, (chunk) => returned.push(chunk.slice())),
    ]);
  } finally {
    closeQuietly(from);
    closeQuietly(to);
  }
  return { sent: concatBytes(sent), returned: concatBytes(returned) };
}

/** Copies `from` to `to` until EOF, then half-closes `to`. */
async function pump(
  from: Deno.TcpConn,
  to: Deno.TcpConn,
  observe: (chunk: Uint8Array) => void,
): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    let count: number | null;
    try {
      count = await from.read(buffer);
    } catch {
      count = null; // reset by a peer that is done
    }
    if (count === null) break;
    const chunk = buffer.subarray(0, count);
    observe(chunk);
    for (let written = 0; written < count;) {
      written += await to.write(chunk.subarray(written));
    }
  }
  await to.closeWrite().catch(() => {});
}

function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // already closed
  }
}

/**
 * Checks the relayed connections: the first is the main stream, the others
 * are multifd channels with ids 0..n-1, nothing came back on any, and the
 * recording decodes and rebuilds into RAM (whose hash is returned).
 */
async function checkRecording(
  fixture: MultifdCase,
  connections: RelayedConnection[],
  final: MigrationInfo,
): Promise<
  Pick<Recording, "main" | "channels" | "acceptOrder" | "stats"> & {
    sha256: string;
  }
> {
  const fail = (what: string): never => {
    throw new Error(`Cannot accept the "${fixture.name}" recording: ${what}`);
  };
  const [main, ...rest] = connections.map((c) => c.sent);
  if (connections.some((c) => c.returned.byteLength > 0)) {
    fail("the destination sent bytes back");
  }
  const magic = (bytes: Uint8Array) =>
    new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
  if (main === undefined || magic(main) !== 0x5145564d) {
    fail("the first connection does not start with QEVM");
  }
  const acceptOrder = rest.map((bytes) => {
    if (magic(bytes) !== 0x11223344) {
      fail("a later connection does not start with the multifd magic");
    }
    return bytes[24]!;
  });
  const channels: Uint8Array[] = [];
  for (const [i, id] of acceptOrder.entries()) channels[id] = rest[i]!;
  if (
    channels.length !== fixture.channels ||
    [...channels].some((c) => c === undefined)
  ) {
    fail(`channel ids are ${acceptOrder.join(", ")}`);
  }
  const { image, stats } = await rebuildMultifdRam({
    main: main!,
    channels,
    compression: fixture.compression,
  });
  if (stats.conflicts > 0) {
    fail(`${stats.conflicts} pages sent twice in a round`);
  }
  const pages = stats.channels.reduce((sum, c) => sum + c.pages, 0);
  const ram = final.ram!;
  if (pages + stats.mainNormalPages !== ram.normal) {
    fail(`${pages} channel pages, QEMU counted ${ram.normal} normal`);
  }
  if (stats.mainZeroPages !== ram.duplicate) {
    fail(`${stats.mainZeroPages} ZERO records, QEMU counted ${ram.duplicate}`);
  }
  const bytes = {
    main: main!.byteLength,
    channels: channels.map((c) => c.byteLength),
  };
  if (bytes.channels.reduce((a, b) => a + b, 0) === 0) fail("no channel data");
  log(
    `recorded main ${bytes.main} bytes, channels ${
      bytes.channels.join(" + ")
    } bytes; ${stats.rounds} rounds, ${pages} channel pages, ${stats.mainZeroPages} zero pages`,
  );
  const pcRam = image.read("pc.ram");
  pcRam.fill(0, LEGACY_WINDOW.start, LEGACY_WINDOW.end);
  return {
    main: main!,
    channels,
    acceptOrder,
    stats,
    sha256: await sha256Hex(pcRam as Uint8Array<ArrayBuffer>),
  };
}

async function writeCase(
  fixture: MultifdCase,
  recording: Recording,
  version: string,
): Promise<void> {
  const dir = new URL(`${fixture.name}/`, FIXTURES);
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.mkdir(dir, { recursive: true });
  const scenario = {
    case: fixture.name,
    description:
      `QEMU 7.2 to QEMU 7.2 over TCP with capability multifd, multifd-channels ${fixture.channels}, multifd-compression ${fixture.compression}; guest dirtying 16 pages; downtime-limit 1 ms and max-bandwidth 1 MiB/s until dirty-sync-count >= ${SWITCHOVER.afterDirtySyncCount}, then downtime-limit 2000000 ms.`,
    qemuVersion: version,
    machine: DEFAULT_MACHINE,
    accel: "tcg",
    ramMiB: RAM_MIB,
    firmware: {
      source: "fixtures/qemu/firmware/livemig_fw.asm",
      defines: FIRMWARE,
      sha256: recording.firmwareSha256,
    },
    capabilities: { multifd: true },
    parameters: {
      "multifd-channels": fixture.channels,
      "multifd-compression": fixture.compression,
      ...ITERATING_PARAMETERS,
    },
    switchover: SWITCHOVER,
    observed: {
      dirtySyncCountAtSwitchover: recording.dirtySyncCountAtSwitchover,
      completedBeforeSwitchover: recording.dirtySyncCountAtSwitchover === null,
      dirtySyncCount: recording.final.ram?.["dirty-sync-count"] ?? null,
      connectionOrder: [
        "main",
        ...recording.acceptOrder.map((id) => `channel-${id}`),
      ],
      mainBytes: recording.main.byteLength,
      channelBytes: recording.channels.map((c) => c.byteLength),
      rebuild: recording.stats,
    },
    migrateUri: "tcp:127.0.0.1:$RELAY_PORT",
    incomingUri: "tcp:127.0.0.1:0 (migrate-incoming after -incoming defer)",
    sourceCommandLine: recording.sourceCommandLine,
    destinationCommandLine: recording.destinationCommandLine,
    effectiveParameters: recording.effectiveParameters,
    ramSha256: {
      of: "pmemsave of guest physical 0..16 MiB on the source in postmigrate",
      zeroed: [LEGACY_WINDOW.start, LEGACY_WINDOW.end],
    },
  };
  await Deno.writeFile(new URL("main.bin", dir), recording.main);
  for (const [id, bytes] of recording.channels.entries()) {
    await Deno.writeFile(new URL(`channel-${id}.bin`, dir), bytes);
  }
  await Deno.writeTextFile(
    new URL("scenario.json", dir),
    JSON.stringify(scenario, null, 2) + "\n",
  );
  await Deno.writeTextFile(
    new URL("qemu.json", dir),
    JSON.stringify(recording.final, null, 2) + "\n",
  );
  await Deno.writeTextFile(
    new URL("ram.sha256", dir),
    recording.ramSha256 + "\n",
  );
  log(`wrote ${dir.pathname}`);
}

/** One QMP exchange of the refusals transcript. */
interface Exchange {
  note: string;
  vm: string;
  execute: string;
  arguments?: Record<string, QmpValue>;
  return?: unknown;
  error?: { class: string; desc: string };
}

/** Runs `command` and records its reply or error. */
async function exchange(
  vm: QemuInstance,
  name: string,
  note: string,
  execute: string,
  args?: Record<string, QmpValue>,
): Promise<Exchange> {
  const entry: Exchange = {
    note,
    vm: name,
    execute,
    ...(args === undefined ? {} : { arguments: args }),
  };
  try {
    entry.return = await vm.qmp.execute(execute, args);
  } catch (error) {
    if (!(error instanceof QmpError)) throw error;
    entry.error = { class: error.class, desc: error.desc };
  }
  log(
    `${name}: ${execute} ${JSON.stringify(args ?? {})} -> ${
      JSON.stringify(entry.error ?? entry.return)
    }`,
  );
  return entry;
}

function caps(
  ...names: string[]
): { capabilities: { capability: string; state: boolean }[] } {
  return {
    capabilities: names.map((capability) => ({ capability, state: true })),
  };
}

/**
 * Records 7.2's answers to multifd settings: what it refuses at once
 * (QMP errors), what it accepts, and what fails only once a migration
 * starts (the final query-migrate and QEMU's stderr).
 */
async function recordRefusals(version: string): Promise<void> {
  const work = await Deno.makeTempDir({ prefix: "livemig-multifd-" });
  const exchanges: Exchange[] = [];
  const outcomes: Record<string, unknown> = {};
  try {
    const firmware = await buildFirmware(
      { IDLE: true, STATUS_ADDR, PATTERN_START: 0x2000, PATTERN_PAGES: 4 },
      work,
    );
    {
      await using vm = await startQemu({ firmware, ramMiB: RAM_MIB });
      const run = (
        note: string,
        execute: string,
        args?: Record<string, QmpValue>,
      ) =>
        exchange(vm, "source", note, execute, args).then((e) =>
          exchanges.push(e)
        );
      const off = (...names: string[]) => ({
        capabilities: names.map((capability) => ({ capability, state: false })),
      });
      await run(
        "multifd with xbzrle",
        "migrate-set-capabilities",
        caps("multifd", "xbzrle"),
      );
      await run("reset", "migrate-set-capabilities", off("multifd", "xbzrle"));
      await run(
        "multifd with postcopy-ram",
        "migrate-set-capabilities",
        caps("multifd", "postcopy-ram"),
      );
      await run(
        "reset",
        "migrate-set-capabilities",
        off("multifd", "postcopy-ram"),
      );
      await run(
        "multifd with compress",
        "migrate-set-capabilities",
        caps("multifd", "compress"),
      );
      await run("multifd-channels 0", "migrate-set-parameters", {
        "multifd-channels": 0,
      });
      await run("multifd-channels 256", "migrate-set-parameters", {
        "multifd-channels": 256,
      });
      await run("multifd-channels 255", "migrate-set-parameters", {
        "multifd-channels": 255,
      });
      await run("multifd-zlib-level 10", "migrate-set-parameters", {
        "multifd-zlib-level": 10,
      });
      await run("multifd-zstd-level 21", "migrate-set-parameters", {
        "multifd-zstd-level": 21,
      });
      await run(
        "multifd-zlib-level 5 and multifd-zstd-level 7",
        "migrate-set-parameters",
        {
          "multifd-zlib-level": 5,
          "multifd-zstd-level": 7,
        },
      );
      const levels = await vm.qmp.execute<Record<string, unknown>>(
        "query-migrate-parameters",
      );
      outcomes["levels"] = {
        note:
          "7.2 neither checks nor applies multifd-zlib-level and multifd-zstd-level in migrate-set-parameters (its test-apply and apply steps skip them): after levels 10/21 and then 5/7 were accepted, query-migrate-parameters still shows the defaults",
        "multifd-zlib-level": levels["multifd-zlib-level"],
        "multifd-zstd-level": levels["multifd-zstd-level"],
      };
      await run("multifd-compression lz4", "migrate-set-parameters", {
        "multifd-compression": "lz4",
      });
      await run("multifd-compression zstd", "migrate-set-parameters", {
        "multifd-compression": "zstd",
      });
      await run("defaults", "migrate-set-parameters", {
        "multifd-channels": 2,
        "multifd-compression": "none",
        "multifd-zlib-level": 1,
        "multifd-zstd-level": 1,
      });
      await run("multifd on", "migrate-set-capabilities", caps("multifd"));
      await run("file: URI (7.2 has no file: migration)", "migrate", {
        uri: `file:${work}/out.bin`,
      });
      await run("exec: URI with multifd on", "migrate", {
        uri: "exec:cat > /dev/null",
      });
      const info = await waitForStatus(vm.qmp, ["failed", "completed"], 30_000);
      outcomes["exec-source"] = {
        note:
          "migrate exec: with multifd on returns success, then the migration fails; the reason goes to stderr, not to query-migrate",
        status: info.status,
        "error-desc": info["error-desc"] ?? null,
        stderr: vm.stderr().trim(),
      };
      log(`exec source: ${JSON.stringify(outcomes["exec-source"])}`);
    }
    {
      await using vm = await startQemu({
        firmware,
        ramMiB: RAM_MIB,
        incoming: "exec:sleep 5",
      });
      exchanges.push(
        await exchange(
          vm,
          "destination -incoming exec:sleep 5",
          "multifd on a destination started with an exec: URI",
          "migrate-set-capabilities",
          caps("multifd"),
        ),
      );
    }
    {
      await using vm = await startQemu({
        firmware,
        ramMiB: RAM_MIB,
        incoming: "defer",
      });
      const name = "destination -incoming defer";
      exchanges.push(
        await exchange(
          vm,
          name,
          "multifd on before migrate-incoming",
          "migrate-set-capabilities",
          caps("multifd"),
        ),
      );
      exchanges.push(
        await exchange(
          vm,
          name,
          "exec: URI with multifd on",
          "migrate-incoming",
          {
            uri: "exec:printf QEVM",
          },
        ),
      );
      const exitCode = await Promise.race([
        vm.exited.then((status) => status.code),
        new Promise<undefined>((resolve) =>
          setTimeout(() => resolve(undefined), 2000)
        ),
      ]);
      const info = exitCode === undefined
        ? await vm.qmp.execute<MigrationInfo>("query-migrate")
        : null;
      outcomes["exec-destination"] = {
        note:
          "migrate-incoming exec: with multifd on: QEMU's exit code (null: still running after 2 s), its query-migrate, its stderr",
        exitCode: exitCode ?? null,
        "query-migrate": info,
        stderr: vm.stderr().trim(),
      };
      log(`exec destination: ${JSON.stringify(outcomes["exec-destination"])}`);
    }
    outcomes["xbzrle-migration"] = await migrateWithXbzrle(work);
  } finally {
    await Deno.remove(work, { recursive: true });
  }
  await Deno.mkdir(FIXTURES, { recursive: true });
  const text = JSON.stringify(
    {
      qemu: version,
      description:
        "QEMU 7.2's answers to multifd settings over QMP (livemig's QmpClient), in order, and what failed only after a migration started.",
      exchanges,
      outcomes,
    },
    null,
    2,
  ) + "\n";
  await Deno.writeTextFile(
    new URL("refusals.json", FIXTURES),
    text.replaceAll(work, "$WORK"),
  );
  log(`wrote ${new URL("refusals.json", FIXTURES).pathname}`);
}

/**
 * Migrates the dirtying guest with multifd and xbzrle on both ends: 7.2
 * accepts the pair, and its final counters show what xbzrle did.
 */
async function migrateWithXbzrle(work: string): Promise<unknown> {
  const firmware = await buildFirmware(FIRMWARE, work);
  const capabilities = caps("multifd", "xbzrle");
  await using destination = await startQemu({
    firmware,
    ramMiB: RAM_MIB,
    incoming: "defer",
  });
  await destination.qmp.execute("migrate-set-capabilities", capabilities);
  await destination.qmp.execute("migrate-incoming", {
    uri: "tcp:127.0.0.1:0",
  });
  const port = await incomingPort(destination.qmp);
  await using source = await startQemu({ firmware, ramMiB: RAM_MIB });
  await source.qmp.execute("migrate-set-capabilities", capabilities);
  await source.qmp.execute("migrate-set-parameters", ITERATING_PARAMETERS);
  await source.qmp.execute("cont");
  await waitForGuest(source, 2);
  await source.qmp.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
  const dirtySyncCountAtSwitchover = await driveSwitchover(source);
  const final = await waitForStatus(source.qmp, "completed", 120_000);
  await waitForStatus(destination.qmp, "completed", 30_000);
  const outcome = {
    note:
      "a migration with capabilities multifd and xbzrle on both ends (dirtying guest, switchover rule as in the recordings): it completes; the source's final ram and xbzrle-cache counters",
    status: final.status,
    dirtySyncCountAtSwitchover,
    ram: final.ram,
    "xbzrle-cache": final["xbzrle-cache"] ?? null,
  };
  log(`xbzrle migration: ${JSON.stringify(outcome)}`);
  return outcome;
}

if (import.meta.main) {
  Deno.exitCode = await main(Deno.args);
}
