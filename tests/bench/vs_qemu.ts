/**
 * livemig → livemig against QEMU 7.2 → QEMU 7.2, in one go on the same
 * machine: a guest with all RAM in use migrated over loopback TCP, each
 * side `--runs` times (QEMU and livemig runs interleaved, so that a busy
 * moment of the machine hits both, and in alternating order, as memory
 * just freed by one is faster to touch for the next), then a table of
 * medians and ratios
 * (livemig ÷ QEMU; below 1 means livemig is faster).
 *
 * Rows (`--rows`, default all three):
 *
 * - `default`: default settings on both ends (max-bandwidth raised to
 *   100 GiB/s on both sources, so that the link, not the limit, decides);
 * - `multifd`: capability `multifd` on both ends, `multifd-channels=2`;
 * - `multifd-zstd`: the same plus `multifd-compression=zstd`.
 *
 * The QEMU guests run livemig's firmware, which fills all RAM from 1 MiB
 * up (below 3.5 GiB, the i440fx low-memory limit) with non-zero data, every
 * dword holding its own address: compressible, and every page a normal
 * page. livemig's guests are `cli.ts migrate --workload fill`: non-zero
 * pseudo-random data, every page a normal page. Without compression only
 * the number and kind of pages matter, so the first two rows compare the
 * same work; the zstd row fills livemig's guest with `fill:address`, the
 * firmware's own pattern (each dword its address), so both compress the
 * same content.
 *
 * livemig runs as the README's alias runs it (`deno run --allow-read
 * --allow-write --allow-net --allow-run --allow-ffi cli.ts`, default
 * flags). When it refuses multifd (a usage error naming it), the multifd
 * rows print "n/a (livemig has no multifd yet)".
 *
 * Columns: `total-time` as each source reports it (QEMU's query-migrate;
 * livemig's `--json`, which ends only once the destination confirmed the
 * load with its SHUT), the ratio of the two, QEMU's time until both of its
 * ends said `completed` (query-migrate polled every 5 ms from the
 * `migrate` command: QEMU's source does not wait for its destination, so
 * this is the fairer QEMU figure) and the ratio to that, then each end's
 * peak RSS (VmHWM from /proc/PID/status). The ratios are of medians.
 *
 * With several `--ram` sizes it also prints total-time per GiB for each
 * size and whether it stays within ±15% of the smallest size's.
 *
 * Run (needs qemu-system-x86_64 7.2 and nasm; -A so that /proc of the
 * other processes can be read):
 *   deno run -A tests/bench/vs_qemu.ts [--runs 3] [--ram 1GiB | --ram 256MiB,1GiB,4GiB]
 *     [--rows default,multifd,multifd-zstd]
 * or `deno task bench-qemu [options]`.
 */
import { parseArgs } from "node:util";
import { formatBytes, parseSize } from "../../mod.ts";
import {
  buildFirmware,
  incomingPort,
  type MigrationInfo,
  pmemsave,
  qemuSkipReason,
  startQemu,
} from "../_helpers/qemu.ts";
import type { QmpValue } from "../../lib/qmp/qmp_json.ts";
import { delay } from "../_helpers/delay.ts";

const MIB = 1 << 20;
const GIB = 1 << 30;
const PATTERN_START = 0x100000;
/** The firmware cannot write above this: i440fx's low memory ends there. */
const PATTERN_LIMIT = 0xc0000000;
const CLI = new URL("../../cli.ts", import.meta.url).pathname;
/** The permissions of the README's alias. */
const DENO_ARGS = [
  "run",
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-run",
  "--allow-ffi",
];
const ROWS = ["default", "multifd", "multifd-zstd"] as const;
type Row = typeof ROWS[number];

/** One migration, from either implementation. */
interface Sample {
  totalMs: number;
  wallMs: number;
  sourceHwm: number;
  destinationHwm: number;
  normal: number;
  zero: number;
}

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "3" },
    ram: { type: "string", default: "1GiB" },
    rows: { type: "string", default: ROWS.join(",") },
  },
});
const runs = Number(values.runs);
if (!Number.isSafeInteger(runs) || runs < 1) {
  throw new RangeError(`Cannot use --runs ${values.runs}: it must be >= 1`);
}
const sizes = values.ram.split(",").map((text) => parseSize(text, "--ram"));
const rows = values.rows.split(",").map((name) => {
  if (!(ROWS as readonly string[]).includes(name)) {
    throw new RangeError(
      `Cannot use --rows ${name}: expected ${ROWS.join(", ")}`,
    );
  }
  return name as Row;
});

function vmHwm(pid: number): number {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/status`);
    return Number(/VmHWM:\s+(\d+) kB/.exec(text)?.[1] ?? 0) * 1024;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return 0; // it has ended
    throw error;
  }
}

/** The QMP settings of a row, for both QEMUs. */
function qemuSettings(row: Row): {
  capabilities: { capability: string; state: boolean }[];
  parameters: Record<string, QmpValue>;
} {
  if (row === "default") return { capabilities: [], parameters: {} };
  return {
    capabilities: [{ capability: "multifd", state: true }],
    parameters: {
      "multifd-channels": 2,
      ...(row === "multifd-zstd" ? { "multifd-compression": "zstd" } : {}),
    },
  };
}

/** Waits until the firmware has written the last pattern page. */
async function waitForFill(
  source: Awaited<ReturnType<typeof startQemu>>,
  lastPage: number,
): Promise<void> {
  const start = performance.now();
  while (true) {
    const page = await pmemsave(
      source.qmp,
      `${source.tempDir}/last.bin`,
      4096,
      { address: lastPage },
    );
    const view = new DataView(page.buffer);
    if (view.getUint32(4092, true) === lastPage + 4092) return;
    if (performance.now() - start > 600_000) {
      throw new Error("Cannot fill the source guest's RAM within 600 s");
    }
    await delay(100);
  }
}

async function runQemu(
  ramBytes: number,
  row: Row,
  firmware: string,
): Promise<Sample> {
  const ramMiB = ramBytes / MIB;
  const { capabilities, parameters } = qemuSettings(row);
  await using destination = await startQemu({
    firmware,
    ramMiB,
    incoming: "defer",
  });
  if (capabilities.length > 0) {
    await destination.qmp.execute("migrate-set-capabilities", {
      capabilities,
    });
    await destination.qmp.execute("migrate-set-parameters", parameters);
  }
  await destination.qmp.execute("migrate-incoming", {
    uri: "tcp:127.0.0.1:0",
  });
  const port = await incomingPort(destination.qmp);
  await using source = await startQemu({ firmware, ramMiB, paused: false });
  await waitForFill(source, patternEnd(ramBytes) - 4096);
  await source.qmp.execute("stop");
  await source.qmp.execute("migrate-set-capabilities", { capabilities });
  await source.qmp.execute("migrate-set-parameters", {
    ...parameters,
    "max-bandwidth": 100 * GIB,
  });
  const start = performance.now();
  await source.qmp.execute("migrate", { uri: `tcp:127.0.0.1:${port}` });
  let info: MigrationInfo = {};
  let sourceDone: number | undefined;
  let destinationDone: number | undefined;
  while (sourceDone === undefined || destinationDone === undefined) {
    if (sourceDone === undefined) {
      info = await source.qmp.execute<MigrationInfo>("query-migrate");
      if (info.status === "completed") sourceDone = performance.now();
      if (info.status === "failed") {
        throw new Error(`Cannot migrate QEMU: ${info["error-desc"]}`);
      }
    }
    if (destinationDone === undefined) {
      const state = await destination.qmp.execute<MigrationInfo>(
        "query-migrate",
      );
      if (state.status === "completed") destinationDone = performance.now();
    }
    await delay(5);
  }
  return {
    totalMs: info["total-time"] as number,
    wallMs: Math.max(sourceDone, destinationDone) - start,
    sourceHwm: vmHwm(source.pid),
    destinationHwm: vmHwm(destination.pid),
    normal: info.ram?.normal ?? 0,
    zero: info.ram?.duplicate ?? 0,
  };
}

/** Where the firmware's pattern ends: all RAM, or low memory's end. */
function patternEnd(ramBytes: number): number {
  return Math.min(ramBytes, PATTERN_LIMIT);
}

/** The CLI flags of a row, for both livemig ends. */
function livemigFlags(row: Row): string[] {
  if (row === "default") return [];
  return [
    ...["-c", "multifd=on", "-p", "multifd-channels=2"],
    ...(row === "multifd-zstd" ? ["-p", "multifd-compression=zstd"] : []),
  ];
}

/** A livemig end as a child process, its output collected. */
interface CliChild {
  child: Deno.ChildProcess;
  stdout: Promise<string>;
  stderr: Promise<string>;
  /** Resolves with the listening address a destination prints. */
  address: Promise<string | undefined>;
  hwm: number;
}

function spawnCli(args: string[]): CliChild {
  const child = new Deno.Command(Deno.execPath(), {
    args: [...DENO_ARGS, CLI, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const address = Promise.withResolvers<string | undefined>();
  const stderr = (async () => {
    let all = "";
    for await (
      const part of child.stderr.pipeThrough(new TextDecoderStream())
    ) {
      all += part;
      const match = /waiting for a migration at (\S+)/.exec(all);
      if (match) address.resolve(match[1]!);
    }
    address.resolve(undefined);
    return all;
  })();
  const stdout = new Response(child.stdout).text();
  return { child, stdout, stderr, address: address.promise, hwm: 0 };
}

/** Why livemig refused the row's settings, if it did (exit 2 naming multifd). */
async function refusal(end: CliChild): Promise<string | undefined> {
  const status = await end.child.status;
  const stderr = await end.stderr;
  if (status.code === 2 && /multifd/.test(stderr)) return stderr.trim();
  return undefined;
}

async function runLivemig(
  ramBytes: number,
  row: Row,
): Promise<Sample | "refused"> {
  const flags = livemigFlags(row);
  const destination = spawnCli(["incoming", "tcp:127.0.0.1:0", ...flags]);
  const address = await destination.address;
  if (address === undefined) {
    if (await refusal(destination) !== undefined) return "refused";
    throw new Error(
      `Cannot start livemig incoming: ${await destination.stderr}`,
    );
  }
  const source = spawnCli([
    "migrate",
    address,
    "--ram",
    `${ramBytes / MIB}MiB`,
    // With compression, the same compressible content as QEMU's guests.
    ...["--workload", row === "multifd-zstd" ? "fill:address" : "fill"],
    "--json",
    ...["-p", "max-bandwidth=100GiB/s", ...flags],
  ]);
  let sourceEnd = false;
  let destinationEnd = false;
  const sourceStatus = source.child.status.then((status) => {
    sourceEnd = true;
    return status;
  });
  const destinationStatus = destination.child.status.then((status) => {
    destinationEnd = true;
    return status;
  });
  while (!sourceEnd || !destinationEnd) {
    if (!sourceEnd) {
      source.hwm = Math.max(source.hwm, vmHwm(source.child.pid));
    }
    if (!destinationEnd) {
      destination.hwm = Math.max(destination.hwm, vmHwm(destination.child.pid));
    }
    await delay(20);
  }
  if ((await sourceStatus).code !== 0) {
    if (await refusal(source) !== undefined) {
      destination.child.kill();
      return "refused";
    }
  }
  if (!(await sourceStatus).success || !(await destinationStatus).success) {
    throw new Error(
      `Cannot migrate livemig: source: ${await source
        .stderr}; destination: ${await destination.stderr}`,
    );
  }
  const info = JSON.parse((await source.stdout).trim().split("\n").at(-1)!);
  const totalMs: number = info["total-time"];
  return {
    totalMs,
    // livemig's total-time ends at the destination's SHUT: both are done.
    wallMs: totalMs,
    sourceHwm: source.hwm,
    destinationHwm: destination.hwm,
    normal: info.ram.normal,
    zero: info.ram.duplicate,
  };
}

function median(numbers: number[]): number {
  const sorted = [...numbers].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1
    ? sorted[middle]!
    : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

function spread(numbers: number[]): string {
  return `${Math.min(...numbers).toFixed(0)}–${
    Math.max(...numbers).toFixed(0)
  }`;
}

function mib(bytes: number): string {
  return (bytes / MIB).toFixed(0);
}

/** The results of one row at one size. */
interface RowResult {
  row: Row;
  ramBytes: number;
  qemu: Sample[];
  livemig: Sample[] | "refused";
}

function formatRow(result: RowResult): string[] {
  const { qemu, livemig } = result;
  const qemuTotal = median(qemu.map((s) => s.totalMs));
  const qemuWall = median(qemu.map((s) => s.wallMs));
  const qemuRss = `${mib(median(qemu.map((s) => s.sourceHwm)))} / ${
    mib(median(qemu.map((s) => s.destinationHwm)))
  }`;
  const head = [
    result.row,
    formatBytes(result.ramBytes),
    `${qemuTotal.toFixed(0)} (${spread(qemu.map((s) => s.totalMs))})`,
    `${qemuWall.toFixed(0)} (${spread(qemu.map((s) => s.wallMs))})`,
  ];
  if (livemig === "refused") {
    return [...head, "n/a (livemig has no multifd yet)", "", "", qemuRss, ""];
  }
  const total = median(livemig.map((s) => s.totalMs));
  return [
    ...head,
    `${total.toFixed(0)} (${spread(livemig.map((s) => s.totalMs))})`,
    (total / qemuTotal).toFixed(2),
    (total / qemuWall).toFixed(2),
    qemuRss,
    `${mib(median(livemig.map((s) => s.sourceHwm)))} / ${
      mib(median(livemig.map((s) => s.destinationHwm)))
    }`,
  ];
}

function printTable(results: RowResult[]): void {
  const header = [
    "row",
    "RAM",
    "QEMU total-time ms",
    "QEMU both done ms",
    "livemig total-time ms",
    "÷ QEMU total",
    "÷ QEMU both done",
    "QEMU peak RSS src / dst MiB",
    "livemig peak RSS src / dst MiB",
  ];
  const table = [header, ...results.map(formatRow)];
  const widths = header.map((_, i) =>
    Math.max(...table.map((cells) => (cells[i] ?? "").length))
  );
  const line = (cells: string[]) =>
    `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ")} |`;
  const lines = [
    line(header),
    line(widths.map((width) => "-".repeat(width))),
    ...table.slice(1).map(line),
    `medians of ${runs} runs (min–max in brackets); ratios are livemig ÷ QEMU`,
  ];
  // deno-lint-ignore no-console
  console.log(lines.join("\n"));
}

/** total-time per GiB for each size, and whether growth is linear (±15%). */
function printScaling(results: RowResult[]): void {
  for (const row of rows) {
    const mine = results.filter((r) => r.row === row);
    for (const side of ["qemu", "livemig"] as const) {
      const perGib = mine.flatMap((r) => {
        const samples = r[side];
        if (samples === "refused") return [];
        return [{
          ramBytes: r.ramBytes,
          perGib: median(samples.map((s) => s.totalMs)) / (r.ramBytes / GIB),
        }];
      });
      if (perGib.length < 2) continue;
      const base = perGib[0]!.perGib;
      const linear = perGib.every((p) => Math.abs(p.perGib / base - 1) <= 0.15);
      // deno-lint-ignore no-console
      console.log(
        `scaling ${row} ${side}: ${
          perGib.map((p) =>
            `${formatBytes(p.ramBytes)} ${p.perGib.toFixed(0)} ms/GiB`
          ).join(", ")
        }: ${linear ? "linear within ±15%" : "NOT linear within ±15%"}`,
      );
    }
  }
}

async function measureRow(
  ramBytes: number,
  row: Row,
  firmware: string,
): Promise<RowResult> {
  const qemu: Sample[] = [];
  let livemig: Sample[] | "refused" = [];
  const name = `${row} ${formatBytes(ramBytes)}`;
  async function measureQemu(run: number): Promise<void> {
    const sample = await runQemu(ramBytes, row, firmware);
    qemu.push(sample);
    log(`${name} run ${run}: QEMU`, sample);
  }
  async function measureLivemig(run: number): Promise<void> {
    if (livemig === "refused") return;
    const sample = await runLivemig(ramBytes, row);
    if (sample === "refused") {
      livemig = "refused";
      log(`${name} run ${run}: livemig refused`);
      return;
    }
    livemig.push(sample);
    log(`${name} run ${run}: livemig`, sample);
  }
  // Memory a process just freed is faster to touch again than memory never
  // touched (on a virtual machine, the host backs it lazily): whoever runs
  // second gets the first's. Alternate, so that neither always does.
  for (let run = 1; run <= runs; run++) {
    if (run % 2 === 1) {
      await measureQemu(run);
      await measureLivemig(run);
    } else {
      await measureLivemig(run);
      await measureQemu(run);
    }
  }
  return { row, ramBytes, qemu, livemig };
}

function log(what: string, sample?: Sample): void {
  const detail = sample === undefined
    ? ""
    : `: total-time ${sample.totalMs.toFixed(0)} ms, both done ${
      sample.wallMs.toFixed(0)
    } ms, ${sample.normal} normal + ${sample.zero} zero pages, peak RSS ${
      mib(sample.sourceHwm)
    } / ${mib(sample.destinationHwm)} MiB`;
  // deno-lint-ignore no-console
  console.error(`${what}${detail}`);
}

const skip = qemuSkipReason();
if (skip !== undefined) {
  // deno-lint-ignore no-console
  console.log(`skipped: ${skip}`);
} else {
  const dir = await Deno.makeTempDir({ prefix: "livemig-vs-qemu-" });
  try {
    const results: RowResult[] = [];
    for (const ramBytes of sizes) {
      await Deno.mkdir(`${dir}/${ramBytes}`);
      const firmware = await buildFirmware({
        IDLE: true,
        PATTERN_START,
        PATTERN_PAGES: (patternEnd(ramBytes) - PATTERN_START) / 4096,
      }, `${dir}/${ramBytes}`);
      for (const row of rows) {
        results.push(await measureRow(ramBytes, row, firmware));
      }
    }
    printTable(results);
    if (sizes.length > 1) printScaling(results);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
