/**
 * Shared pieces of the interop tests: real QEMU 7.2 processes (TCG, 16 MiB,
 * livemig's firmware) talking to livemig's CLI run in-process through
 * `main(args, io)`.
 *
 * Every QEMU is stopped by its pid and its temp dir removed by
 * {@linkcode QemuInstance.stop}; every scratch directory made here is
 * removed by {@linkcode withWorkDir}. Nothing waits a fixed time: helpers
 * poll for a condition (a status, a pass count, a line of output) with a
 * generous deadline.
 *
 * @module
 */

import assert from "node:assert/strict";
export { type CapturedIo, captureIo } from "../_helpers/capture_io.ts";
import {
  buildFirmware,
  type FirmwareDefines,
  type MigrationInfo,
  pmemsave,
  type QemuInstance,
  qemuSkipReason,
  startQemu,
  waitForStatus,
  zeroLegacyWindow,
} from "../_helpers/qemu.ts";

/** Why the interop tests cannot run here, if they cannot. */
export const SKIP_REASON: string | undefined = qemuSkipReason();

/** Guest RAM of every QEMU the tests start. */
export const RAM_MIB = 16;
/** The same, in bytes (the size of `pc.ram`). */
export const RAM_BYTES: number = RAM_MIB * 1024 * 1024;

const STATUS_ADDR = 0x1000;

/** Firmware that writes its status and pattern pages, then halts. */
export const IDLE_FIRMWARE: FirmwareDefines = {
  IDLE: true,
  STATUS_ADDR,
  PATTERN_START: 0x2000,
  PATTERN_PAGES: 4,
};

/**
 * Firmware that keeps dirtying one byte of 32 pages (0x100000–0x11FFFF)
 * plus a heartbeat, pass after pass.
 */
export const DIRTY_FIRMWARE: FirmwareDefines = {
  DIRTY_START: 0x100000,
  DIRTY_END: 0x120000,
  DIRTY_OFFSET: 0x80,
  PAUSE: 0x20000,
  STATUS_ADDR,
  PATTERN_START: 0x2000,
  PATTERN_PAGES: 4,
};

/**
 * Registers an interop test, ignored with the reason in its name when QEMU
 * or nasm is missing or `--allow-run` is not granted, and failed when it
 * runs past {@linkcode INTEROP_DEADLINE_MS}.
 *
 * @param name What the test shows.
 * @param fn The test.
 */
export function interopTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name: SKIP_REASON === undefined
      ? name
      : `${name} (skipped: ${SKIP_REASON})`,
    ignore: SKIP_REASON !== undefined,
    fn: () => withDeadline(fn(), INTEROP_DEADLINE_MS),
  });
}

/**
 * How long one interop test may take (they take seconds) before it fails,
 * so that something stuck fails its test instead of hanging the run.
 */
const INTEROP_DEADLINE_MS = 300_000;

async function withDeadline(run: Promise<void>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`The test did not finish within ${ms} ms`)),
      ms,
    );
  });
  try {
    await Promise.race([run, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs `fn` with a fresh scratch directory, removed afterwards.
 *
 * @param fn What to run.
 * @returns What `fn` returned.
 */
export async function withWorkDir<T>(
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "livemig-interop-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const firmwareImages = new Map<string, Promise<Uint8Array>>();

/**
 * Builds (once per process) the firmware for `defines` and writes it into
 * `dir`.
 *
 * @param defines The firmware build defines.
 * @param dir An existing directory.
 * @returns The image's path.
 */
export async function firmwareIn(
  defines: FirmwareDefines,
  dir: string,
): Promise<string> {
  const key = JSON.stringify(defines);
  let image = firmwareImages.get(key);
  if (image === undefined) {
    image = (async () => {
      const build = await Deno.makeTempDir({ prefix: "livemig-fw-" });
      try {
        return await Deno.readFile(await buildFirmware(defines, build));
      } finally {
        await Deno.remove(build, { recursive: true });
      }
    })();
    firmwareImages.set(key, image);
  }
  const path = `${dir}/fw-${[...firmwareImages.keys()].indexOf(key)}.bin`;
  await Deno.writeFile(path, await image);
  return path;
}

/** Options for {@linkcode startSource}. */
export interface SourceOptions {
  /** Capabilities to turn on before `migrate`. */
  capabilities?: string[];
  /** Parameters to set before `migrate`. */
  parameters?: Record<string, number>;
  /** Finished firmware passes to wait for before returning. */
  passes?: number;
  /** More QEMU arguments (e.g. `-uuid`). */
  extraArgs?: string[];
}

/**
 * Starts a source QEMU, sets its capabilities and parameters, lets the
 * guest run and waits until the firmware finished `passes` passes.
 *
 * @param firmware The firmware image.
 * @param options Capabilities, parameters, passes.
 * @returns The running source.
 */
export async function startSource(
  firmware: string,
  options: SourceOptions = {},
): Promise<QemuInstance> {
  const vm = await startQemu({
    firmware,
    ramMiB: RAM_MIB,
    extraArgs: options.extraArgs ?? [],
  });
  try {
    const { capabilities = [], parameters = {}, passes = 0 } = options;
    if (capabilities.length > 0) {
      await vm.qmp.execute("migrate-set-capabilities", {
        capabilities: capabilities.map((capability) => ({
          capability,
          state: true,
        })),
      });
    }
    if (Object.keys(parameters).length > 0) {
      await vm.qmp.execute("migrate-set-parameters", parameters);
    }
    await vm.qmp.execute("cont");
    await waitForGuestPasses(vm, passes);
    return vm;
  } catch (error) {
    await vm.stop();
    throw error;
  }
}

/**
 * Reads the firmware's status page: magic and finished passes.
 *
 * @param vm The QEMU.
 * @returns The finished passes, or -1 before the firmware wrote its magic.
 */
export async function guestPasses(vm: QemuInstance): Promise<number> {
  const page = await pmemsave(vm.qmp, `${vm.tempDir}/status.bin`, 16, {
    address: STATUS_ADDR,
  });
  if (new TextDecoder().decode(page.subarray(0, 4)) !== "LMFW") return -1;
  return new DataView(page.buffer).getUint32(8, true);
}

/**
 * Waits until the firmware finished at least `passes` passes.
 *
 * @param vm The QEMU.
 * @param passes How many.
 * @param timeoutMs How long to wait.
 * @returns The passes seen.
 */
export async function waitForGuestPasses(
  vm: QemuInstance,
  passes: number,
  timeoutMs = 30_000,
): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    const done = await guestPasses(vm);
    if (done >= passes) return done;
    if (performance.now() > deadline) {
      throw new Error(
        `Cannot see ${passes} guest passes within ${timeoutMs} ms: ${done} so far`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * Lets a source with `downtime-limit` 1 ms iterate until its
 * `dirty-sync-count` reaches `syncs`, then allows the switchover
 * (`downtime-limit` 2000000, the largest 7.2 accepts). QEMU may complete
 * on its own earlier (a sync that finds nothing dirty); that is fine.
 *
 * @param vm The source.
 * @param syncs Dirty syncs to wait for.
 * @returns The info seen when the switchover was allowed.
 */
export async function allowSwitchoverAfter(
  vm: QemuInstance,
  syncs: number,
): Promise<MigrationInfo> {
  const info = await waitForStatus(vm.qmp, ["active", "completed"], 60_000, {
    pollMs: 5,
    until: (info) =>
      info.status === "completed" ||
      (info.ram?.["dirty-sync-count"] ?? 0) >= syncs,
  });
  if (info.status !== "completed") {
    await vm.qmp.execute("migrate-set-parameters", {
      "downtime-limit": 2_000_000,
    });
  }
  return info;
}

/**
 * The source's guest RAM (`pc.ram`) as `pmemsave` shows it, with the
 * legacy window 0xA0000–0xFFFFF zeroed.
 *
 * @param vm The QEMU, stopped (postmigrate) so RAM no longer changes.
 * @returns The 16 MiB.
 */
export async function guestRam(vm: QemuInstance): Promise<Uint8Array> {
  const path = `${vm.tempDir}/ram.bin`;
  const dump = zeroLegacyWindow(await pmemsave(vm.qmp, path, RAM_BYTES));
  await Deno.remove(path);
  return dump;
}

/**
 * Asserts that two RAM images are equal, naming the first differing page.
 *
 * @param actual What the destination holds.
 * @param expected What the source held.
 * @param what Which RAM, for the message.
 */
export function assertSameRam(
  actual: Uint8Array,
  expected: Uint8Array,
  what: string,
): void {
  assert.equal(actual.byteLength, expected.byteLength, `${what}: size`);
  for (let at = 0; at < actual.byteLength; at += 4096) {
    const a = actual.subarray(at, at + 4096);
    const b = expected.subarray(at, at + 4096);
    if (!a.every((byte, i) => byte === b[i])) {
      assert.fail(
        `${what}: page 0x${at.toString(16)} differs from the source's`,
      );
    }
  }
}

/**
 * The last line of `text` parsed as JSON.
 *
 * @param text Output whose last line is JSON.
 * @returns The parsed value.
 */
export function lastJsonLine<T = Record<string, unknown>>(text: string): T {
  const lines = text.trim().split("\n");
  return JSON.parse(lines[lines.length - 1]!) as T;
}

/**
 * Sends `migrate uri=URI` to a source and waits until the migration left
 * `setup`. A connection refused because the listener was not up yet is
 * retried (the status is then `failed` with that reason); any other
 * failure counts as started (a migration may fail within one poll, e.g.
 * when the stream is refused at once), for the caller to check.
 *
 * @param vm The source.
 * @param uri Where to migrate to.
 * @param timeoutMs How long to keep trying.
 */
export async function startMigration(
  vm: QemuInstance,
  uri: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    await vm.qmp.execute("migrate", { uri });
    const info = await waitForStatus(
      vm.qmp,
      ["active", "completed", "failed"],
      timeoutMs,
    );
    if (
      info.status !== "failed" || !/refused/i.test(info["error-desc"] ?? "")
    ) {
      return;
    }
    if (performance.now() > deadline) {
      throw new Error(
        `Cannot start the migration to ${uri}: ${info["error-desc"]}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Counts the pages of `bytes` that hold a non-zero byte.
 *
 * @param bytes RAM.
 * @returns How many 4 KiB pages are not all zero.
 */
export function nonZeroPages(bytes: Uint8Array): number {
  let count = 0;
  for (let at = 0; at < bytes.byteLength; at += 4096) {
    if (bytes.subarray(at, at + 4096).some((byte) => byte !== 0)) count++;
  }
  return count;
}
