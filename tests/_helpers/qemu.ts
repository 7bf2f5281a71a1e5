/**
 * Helpers that run a real QEMU (`qemu-system-x86_64`, TCG) with livemig's own
 * firmware, for interop tests and the fixture generator.
 *
 * Every QEMU started here gets its own temporary directory (QMP socket,
 * scratch files) and is stopped by its process id; {@linkcode startQemu}
 * cleans up after itself when it fails half-way, and
 * {@linkcode QemuInstance.stop} removes the directory.
 *
 * The machine is always `pc-i440fx-7.2` without defaults or user config,
 * with TCG, no display, one vCPU, and QMP on a unix socket in the temp dir
 * (or on QEMU's stdin/stdout when Deno may not connect to unix sockets, see
 * {@linkcode QmpChannel}):
 *
 * ```
 * qemu-system-x86_64 -machine pc-i440fx-7.2,acpi=off -nodefaults -no-user-config
 *   -accel tcg -display none -m 16 -bios FIRMWARE
 *   -chardev socket,id=qmp,path=TMP/qmp.sock,server=on,wait=off   (or: -chardev stdio,id=qmp,signal=off)
 *   -mon chardev=qmp,mode=control [-S] [-incoming URI] [extra args]
 * ```
 *
 * @module
 */

import { TransportError } from "../../lib/transport/transport_error.ts";
import { QmpClient, QmpConnectionError } from "./qmp.ts";
import { delay } from "./delay.ts";

/** Name of the QEMU binary the helpers run. */
export const QEMU_BINARY = "qemu-system-x86_64";

/** Name of the assembler that builds the firmware. */
export const NASM_BINARY = "nasm";

/**
 * The machine type (with options) every helper starts. `acpi=off` drops the
 * ACPI device and the three ACPI table RAM blocks, which roughly halves an
 * idle migration stream.
 */
export const DEFAULT_MACHINE = "pc-i440fx-7.2,acpi=off";

/** The firmware source, `fixtures/qemu/firmware/livemig_fw.asm`. */
export const FIRMWARE_SOURCE: URL = new URL(
  "../../fixtures/qemu/firmware/livemig_fw.asm",
  import.meta.url,
);

/** The legacy VGA/option-ROM/BIOS window that `pmemsave` does not read from RAM. */
export const LEGACY_WINDOW = { start: 0xa0000, end: 0x100000 } as const;

/**
 * Why QEMU-based tests cannot run here, or `undefined` when they can: the
 * process needs `--allow-run`, and `qemu-system-x86_64` and `nasm` must be
 * installed and runnable.
 *
 * @returns A sentence explaining what is missing, or `undefined`.
 */
export function qemuSkipReason(): string | undefined {
  for (const command of [QEMU_BINARY, NASM_BINARY]) {
    const permission = Deno.permissions.querySync({ name: "run", command });
    if (permission.state !== "granted") {
      return `needs --allow-run to start ${command}`;
    }
  }
  for (
    const [command, flag] of [[QEMU_BINARY, "--version"], [
      NASM_BINARY,
      "-v",
    ]] as const
  ) {
    try {
      const { success } = new Deno.Command(command, {
        args: [flag],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).outputSync();
      if (!success) return `${command} ${flag} failed`;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        return `${command} is not installed (not found on PATH)`;
      }
      throw error;
    }
  }
  return undefined;
}

/**
 * Whether `qemu-system-x86_64` and `nasm` are on PATH and may be run.
 *
 * @returns `true` when QEMU-based tests can run.
 */
export function hasQemu(): boolean {
  return qemuSkipReason() === undefined;
}

/**
 * The first line of `qemu-system-x86_64 --version`, e.g.
 * `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)`.
 *
 * @returns The version line.
 */
export async function qemuVersion(): Promise<string> {
  const output = await run(QEMU_BINARY, ["--version"]);
  return output.split("\n")[0]!.trim();
}

/**
 * Build-time defines of the firmware (see the header of `livemig_fw.asm`):
 * `true` passes `-DNAME`, a number or string passes `-DNAME=VALUE`.
 */
export type FirmwareDefines = Record<string, number | string | true>;

/**
 * Assembles `livemig_fw.asm` with `defines` into `outDir/livemig_fw.bin`.
 *
 * @param defines Build-time defines, e.g. `{ DIRTY_START: 0x100000, PAUSE: 4096 }` or `{ IDLE: true }`.
 * @param outDir An existing directory for the image.
 * @returns The path of the 64 KiB image.
 * @throws {Error} If nasm fails (its messages are in the error).
 */
export async function buildFirmware(
  defines: FirmwareDefines,
  outDir: string,
): Promise<string> {
  const output = `${outDir}/livemig_fw.bin`;
  const args = ["-f", "bin"];
  for (const [name, value] of Object.entries(defines)) {
    if (!/^[A-Z_][A-Z0-9_]*$/.test(name)) {
      throw new TypeError(
        `Cannot build firmware as define names must be upper case: received "${name}"`,
      );
    }
    args.push(
      value === true ? `-D${name}` : `-D${name}=${formatDefine(value)}`,
    );
  }
  args.push("-o", output, FIRMWARE_SOURCE.pathname);
  await run(NASM_BINARY, args);
  const { size } = await Deno.stat(output);
  if (size !== 0x10000) {
    throw new Error(
      `Cannot build firmware: the image is ${size} bytes instead of 65536`,
    );
  }
  return output;
}

function formatDefine(value: number | string): string {
  return typeof value === "number" ? `0x${value.toString(16)}` : value;
}

/**
 * How QMP is reached: `unix` = a socket in the instance's temp dir (Deno
 * needs `--allow-net`, or `--allow-net=unix:PATH`, to connect to it),
 * `stdio` = QEMU's stdin/stdout (`-chardev stdio`, no extra permission),
 * `auto` = `unix` when that permission is granted, `stdio` otherwise.
 */
export type QmpChannel = "auto" | "unix" | "stdio";

/** Options for {@linkcode startQemu}. */
export interface QemuOptions {
  /** Path of the firmware image passed as `-bios`. */
  firmware: string;
  /**
   * Guest RAM in MiB (`-m`).
   *
   * @default {16}
   */
  ramMiB?: number;
  /**
   * Machine type and options (`-machine`).
   *
   * @default {DEFAULT_MACHINE}
   */
  machine?: string;
  /**
   * Start with the vCPU stopped (`-S`); resume with the QMP command `cont`.
   *
   * @default {true}
   */
  paused?: boolean;
  /** Makes this QEMU a migration destination (`-incoming URI`), e.g. `tcp:127.0.0.1:0`. */
  incoming?: string;
  /**
   * More arguments, appended last.
   *
   * @default {[]}
   */
  extraArgs?: string[];
  /**
   * How QMP is reached.
   *
   * @default {"auto"}
   */
  qmp?: QmpChannel;
  /**
   * How long to wait for QMP to come up, in ms.
   *
   * @default {10000}
   */
  startTimeoutMs?: number;
}

/** A running QEMU started by {@linkcode startQemu}. */
export interface QemuInstance {
  /** Process id of QEMU. */
  readonly pid: number;
  /** The connected QMP client. */
  readonly qmp: QmpClient;
  /** Which channel QMP runs on. */
  readonly qmpChannel: "unix" | "stdio";
  /** A private temporary directory, removed by {@linkcode QemuInstance.stop}. */
  readonly tempDir: string;
  /** The full command line, program name first. */
  readonly commandLine: readonly string[];
  /** What QEMU wrote to stderr so far (all of it once `exited` settled). */
  stderr(): string;
  /** Resolves with QEMU's exit status once the process has ended. */
  readonly exited: Promise<Deno.CommandStatus>;
  /**
   * Closes QMP, ends QEMU by its pid (SIGTERM, then SIGKILL after a grace
   * period), waits for it and removes the temporary directory. Safe to call
   * more than once.
   */
  stop(): Promise<void>;
  /** Same as {@linkcode QemuInstance.stop}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Starts QEMU with livemig's firmware and connects QMP.
 *
 * @example Usage
 * ```ts ignore
 * import { buildFirmware, startQemu } from "./qemu.ts";
 *
 * const dir = await Deno.makeTempDir();
 * const firmware = await buildFirmware({ IDLE: true }, dir);
 * await using vm = await startQemu({ firmware });
 * await vm.qmp.execute("cont");
 * ```
 *
 * @param options Firmware, RAM size, incoming URI and extra arguments.
 * @returns The running instance; stop it with {@linkcode QemuInstance.stop}.
 * @throws {Error} If QEMU exits early or QMP does not come up (stderr is in the message).
 */
export async function startQemu(options: QemuOptions): Promise<QemuInstance> {
  const {
    firmware,
    ramMiB = 16,
    machine = DEFAULT_MACHINE,
    paused = true,
    incoming,
    extraArgs = [],
    startTimeoutMs = 10_000,
  } = options;
  if (!Number.isInteger(ramMiB) || ramMiB < 2) {
    throw new RangeError(
      `Cannot start QEMU as ramMiB must be an integer >= 2: received ${ramMiB}`,
    );
  }
  const tempDir = await Deno.makeTempDir({ prefix: "livemig-qemu-" });
  const socket = `${tempDir}/qmp.sock`;
  const channel = resolveQmpChannel(options.qmp ?? "auto", socket);
  const args = qemuArgs({
    firmware,
    ramMiB,
    machine,
    paused,
    qmp: channel === "unix"
      ? `socket,id=qmp,path=${socket},server=on,wait=off`
      : "stdio,id=qmp,signal=off",
    extraArgs,
    ...(incoming === undefined ? {} : { incoming }),
  });
  let child: Deno.ChildProcess | undefined;
  let qmp: QmpClient | undefined;
  let stderrText = "";
  let stderrDone: Promise<void> = Promise.resolve();
  const failure = (what: string, cause?: unknown) =>
    new Error(`Cannot start QEMU: ${what}: ${stderrText.trim()}`, { cause });
  try {
    child = new Deno.Command(QEMU_BINARY, {
      args,
      stdin: channel === "stdio" ? "piped" : "null",
      stdout: channel === "stdio" ? "piped" : "null",
      stderr: "piped",
    }).spawn();
    stderrDone = collectText(child.stderr, (text) => stderrText += text);
    let hasExited = false;
    child.status.then(() => hasExited = true, () => hasExited = true);
    const deadline = performance.now() + startTimeoutMs;
    if (channel === "stdio") {
      qmp = new QmpClient({
        readable: child.stdout,
        writable: child.stdin,
        description: "stdio",
        close: () => Promise.resolve(),
      });
      try {
        await qmp.handshake(startTimeoutMs);
      } catch (error) {
        await stderrDone;
        throw failure("QMP on stdio did not come up", error);
      }
    }
    while (qmp === undefined) {
      if (hasExited) {
        await stderrDone;
        throw failure("it exited before QMP came up");
      }
      try {
        qmp = await QmpClient.connect(`unix:${socket}`, {
          timeoutMs: Math.max(1, deadline - performance.now()),
        });
      } catch (error) {
        const cause = error instanceof TransportError ? error.cause : error;
        const retry = cause instanceof Deno.errors.NotFound ||
          cause instanceof Deno.errors.ConnectionRefused;
        if (!retry || performance.now() > deadline) {
          throw failure(`QMP at "${socket}" did not come up`, error);
        }
        await delay(20);
      }
    }
  } catch (error) {
    await stopProcess(child, qmp, stderrDone);
    await Deno.remove(tempDir, { recursive: true }).catch(() => {});
    throw error;
  }
  const qemu = child;
  const client = qmp;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      try {
        await stopProcess(qemu, client, stderrDone);
      } finally {
        await Deno.remove(tempDir, { recursive: true }).catch(() => {});
      }
    })();
    return stopping;
  };
  return {
    pid: qemu.pid,
    qmp: client,
    qmpChannel: channel,
    tempDir,
    commandLine: [QEMU_BINARY, ...args],
    stderr: () => stderrText,
    // Resolves once stderr is read to its end too, so that what QEMU
    // printed before exiting is in stderr() when this settles.
    exited: qemu.status.then(async (status) => {
      await stderrDone;
      return status;
    }),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

function resolveQmpChannel(
  channel: QmpChannel,
  socket: string,
): "unix" | "stdio" {
  if (channel !== "auto") return channel;
  const permission = Deno.permissions.querySync({
    name: "net",
    host: `unix:${socket}`,
  });
  return permission.state === "granted" ? "unix" : "stdio";
}

interface QemuArgsOptions {
  firmware: string;
  ramMiB: number;
  machine: string;
  paused: boolean;
  qmp: string;
  incoming?: string;
  extraArgs: string[];
}

function qemuArgs(options: QemuArgsOptions): string[] {
  const args = [
    "-machine",
    options.machine,
    "-nodefaults",
    "-no-user-config",
    "-accel",
    "tcg",
    "-display",
    "none",
    "-m",
    String(options.ramMiB),
    "-bios",
    options.firmware,
    "-chardev",
    options.qmp,
    "-mon",
    "chardev=qmp,mode=control",
  ];
  if (options.paused) args.push("-S");
  if (options.incoming !== undefined) args.push("-incoming", options.incoming);
  args.push(...options.extraArgs);
  return args;
}

async function stopProcess(
  child: Deno.ChildProcess | undefined,
  qmp: QmpClient | undefined,
  stderrDone: Promise<void>,
): Promise<void> {
  await qmp?.close();
  if (child !== undefined) {
    let exited = false;
    const status = child.status.finally(() => exited = true);
    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      if (exited) break;
      try {
        Deno.kill(child.pid, signal);
      } catch {
        // it ended on its own meanwhile
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const grace = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, signal === "SIGTERM" ? 5000 : 30_000);
      });
      await Promise.race([status, grace]);
      clearTimeout(timer);
    }
    await status;
  }
  await stderrDone;
}

async function collectText(
  stream: ReadableStream<Uint8Array>,
  append: (text: string) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  try {
    for await (const chunk of stream) {
      append(decoder.decode(chunk, { stream: true }));
    }
  } catch {
    // the process is gone; keep what was read
  }
}

async function run(command: string, args: string[]): Promise<string> {
  const output = await new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  if (!output.success) {
    throw new Error(
      `Cannot run ${command} ${args.join(" ")}: exit code ${output.code}: ${
        decoder.decode(output.stderr).trim()
      }`,
    );
  }
  return decoder.decode(output.stdout);
}

/** The parts of QEMU's `query-migrate` reply the helpers look at; the rest is kept as-is. */
export interface MigrationInfo {
  /** MigrationStatus, e.g. `active`, `completed`, `failed`; absent before any migration. */
  status?: string;
  /** Why the migration failed, when `status` is `failed`. */
  "error-desc"?: string;
  /** RAM statistics, once a migration started. */
  ram?: MigrationRamStats;
  /** XBZRLE statistics, when the `xbzrle` capability is on. */
  "xbzrle-cache"?: Record<string, number>;
  /** Destination listening addresses (incoming side). */
  "socket-address"?: { type: string; host?: string; port?: string }[];
  /** Every other field QEMU reports. */
  [field: string]: unknown;
}

/** The `ram` object of {@linkcode MigrationInfo} (subset; other fields are kept). */
export interface MigrationRamStats {
  /** Bytes sent so far. */
  transferred: number;
  /** Zero pages sent. */
  duplicate: number;
  /** Normal pages sent. */
  normal: number;
  /** Dirty-bitmap syncs so far. */
  "dirty-sync-count": number;
  /** Every other field QEMU reports. */
  [field: string]: unknown;
}

/** Options for {@linkcode waitForStatus}. */
export interface WaitForStatusOptions {
  /**
   * Milliseconds between two `query-migrate` polls.
   *
   * @default {10}
   */
  pollMs?: number;
  /**
   * Extra condition that must hold, besides the status.
   *
   * @default {() => true}
   */
  until?: (info: MigrationInfo) => boolean;
}

/**
 * Polls `query-migrate` until the migration status is `status` (one of them
 * when an array is given) and `options.until` holds.
 *
 * @param qmp The QMP client of the source or destination.
 * @param status The status (or statuses) to wait for.
 * @param timeoutMs How long to wait, in ms.
 * @param options Poll interval and extra condition.
 * @returns The `query-migrate` reply that matched.
 * @throws {Error} If the migration fails or is cancelled while waiting (unless that is awaited), or on timeout.
 */
export async function waitForStatus(
  qmp: QmpClient,
  status: string | readonly string[],
  timeoutMs: number,
  options: WaitForStatusOptions = {},
): Promise<MigrationInfo> {
  const { pollMs = 10, until = () => true } = options;
  const wanted = typeof status === "string" ? [status] : status;
  const deadline = performance.now() + timeoutMs;
  let info: MigrationInfo = {};
  while (true) {
    info = await qmp.execute<MigrationInfo>("query-migrate");
    const current = info.status ?? "none";
    if (wanted.includes(current) && until(info)) return info;
    if (
      (current === "failed" || current === "cancelled") &&
      !wanted.includes(current)
    ) {
      throw new Error(
        `Cannot reach migration status ${
          wanted.join(" or ")
        }: status is "${current}"${
          info["error-desc"] ? `: ${info["error-desc"]}` : ""
        }`,
      );
    }
    if (performance.now() > deadline) {
      throw new QmpConnectionError(
        `Cannot reach migration status ${
          wanted.join(" or ")
        } within ${timeoutMs} ms: status is "${current}"`,
      );
    }
    await delay(pollMs);
  }
}

/**
 * Polls `query-status` until the run state is `status`, e.g. `postmigrate`.
 *
 * @param qmp The QMP client.
 * @param status The run state to wait for.
 * @param timeoutMs How long to wait, in ms.
 * @returns Resolves once the run state matches.
 * @throws {Error} On timeout.
 */
export async function waitForRunState(
  qmp: QmpClient,
  status: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    const state = await qmp.execute<{ status: string }>("query-status");
    if (state.status === status) return;
    if (performance.now() > deadline) {
      throw new Error(
        `Cannot reach run state "${status}" within ${timeoutMs} ms: state is "${state.status}"`,
      );
    }
    await delay(10);
  }
}

/** Options for {@linkcode pmemsave}. */
export interface PmemsaveOptions {
  /**
   * Guest physical address of the first byte.
   *
   * @default {0}
   */
  address?: number;
}

/**
 * Has QEMU write `size` bytes of guest physical memory to `path`
 * (QMP `pmemsave`) and returns them.
 *
 * Guest physical reads go through the machine's memory map, so the legacy
 * window 0xA0000–0xFFFFF shows VGA/ROM contents rather than `pc.ram`; see
 * {@linkcode zeroLegacyWindow}.
 *
 * @param qmp The QMP client.
 * @param path Where QEMU writes the dump (QEMU must be able to write there).
 * @param size How many bytes.
 * @param options Start address.
 * @returns The dumped bytes.
 */
export async function pmemsave(
  qmp: QmpClient,
  path: string,
  size: number,
  options: PmemsaveOptions = {},
): Promise<Uint8Array<ArrayBuffer>> {
  const { address = 0 } = options;
  await qmp.execute("pmemsave", { val: address, size, filename: path });
  const bytes = await Deno.readFile(path);
  if (bytes.byteLength !== size) {
    throw new Error(
      `Cannot read pmemsave dump "${path}": ${bytes.byteLength} bytes instead of ${size}`,
    );
  }
  return bytes;
}

/**
 * Zeroes the legacy window 0xA0000–0xFFFFF of a dump that starts at guest
 * physical address 0, in place, so it can be compared with `pc.ram` as a
 * migration stream carries it.
 *
 * @param dump A guest RAM dump starting at address 0.
 * @returns The same array.
 */
export function zeroLegacyWindow<T extends Uint8Array>(dump: T): T {
  dump.fill(
    0,
    Math.min(LEGACY_WINDOW.start, dump.byteLength),
    Math.min(LEGACY_WINDOW.end, dump.byteLength),
  );
  return dump;
}

/**
 * Hex SHA-256 of `bytes`.
 *
 * @param bytes What to hash.
 * @returns Lower-case hex digest.
 */
export async function sha256Hex(
  bytes: Uint8Array<ArrayBuffer>,
): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join(
    "",
  );
}

/**
 * Picks a free TCP port on 127.0.0.1 by binding port 0 and closing again.
 * Another process may take it before it is used; when QEMU listens, prefer
 * `-incoming tcp:127.0.0.1:0` and {@linkcode incomingPort}.
 *
 * @returns A port number.
 */
export function freeLoopbackPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    return (listener.addr as Deno.NetAddr).port;
  } finally {
    listener.close();
  }
}

/**
 * The TCP port a destination started with `-incoming tcp:HOST:0` listens on,
 * from `query-migrate`'s `socket-address`.
 *
 * @param qmp The destination's QMP client.
 * @returns The port number.
 * @throws {Error} If the destination reports no TCP listening address.
 */
export async function incomingPort(qmp: QmpClient): Promise<number> {
  const info = await qmp.execute<MigrationInfo>("query-migrate");
  const address = info["socket-address"]?.find((entry) =>
    entry.type === "inet" && entry.port !== undefined
  );
  if (address?.port === undefined) {
    throw new Error(
      `Cannot find the incoming TCP port: socket-address is ${
        JSON.stringify(info["socket-address"])
      }`,
    );
  }
  return Number(address.port);
}
