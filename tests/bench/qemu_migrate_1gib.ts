/**
 * The reference for tests/bench/migrate_1gib.ts: QEMU migrating a 1 GiB
 * guest to another QEMU on the same machine over loopback TCP, with
 * livemig's firmware filling all RAM above 1 MiB with non-zero data first
 * (every dword holds its own address), so nearly every page goes out as a
 * normal page, as with `cli.ts migrate --workload fill`.
 *
 * ```
 * qemu-system-x86_64 -machine pc-i440fx-7.2,acpi=off -m 1024 -accel tcg
 *   -bios livemig_fw.bin (IDLE, PATTERN_START 1 MiB, PATTERN_PAGES to 1 GiB)
 * qemu-system-x86_64 ... -incoming tcp:127.0.0.1:0
 * migrate-set-parameters max-bandwidth=100 GiB/s; migrate tcp:127.0.0.1:PORT
 * ```
 *
 * Prints per run QEMU's `total-time`, the wall time from `migrate` until
 * both ends report `completed` (polled every 5 ms), throughput, and both
 * processes' peak RSS (VmHWM).
 *
 * `--tls` runs the migration over TLS with x509 client certificates
 * (`tls-creds-x509` objects, verify-peer on), credentials made with openssl.
 *
 * Run (needs qemu-system-x86_64 and nasm; -A so that /proc of the QEMU
 * processes can be read):
 *   deno run -A tests/bench/qemu_migrate_1gib.ts [--runs 3] [--tls]
 */
import { parseArgs } from "node:util";
import {
  buildFirmware,
  incomingPort,
  type MigrationInfo,
  pmemsave,
  type QemuInstance,
  qemuSkipReason,
  startQemu,
} from "../_helpers/qemu.ts";
import { createTlsCredentials } from "../_helpers/tls_certs.ts";
import { delay } from "../_helpers/delay.ts";

const MIB = 1 << 20;
const RAM_MIB = 1024;
const PATTERN_START = 0x100000;
const LAST_PAGE = RAM_MIB * MIB - 4096;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "3" },
    tls: { type: "boolean", default: false },
  },
});

function vmHwm(pid: number): number {
  const text = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmHWM:\s+(\d+) kB/.exec(text)?.[1] ?? 0) * 1024;
}

/** Gives `vm` x509 credentials `tls0` and points its migration at them. */
async function useTls(
  vm: QemuInstance,
  dir: string,
  endpoint: "client" | "server",
): Promise<void> {
  await vm.qmp.execute("object-add", {
    "qom-type": "tls-creds-x509",
    id: "tls0",
    dir,
    endpoint,
    "verify-peer": true,
  });
  await vm.qmp.execute("migrate-set-parameters", {
    "tls-creds": "tls0",
    ...(endpoint === "client" ? { "tls-hostname": "localhost" } : {}),
  });
}

async function runOnce(
  run: number,
  firmware: string,
  tlsDir: string | undefined,
): Promise<void> {
  await using destination = await startQemu({
    firmware,
    ramMiB: RAM_MIB,
    incoming: tlsDir === undefined ? "tcp:127.0.0.1:0" : "defer",
  });
  if (tlsDir !== undefined) {
    await useTls(destination, tlsDir, "server");
    await destination.qmp.execute("migrate-incoming", {
      uri: "tcp:127.0.0.1:0",
    });
  }
  await using source = await startQemu({
    firmware,
    ramMiB: RAM_MIB,
    paused: false,
  });
  // Wait until the firmware has filled the last page of RAM.
  const fillStart = performance.now();
  while (true) {
    const page = await pmemsave(
      source.qmp,
      `${source.tempDir}/last.bin`,
      4096,
      { address: LAST_PAGE },
    );
    const view = new DataView(page.buffer);
    if (view.getUint32(4092, true) === LAST_PAGE + 4092) break;
    if (performance.now() - fillStart > 120_000) {
      throw new Error("Cannot fill the source guest's RAM within 120 s");
    }
    await delay(100);
  }
  const fillMs = performance.now() - fillStart;
  await source.qmp.execute("stop");
  if (tlsDir !== undefined) await useTls(source, tlsDir, "client");
  await source.qmp.execute("migrate-set-parameters", {
    "max-bandwidth": 100 * 1024 * MIB,
  });
  const port = await incomingPort(destination.qmp);
  const start = performance.now();
  await source.qmp.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
  let sourceInfo: MigrationInfo = {};
  let sourceDone: number | undefined;
  let destinationDone: number | undefined;
  while (sourceDone === undefined || destinationDone === undefined) {
    if (sourceDone === undefined) {
      sourceInfo = await source.qmp.execute<MigrationInfo>("query-migrate");
      if (sourceInfo.status === "completed") sourceDone = performance.now();
      if (sourceInfo.status === "failed") {
        throw new Error(`Cannot migrate: ${sourceInfo["error-desc"]}`);
      }
    }
    if (destinationDone === undefined) {
      const info = await destination.qmp.execute<MigrationInfo>(
        "query-migrate",
      );
      if (info.status === "completed") destinationDone = performance.now();
    }
    await delay(5);
  }
  const ram = sourceInfo.ram!;
  const totalMs = sourceInfo["total-time"] as number;
  const wallMs = Math.max(sourceDone, destinationDone) - start;
  // deno-lint-ignore no-console
  console.log([
    `run ${run}: guest filled in ${(fillMs / 1000).toFixed(1)} s; ${
      (ram.transferred / MIB).toFixed(0)
    } MiB sent, ${ram.normal} normal + ${ram.duplicate} zero pages`,
    `  QEMU total-time ${totalMs} ms (setup ${
      sourceInfo["setup-time"]
    } ms, downtime ${sourceInfo.downtime} ms): ${
      (ram.transferred / 1e6 / totalMs).toFixed(2)
    } GB/s`,
    `  wall from migrate to both completed: ${wallMs.toFixed(0)} ms (${
      (ram.transferred / 1e6 / wallMs).toFixed(2)
    } GB/s); source done at ${
      (sourceDone - start).toFixed(0)
    } ms, destination at ${(destinationDone - start).toFixed(0)} ms`,
    `  peak RSS (VmHWM): source ${
      (vmHwm(source.pid) / MIB).toFixed(0)
    } MiB, destination ${
      (vmHwm(destination.pid) / MIB).toFixed(0)
    } MiB; guest RAM ${RAM_MIB} MiB`,
  ].join("\n"));
}

const skip = qemuSkipReason();
if (skip !== undefined) {
  // deno-lint-ignore no-console
  console.log(`skipped: ${skip}`);
} else {
  const dir = await Deno.makeTempDir({ prefix: "livemig-bench-" });
  try {
    const firmware = await buildFirmware({
      IDLE: true,
      PATTERN_START,
      PATTERN_PAGES: (RAM_MIB * MIB - PATTERN_START) / 4096,
    }, dir);
    await using tls = values.tls ? await createTlsCredentials() : undefined;
    for (let run = 1; run <= Number(values.runs); run++) {
      await runOnce(run, firmware, tls?.dir);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
