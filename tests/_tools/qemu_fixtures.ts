/**
 * Regenerates the golden migration streams in `fixtures/qemu/` from a real
 * QEMU 7.2 running livemig's own firmware.
 *
 * ```sh
 * npx -y deno@2.9.6 task qemu-fixtures            # every case
 * npx -y deno@2.9.6 task qemu-fixtures xbzrle     # one case (or several)
 * ```
 *
 * For each case it builds the firmware, boots QEMU paused, sets migration
 * capabilities and parameters over QMP, lets the guest run, migrates (to
 * `exec:cat > FILE`, or through a recording TCP proxy to a real destination
 * when the case needs a return path), and once the source sits in
 * `postmigrate` saves QEMU's `pmemsave` of guest RAM as the ground truth.
 * Every recorded stream is then loaded into a fresh destination QEMU whose
 * RAM must hash the same. Files are only written once all checks passed:
 *
 * ```
 * fixtures/qemu/<case>/stream.bin     the stream exactly as QEMU wrote it
 * fixtures/qemu/<case>/scenario.json  inputs: RAM, firmware defines, capabilities, parameters, passes waited for, QEMU version
 * fixtures/qemu/<case>/qemu.json      the source's final query-migrate reply
 * fixtures/qemu/<case>/ram.sha256     SHA-256 of pc.ram (pmemsave) with 0xA0000-0xFFFFF zeroed
 * ```
 *
 * Nothing is installed: without `qemu-system-x86_64` and `nasm` on PATH the
 * tool says so and exits with code 1.
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
import type { QmpClient } from "../_helpers/qmp.ts";

const FIXTURES = new URL("../../fixtures/qemu/", import.meta.url);

const RAM_MIB = 16;
const RAM_BYTES = RAM_MIB * 1024 * 1024;
const PAGE_SIZE = 4096;

/** Firmware layout shared by every case (see livemig_fw.asm). */
const STATUS_ADDR = 0x1000;
const PATTERN_START = 0x2000;
const PATTERN_PAGES = 4;
const DIRTY_START = 0x100000;
const DIRTY_END = 0x120000;
const DIRTY_OFFSET = 0x80;

const IDLE_FIRMWARE: FirmwareDefines = {
  IDLE: true,
  STATUS_ADDR,
  PATTERN_START,
  PATTERN_PAGES,
};

const DIRTY_FIRMWARE: FirmwareDefines = {
  DIRTY_START,
  DIRTY_END,
  DIRTY_OFFSET,
  PAUSE: 0x20000,
  STATUS_ADDR,
  PATTERN_START,
  PATTERN_PAGES,
};

/** One golden stream to record. */
interface FixtureCase {
  /** Directory name under fixtures/qemu/. */
  name: string;
  /** What the case pins, for scenario.json. */
  description: string;
  /** Firmware build defines. */
  firmware: FirmwareDefines;
  /** migrate-set-capabilities before `migrate`. */
  capabilities: Record<string, boolean>;
  /** migrate-set-parameters before `migrate`. */
  parameters: Record<string, number>;
  /** Finished firmware passes to wait for before `migrate` (0: just the status page). */
  guestPassesBeforeMigrate: number;
  /**
   * Let the source iterate until `dirty-sync-count` reaches `afterDirtySyncCount`,
   * then set `parameters` so it can complete.
   */
  switchover?: {
    afterDirtySyncCount: number;
    parameters: Record<string, number>;
  };
  /** `exec`: `migrate exec:cat > FILE`; `proxy`: tcp through a recording proxy to a real destination. */
  transport: "exec" | "proxy";
}

const ITERATING_PARAMETERS = {
  "downtime-limit": 1,
  "max-bandwidth": 1024 * 1024,
};

const SWITCHOVER = {
  afterDirtySyncCount: 4,
  parameters: { "downtime-limit": 2_000_000 },
};

const CASES: readonly FixtureCase[] = [
  {
    name: "idle",
    description:
      "Idle guest (firmware halts after writing its status and pattern pages); default parameters; completes in one pass: START, one PART with every page, END, device state.",
    firmware: IDLE_FIRMWARE,
    capabilities: {},
    parameters: {},
    guestPassesBeforeMigrate: 0,
    transport: "exec",
  },
  {
    name: "dirty",
    description:
      "Guest dirtying 32 pages (one byte each, 0x100000-0x11FFFF) plus a heartbeat page; downtime-limit 1 ms and max-bandwidth 1 MiB/s keep the source iterating until dirty-sync-count >= 4, then downtime-limit 2000000 ms lets it complete: several PART sections and re-sent pages.",
    firmware: DIRTY_FIRMWARE,
    capabilities: {},
    parameters: ITERATING_PARAMETERS,
    guestPassesBeforeMigrate: 2,
    switchover: SWITCHOVER,
    transport: "exec",
  },
  {
    name: "xbzrle",
    description:
      "Same guest and parameters as dirty, with capability xbzrle: re-sent pages after the first round appear as XBZRLE records (one changed byte per page).",
    firmware: DIRTY_FIRMWARE,
    capabilities: { xbzrle: true },
    parameters: ITERATING_PARAMETERS,
    guestPassesBeforeMigrate: 2,
    switchover: SWITCHOVER,
    transport: "exec",
  },
  {
    name: "return-path",
    description:
      "Idle guest with capability return-path, recorded by a TCP proxy between the source and a real destination QEMU: OPEN_RETURN_PATH and PING(1) commands after CONFIGURATION; the destination answers on the return path.",
    firmware: IDLE_FIRMWARE,
    capabilities: { "return-path": true },
    parameters: {},
    guestPassesBeforeMigrate: 0,
    transport: "proxy",
  },
];

/** Everything a recorded case produced, before it is written. */
interface Recording {
  stream: Uint8Array;
  ramSha256: string;
  final: MigrationInfo;
  effectiveParameters: unknown;
  sourceCommandLine: string[];
  destinationCommandLine?: string[];
  migrateUri: string;
  dirtySyncCountAtSwitchover?: number;
  guestPassesAtMigrate: number;
  firmwareSha256?: string;
}

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
 * @param args Case names to regenerate; all cases when empty.
 * @returns The process exit code.
 */
export async function main(args: string[]): Promise<number> {
  const unknown = args.filter((name) => !CASES.some((c) => c.name === name));
  if (unknown.length > 0) {
    logError(
      `Cannot regenerate unknown case(s) ${
        unknown.map((name) => `"${name}"`).join(", ")
      }: known cases are ${CASES.map((c) => c.name).join(", ")}`,
    );
    return 2;
  }
  const skip = qemuSkipReason();
  if (skip !== undefined) {
    logError(
      `Cannot regenerate QEMU fixtures: ${skip}. Install QEMU 7.2 and nasm ` +
        `(Debian: apt-get install qemu-system-x86 nasm); this tool installs nothing.`,
    );
    return 1;
  }
  const version = await qemuVersion();
  if (!/ version 7\.2\./.test(version)) {
    logError(
      `Cannot regenerate QEMU fixtures with "${version}": they pin QEMU 7.2`,
    );
    return 1;
  }
  log(`Using ${version}`);
  const selected = args.length === 0
    ? CASES
    : CASES.filter((c) => args.includes(c.name));
  for (const fixture of selected) {
    log(`\n== ${fixture.name}`);
    await writeCase(fixture, await recordWithRetries(fixture), version);
  }
  log("\nDone");
  return 0;
}

/**
 * How often a case is tried when the source completes before the switchover
 * rule applied (see {@linkcode driveSwitchover}).
 */
const ATTEMPTS = 5;

/**
 * Records a case, preferring a run in which the switchover rule decided the
 * end. A run that completed on its own but still meets the case's
 * requirements is the fallback; one that does not is discarded.
 */
async function recordWithRetries(fixture: FixtureCase): Promise<Recording> {
  let fallback: Recording | undefined;
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    if (attempt > 1) log(`attempt ${attempt} of ${ATTEMPTS}`);
    try {
      const recording = await recordCase(fixture);
      if (
        fixture.switchover === undefined ||
        recording.dirtySyncCountAtSwitchover !== undefined
      ) {
        return recording;
      }
      fallback ??= recording;
      log("kept as a fallback; trying for a run that reaches the switchover");
    } catch (error) {
      if (!(error instanceof EarlyCompletionError)) throw error;
      log(error.message);
    }
  }
  if (fallback === undefined) {
    throw new Error(
      `Cannot record "${fixture.name}": no run met its requirements in ${ATTEMPTS} attempts`,
    );
  }
  log("using the fallback run, which completed on its own");
  return fallback;
}

/** The source completed before the case's switchover rule applied; worth a retry. */
class EarlyCompletionError extends Error {
  /**
   * Constructs a new instance.
   *
   * @param message What happened, in sentence case, no period.
   */
  constructor(message: string) {
    super(message);
    this.name = "EarlyCompletionError";
  }
}

/** Records and checks one case; the result no longer refers to temporary files. */
async function recordCase(fixture: FixtureCase): Promise<Recording> {
  const work = await Deno.makeTempDir({ prefix: "livemig-fixture-" });
  try {
    const firmware = await buildFirmware(fixture.firmware, work);
    log(`firmware built with ${JSON.stringify(fixture.firmware)}`);
    const recording = fixture.transport === "exec"
      ? await recordToFile(fixture, firmware, work)
      : await recordThroughProxy(fixture, firmware);
    checkStream(recording.stream, fixture);
    checkFinalInfo(recording.final, fixture);
    if (fixture.transport === "exec") {
      await checkLoads(recording, firmware, work);
    }
    const placeholders = (args: readonly string[]) =>
      args.map((arg) =>
        arg.replaceAll(work, "$WORK").replace(
          /\/[^\s,']*livemig-qemu-[^/\s,']+/g,
          "$QEMU_TMP",
        )
      );
    return {
      ...recording,
      migrateUri: placeholders([recording.migrateUri])[0]!,
      sourceCommandLine: placeholders(recording.sourceCommandLine),
      ...(recording.destinationCommandLine === undefined ? {} : {
        destinationCommandLine: placeholders(
          recording.destinationCommandLine,
        ),
      }),
      firmwareSha256: await sha256Hex(await Deno.readFile(firmware)),
    };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

/** Source prepared up to the point where `migrate` is sent. */
async function prepareSource(
  fixture: FixtureCase,
  source: QemuInstance,
): Promise<{ effectiveParameters: unknown; guestPasses: number }> {
  const qmp = source.qmp;
  const capabilities = Object.entries(fixture.capabilities).map((
    [capability, state],
  ) => ({ capability, state }));
  if (capabilities.length > 0) {
    await qmp.execute("migrate-set-capabilities", { capabilities });
  }
  if (Object.keys(fixture.parameters).length > 0) {
    await qmp.execute("migrate-set-parameters", fixture.parameters);
  }
  const effectiveParameters = await qmp.execute("query-migrate-parameters");
  await qmp.execute("cont");
  const guestPasses = await waitForGuest(
    source,
    fixture.guestPassesBeforeMigrate,
  );
  log(`guest running, ${guestPasses} firmware passes done`);
  return { effectiveParameters, guestPasses };
}

/** Waits until the firmware wrote its status page and finished `passes` passes. */
async function waitForGuest(
  vm: QemuInstance,
  passes: number,
): Promise<number> {
  const path = `${vm.tempDir}/status.bin`;
  const deadline = performance.now() + 10_000;
  while (true) {
    const page = await pmemsave(vm.qmp, path, 16, { address: STATUS_ADDR });
    const view = new DataView(page.buffer);
    const magic = new TextDecoder().decode(page.subarray(0, 4));
    const done = view.getUint32(8, true);
    if (magic === "LMFW" && done >= passes) return done;
    if (performance.now() > deadline) {
      throw new Error(
        `Cannot start the guest: status page shows magic "${magic}" and ${done} passes after 10 s`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * Lets the source iterate until enough passes happened, then applies the
 * switchover parameters. Returns the pass count seen at that moment, or
 * `undefined` when the source completed first: QEMU completes whenever a
 * bitmap sync finds no dirty page, whatever the threshold, and with XBZRLE
 * the syncs come tens of microseconds apart, so a vCPU thread the host
 * did not schedule for that long ends the precopy. Such a run is kept when
 * it still meets the case's pass and XBZRLE requirements
 * ({@linkcode checkFinalInfo}).
 */
async function driveSwitchover(
  qmp: QmpClient,
  fixture: FixtureCase,
): Promise<number | undefined> {
  const switchover = fixture.switchover;
  if (switchover === undefined) return undefined;
  const info = await waitForStatus(qmp, ["active", "completed"], 60_000, {
    pollMs: 5,
    until: (info) =>
      info.status === "completed" ||
      (info.ram?.["dirty-sync-count"] ?? 0) >= switchover.afterDirtySyncCount,
  });
  if (info.status === "completed") {
    log(
      `completed on its own after ${
        info.ram?.["dirty-sync-count"]
      } passes, before the switchover parameters were set`,
    );
    return undefined;
  }
  const passes = info.ram!["dirty-sync-count"];
  await qmp.execute("migrate-set-parameters", switchover.parameters);
  log(
    `dirty-sync-count ${passes}: set ${JSON.stringify(switchover.parameters)}`,
  );
  return passes;
}

/** Finishes a source migration: completed, postmigrate, final info and RAM hash. */
async function finishSource(
  source: QemuInstance,
): Promise<{ final: MigrationInfo; ramSha256: string }> {
  await waitForStatus(source.qmp, "completed", 120_000);
  await waitForRunState(source.qmp, "postmigrate", 10_000);
  const final = await source.qmp.execute<MigrationInfo>("query-migrate");
  const ram = final.ram!;
  log(
    `completed: ${ram.transferred} bytes, ${ram.normal} normal + ${ram.duplicate} zero pages, dirty-sync-count ${
      ram["dirty-sync-count"]
    }`,
  );
  const ramSha256 = await ramHash(source, "source");
  return { final, ramSha256 };
}

/** pmemsave of all guest RAM, legacy window zeroed, hashed; also checks the firmware's pages. */
async function ramHash(vm: QemuInstance, label: string): Promise<string> {
  const dump = zeroLegacyWindow(
    await pmemsave(vm.qmp, `${vm.tempDir}/ram.bin`, RAM_BYTES),
  );
  checkGuestRam(dump, label);
  const hash = await sha256Hex(dump);
  log(`${label} RAM sha256 ${hash}`);
  await Deno.remove(`${vm.tempDir}/ram.bin`);
  return hash;
}

async function recordToFile(
  fixture: FixtureCase,
  firmware: string,
  work: string,
): Promise<Recording> {
  const streamPath = `${work}/stream.bin`;
  const migrateUri = `exec:cat > '${streamPath}'`;
  const source = await startQemu({ firmware, ramMiB: RAM_MIB });
  try {
    const { effectiveParameters, guestPasses } = await prepareSource(
      fixture,
      source,
    );
    log(`migrate uri=${migrateUri.replace(work, "$WORK")}`);
    await source.qmp.execute("migrate", { uri: migrateUri });
    const dirtySyncCountAtSwitchover = await driveSwitchover(
      source.qmp,
      fixture,
    );
    const { final, ramSha256 } = await finishSource(source);
    const stream = await readCompleteStream(streamPath);
    return {
      stream,
      ramSha256,
      final,
      effectiveParameters,
      sourceCommandLine: [...source.commandLine],
      migrateUri,
      ...(dirtySyncCountAtSwitchover === undefined
        ? {}
        : { dirtySyncCountAtSwitchover }),
      guestPassesAtMigrate: guestPasses,
    };
  } finally {
    await source.stop();
  }
}

/**
 * Reads the stream `cat` wrote. QEMU closes the pipe when the migration
 * completes, but `cat` may still be draining it: wait until the file ends
 * with a complete VMDESCRIPTION.
 */
async function readCompleteStream(path: string): Promise<Uint8Array> {
  const deadline = performance.now() + 10_000;
  while (true) {
    const bytes = await Deno.readFile(path);
    if (findVmdesc(bytes) !== undefined) return bytes;
    if (performance.now() > deadline) {
      throw new Error(
        `Cannot read the stream: "${path}" (${bytes.byteLength} bytes) does not end with EOF and VMDESCRIPTION`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function recordThroughProxy(
  fixture: FixtureCase,
  firmware: string,
): Promise<Recording> {
  const destination = await startQemu({
    firmware,
    ramMiB: RAM_MIB,
    incoming: "tcp:127.0.0.1:0",
  });
  try {
    const source = await startQemu({ firmware, ramMiB: RAM_MIB });
    try {
      const destinationPort = await incomingPort(destination.qmp);
      using proxy = startRecordingProxy(destinationPort);
      const { effectiveParameters, guestPasses } = await prepareSource(
        fixture,
        source,
      );
      const migrateUri = `tcp:127.0.0.1:${proxy.port}`;
      log(
        `migrate uri=${migrateUri} (proxy to destination port ${destinationPort})`,
      );
      await source.qmp.execute("migrate", { uri: migrateUri });
      const dirtySyncCountAtSwitchover = await driveSwitchover(
        source.qmp,
        fixture,
      );
      const { final, ramSha256 } = await finishSource(source);
      await waitForStatus(destination.qmp, "completed", 30_000);
      const stream = await proxy.recorded;
      const returned = proxy.returned();
      log(
        `destination completed; proxy recorded ${stream.byteLength} bytes; return path carried ${
          Array.from(returned, (b) => b.toString(16).padStart(2, "0")).join("")
        }`,
      );
      if (!sameBytes(returned, RETURN_PATH_REPLY)) {
        throw new Error(
          `Cannot accept "${fixture.name}": the return path did not carry exactly PONG(1) and SHUT(0)`,
        );
      }
      const destinationHash = await ramHash(destination, "destination");
      if (destinationHash !== ramSha256) {
        throw new Error(
          `Cannot accept "${fixture.name}": destination RAM ${destinationHash} differs from source RAM ${ramSha256}`,
        );
      }
      return {
        stream,
        ramSha256,
        final,
        effectiveParameters,
        sourceCommandLine: [...source.commandLine],
        destinationCommandLine: [...destination.commandLine],
        migrateUri: "tcp:127.0.0.1:$PROXY_PORT",
        ...(dirtySyncCountAtSwitchover === undefined
          ? {}
          : { dirtySyncCountAtSwitchover }),
        guestPassesAtMigrate: guestPasses,
      };
    } finally {
      await source.stop();
    }
  } finally {
    await destination.stop();
  }
}

/** Return-path messages of a precopy with return-path: PONG(1), SHUT(0). */
const RETURN_PATH_REPLY = new Uint8Array([
  ...[0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01], // PONG, len 4, value 1
  ...[0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00], // SHUT, len 4, status 0
]);

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((byte, i) => byte === b[i]);
}

/** A one-connection TCP proxy that records what the source sends. */
interface RecordingProxy extends Disposable {
  /** Port the proxy listens on (127.0.0.1). */
  port: number;
  /** The source-to-destination bytes, once both directions ended. */
  recorded: Promise<Uint8Array>;
  /** Destination-to-source (return path) bytes forwarded so far. */
  returned(): Uint8Array;
}

function startRecordingProxy(destinationPort: number): RecordingProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const chunks: Uint8Array[] = [];
  const returned: Uint8Array[] = [];
  let source: Deno.TcpConn | undefined;
  let destination: Deno.TcpConn | undefined;
  const recorded = (async () => {
    try {
      source = await listener.accept();
    } finally {
      listener.close();
    }
    destination = await Deno.connect({
      hostname: "127.0.0.1",
      port: destinationPort,
    });
    const from = source;
    const to = destination;
    try {
      await Promise.all([
        pump(from, to, (chunk) => chunks.push(chunk.slice())),
        pump(to, from, (chunk) => returned.push(chunk.slice())),
      ]);
    } finally {
      closeQuietly(from);
      closeQuietly(to);
    }
    return concatBytes(chunks);
  })();
  return {
    port,
    recorded,
    returned: () => concatBytes(returned),
    [Symbol.dispose]() {
      // Ends a proxy that is still waiting or forwarding (error paths).
      closeQuietly(listener);
      if (source !== undefined) closeQuietly(source);
      if (destination !== undefined) closeQuietly(destination);
      recorded.catch(() => {});
    },
  };
}

/** Copies `from` to `to` until EOF, then half-closes `to`. */
async function pump(
  from: Deno.TcpConn,
  to: Deno.TcpConn,
  observe: (chunk: Uint8Array) => void,
): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    const count = await from.read(buffer);
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

/** Loads the recorded stream into a fresh destination and compares its RAM. */
async function checkLoads(
  recording: Recording,
  firmware: string,
  work: string,
): Promise<void> {
  const path = `${work}/loaded.bin`;
  await Deno.writeFile(path, recording.stream);
  const destination = await startQemu({
    firmware,
    ramMiB: RAM_MIB,
    incoming: `exec:cat '${path}'`,
  });
  try {
    await waitForStatus(destination.qmp, "completed", 60_000);
    const hash = await ramHash(destination, "reloaded");
    if (hash !== recording.ramSha256) {
      throw new Error(
        `Cannot accept the stream: a destination that loaded it holds RAM ${hash}, the source held ${recording.ramSha256}`,
      );
    }
  } finally {
    await destination.stop();
  }
}

/** Offset of the VMDESCRIPTION type byte when the stream ends with EOF + VMDESCRIPTION. */
function findVmdesc(bytes: Uint8Array): number | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = bytes.byteLength - 6; at > 8; at--) {
    if (bytes[at] !== 0x06 || bytes[at - 1] !== 0x00) continue;
    if (at + 5 + view.getUint32(at + 1) !== bytes.byteLength) continue;
    try {
      JSON.parse(new TextDecoder().decode(bytes.subarray(at + 5)));
      return at;
    } catch {
      // a 0x00 0x06 pair inside device data; keep looking
    }
  }
  return undefined;
}

/** Structural checks that need no full parser. */
function checkStream(bytes: Uint8Array, fixture: FixtureCase): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fail = (what: string) => {
    throw new Error(`Cannot accept the "${fixture.name}" stream: ${what}`);
  };
  if (view.getUint32(0) !== 0x5145564d || view.getUint32(4) !== 3) {
    fail("the header is not QEVM version 3");
  }
  if (bytes[8] !== 0x07) fail("CONFIGURATION does not follow the header");
  const nameLength = view.getUint32(9);
  const machine = new TextDecoder().decode(
    bytes.subarray(13, 13 + nameLength),
  );
  if (machine !== "pc-i440fx-7.2") fail(`the machine is "${machine}"`);
  const next = 13 + nameLength;
  const commands = [0x08, 0x00, 0x01, 0x00, 0x00, 0x08, 0x00, 0x02, 0x00, 0x04];
  const hasReturnPath = commands.every((byte, i) => bytes[next + i] === byte);
  if (hasReturnPath !== (fixture.capabilities["return-path"] === true)) {
    fail(`OPEN_RETURN_PATH + PING present: ${hasReturnPath}`);
  }
  const vmdesc = findVmdesc(bytes);
  if (vmdesc === undefined) fail("it does not end with EOF and VMDESCRIPTION");
  log(
    `stream: ${bytes.byteLength} bytes, machine ${machine}, VMDESCRIPTION ${
      bytes.byteLength - vmdesc! - 5
    } bytes`,
  );
}

/**
 * Checks the source's final `query-migrate`. A run that completed too early
 * (fewer passes than the switchover rule waits for, or no XBZRLE record)
 * throws {@linkcode EarlyCompletionError} so the case is tried again.
 */
function checkFinalInfo(info: MigrationInfo, fixture: FixtureCase): void {
  const prefix = `Cannot accept the "${fixture.name}" migration`;
  if (info.status !== "completed") {
    throw new Error(`${prefix}: status is "${info.status}"`);
  }
  const passes = info.ram?.["dirty-sync-count"] ?? 0;
  const wanted = fixture.switchover?.afterDirtySyncCount ?? 0;
  if (passes < wanted) {
    throw new EarlyCompletionError(
      `${prefix}: it completed after ${passes} passes, fewer than ${wanted}`,
    );
  }
  if (fixture.capabilities.xbzrle) {
    const cache = info["xbzrle-cache"];
    if (!cache || !(cache.pages! > 0) || !(cache.bytes! > 0)) {
      throw new EarlyCompletionError(
        `${prefix}: no XBZRLE record was sent: ${JSON.stringify(cache)}`,
      );
    }
  }
}

/** Checks what the firmware must have left in RAM. */
function checkGuestRam(dump: Uint8Array, label: string): void {
  const view = new DataView(dump.buffer, dump.byteOffset, dump.byteLength);
  const fail = (what: string) => {
    throw new Error(`Cannot accept ${label} RAM: ${what}`);
  };
  if (view.getUint32(STATUS_ADDR, true) !== 0x57464d4c) {
    fail("the status page has no LMFW magic");
  }
  for (
    let address = PATTERN_START;
    address < PATTERN_START + PATTERN_PAGES * PAGE_SIZE;
    address += 4
  ) {
    if (view.getUint32(address, true) !== address) {
      fail(`pattern dword at 0x${address.toString(16)} is wrong`);
    }
  }
  const dirtyStart = view.getUint32(STATUS_ADDR + 16, true);
  const dirtyEnd = view.getUint32(STATUS_ADDR + 20, true);
  const dirtyOffset = view.getUint32(STATUS_ADDR + 24, true);
  for (let page = dirtyStart; page < dirtyEnd; page += PAGE_SIZE) {
    if (dump[page + dirtyOffset] === 0) {
      fail(`page 0x${page.toString(16)} of the dirty range was never written`);
    }
  }
  if (
    dump.subarray(LEGACY_WINDOW.start, LEGACY_WINDOW.end).some((b) => b !== 0)
  ) {
    fail("the legacy window is not zeroed");
  }
}

async function writeCase(
  fixture: FixtureCase,
  recording: Recording,
  version: string,
): Promise<void> {
  const dir = new URL(`${fixture.name}/`, FIXTURES);
  await Deno.mkdir(dir, { recursive: true });
  const scenario = {
    case: fixture.name,
    description: fixture.description,
    qemuVersion: version,
    machine: DEFAULT_MACHINE,
    accel: "tcg",
    ramMiB: RAM_MIB,
    ramBytes: RAM_BYTES,
    firmware: {
      source: "fixtures/qemu/firmware/livemig_fw.asm",
      defines: fixture.firmware,
      sha256: recording.firmwareSha256,
    },
    capabilities: fixture.capabilities,
    parameters: fixture.parameters,
    switchover: fixture.switchover ?? null,
    guestPassesBeforeMigrate: fixture.guestPassesBeforeMigrate,
    observed: {
      guestPassesAtMigrate: recording.guestPassesAtMigrate,
      completedBeforeSwitchover: fixture.switchover !== undefined &&
        recording.dirtySyncCountAtSwitchover === undefined,
      dirtySyncCountAtSwitchover: recording.dirtySyncCountAtSwitchover ??
        null,
      dirtySyncCount: recording.final.ram?.["dirty-sync-count"] ?? null,
      streamBytes: recording.stream.byteLength,
    },
    transport: fixture.transport,
    migrateUri: recording.migrateUri,
    sourceCommandLine: recording.sourceCommandLine,
    destinationCommandLine: recording.destinationCommandLine ?? null,
    effectiveParameters: recording.effectiveParameters,
    ramSha256: {
      of: "pmemsave of guest physical 0..ramBytes on the source in postmigrate",
      zeroed: [LEGACY_WINDOW.start, LEGACY_WINDOW.end],
    },
  };
  await Deno.writeFile(new URL("stream.bin", dir), recording.stream);
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

if (import.meta.main) {
  Deno.exitCode = await main(Deno.args);
}
