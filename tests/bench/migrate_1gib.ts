/**
 * A 1 GiB live migration between two `cli.ts` processes over loopback TCP,
 * timed from outside:
 *
 * ```
 * cli.ts incoming tcp:127.0.0.1:0                          (destination)
 * cli.ts migrate tcp:127.0.0.1:PORT --ram 1GiB --workload fill
 *        -p max-bandwidth=100GiB/s --json                   (source)
 * ```
 *
 * Every 5 ms the script samples both processes' /proc/PID/status (VmRSS,
 * VmHWM), and prints per run:
 *
 * - the source's own `total-time` (migrate() from start to completed, its
 *   `setup-time` and `downtime`), and the throughput that makes;
 * - the destination's loading as its resident set shows it: from the first
 *   sample 32 MiB above its idle size to the first one holding 99% of the
 *   guest RAM more (±5 ms), and the rate over it;
 * - each process's wall time, and what of it came after the migration
 *   (both ends hash all of RAM with SHA-256 once it completed);
 * - each process's peak RSS (VmHWM) next to the guest RAM.
 *
 * Run (Deno lets a process read another's /proc files only with -A):
 *   deno run -A tests/bench/migrate_1gib.ts [--runs 3] [--ram 1GiB]
 *     [--max-bandwidth 100GiB/s] [--profile DIR] [--cli PATH]
 *     [--deno-arg FLAG]...
 *
 * `--profile DIR` runs both ends with `--cpu-prof` and writes their V8 CPU
 * profiles to DIR/source and DIR/destination; each `--deno-arg` is passed
 * to both `deno run` commands (e.g. `--v8-flags=...`, a permission), and
 * each `--cli-arg` to both CLI commands (e.g. `--no-hugepages` for plain
 * memory: both ends are given `--allow-ffi`, as the README's alias does, so
 * guest RAM is on transparent huge pages by default). `--tls` runs both
 * over TLS with x509 client certificates (`--tls-creds DIR`, made with
 * openssl).
 */
import { parseArgs } from "node:util";
import { parseSize } from "../../mod.ts";
import { createTlsCredentials } from "../_helpers/tls_certs.ts";

const MIB = 1 << 20;
const SAMPLE_MS = 5;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    runs: { type: "string", default: "3" },
    ram: { type: "string", default: "1GiB" },
    "max-bandwidth": { type: "string", default: "100GiB/s" },
    profile: { type: "string" },
    cli: { type: "string" },
    "deno-arg": { type: "string", multiple: true },
    "cli-arg": { type: "string", multiple: true },
    tls: { type: "boolean", default: false },
  },
});
const ramBytes = parseSize(values.ram, "--ram");
const cli = values.cli ?? new URL("../../cli.ts", import.meta.url).pathname;

/** What the sampler saw of one process. */
interface ProcessSamples {
  /** The first VmRSS seen. */
  idleRss: number | undefined;
  peakRss: number;
  hwm: number;
  /** When VmRSS first grew by 32 MiB, and by 99% of the guest RAM. */
  loadStart: number | undefined;
  loadEnd: number | undefined;
}

function readStatus(
  pid: number,
  samples: ProcessSamples,
  now: number,
  ramBytes: number,
): void {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return; // it has ended
    throw error;
  }
  const rssMatch = /VmRSS:\s+(\d+) kB/.exec(text);
  const hwmMatch = /VmHWM:\s+(\d+) kB/.exec(text);
  if (hwmMatch) samples.hwm = Math.max(samples.hwm, Number(hwmMatch[1]) * 1024);
  if (!rssMatch) return;
  const rss = Number(rssMatch[1]) * 1024;
  samples.idleRss ??= rss;
  samples.peakRss = Math.max(samples.peakRss, rss);
  if (rss > samples.idleRss + 32 * MIB) samples.loadStart ??= now;
  if (rss >= samples.idleRss + 0.99 * ramBytes) samples.loadEnd ??= now;
}

function newSamples(): ProcessSamples {
  return {
    idleRss: undefined,
    peakRss: 0,
    hwm: 0,
    loadStart: undefined,
    loadEnd: undefined,
  };
}

/**
 * Collects a process's output, and resolves `address` once a line says
 * where the destination listens (on stdout or stderr, as versions differ).
 */
function watchOutput(stream: ReadableStream<Uint8Array>): {
  text: Promise<string>;
  address: Promise<string | undefined>;
} {
  const address = Promise.withResolvers<string | undefined>();
  const text = (async () => {
    let all = "";
    for await (const part of stream.pipeThrough(new TextDecoderStream())) {
      all += part;
      const match = /waiting for a migration at (\S+)/.exec(all);
      if (match) address.resolve(match[1]!);
    }
    address.resolve(undefined);
    return all;
  })();
  return { text, address: address.promise };
}

function denoArgs(side: "source" | "destination"): string[] {
  const args = [
    "run",
    "--allow-net=127.0.0.1",
    "--allow-read",
    "--allow-ffi", // as the README's alias: huge pages by default
    ...values["deno-arg"] ?? [],
  ];
  if (values.profile !== undefined) {
    args.push("--cpu-prof", `--cpu-prof-dir=${values.profile}/${side}`);
  }
  return args;
}

async function runOnce(run: number): Promise<void> {
  const destination = new Deno.Command(Deno.execPath(), {
    args: [
      ...denoArgs("destination"),
      cli,
      "incoming",
      "tcp:127.0.0.1:0",
      ...values["cli-arg"] ?? [],
      ...tlsArgs,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const destinationStart = performance.now();
  const destinationOut = watchOutput(destination.stdout);
  const destinationErr = watchOutput(destination.stderr);
  const address = await Promise.race([
    destinationOut.address,
    destinationErr.address,
  ]) ?? await destinationOut.address ?? await destinationErr.address;
  if (address === undefined) {
    throw new Error(
      `Cannot start the destination: ${await destinationOut
        .text}${await destinationErr.text}`,
    );
  }

  const start = performance.now();
  const source = new Deno.Command(Deno.execPath(), {
    args: [
      ...denoArgs("source"),
      cli,
      "migrate",
      address,
      "--ram",
      values.ram,
      "--workload",
      "fill",
      "-p",
      `max-bandwidth=${values["max-bandwidth"]}`,
      "--json",
      ...values["cli-arg"] ?? [],
      ...tlsArgs,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const sourceText = new Response(source.stdout).text();
  const sourceErr = new Response(source.stderr).text();

  const src = newSamples();
  const dst = newSamples();
  let sourceEnd: number | undefined;
  let destinationEnd: number | undefined;
  source.status.then(() => sourceEnd = performance.now());
  destination.status.then(() => destinationEnd = performance.now());
  while (sourceEnd === undefined || destinationEnd === undefined) {
    const now = performance.now();
    if (sourceEnd === undefined) readStatus(source.pid, src, now, ramBytes);
    if (destinationEnd === undefined) {
      readStatus(destination.pid, dst, now, ramBytes);
    }
    await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
  }
  const [sourceStatus, destinationStatus] = await Promise.all([
    source.status,
    destination.status,
  ]);
  if (!sourceStatus.success || !destinationStatus.success) {
    throw new Error(
      `Cannot complete the migration: source exit ${sourceStatus.code}: ${await sourceErr}; destination exit ${destinationStatus.code}: ${await destinationErr
        .text}`,
    );
  }
  const info = JSON.parse((await sourceText).trim().split("\n").at(-1)!);
  await destinationOut.text;
  const totalMs: number = info["total-time"];
  const transferred: number = info.ram.transferred;
  const loadStart = dst.loadStart ?? start;
  const loadEnd = dst.loadEnd ?? start;
  const loadMs = loadEnd - loadStart;
  const lines = [
    `run ${run}: ${
      (transferred / MIB).toFixed(0)
    } MiB sent, ${info.ram.normal} normal + ${info.ram.duplicate} zero pages`,
    `  source total-time ${totalMs} ms (setup ${
      info["setup-time"]
    } ms, downtime ${info.downtime} ms): ${
      (transferred / 1e6 / totalMs).toFixed(2)
    } GB/s`,
    `  destination loads RAM in ${loadMs.toFixed(0)} ms: ${
      (ramBytes / 1e6 / loadMs).toFixed(2)
    } GB/s; starts ${(loadStart - start).toFixed(0)} ms after the source`,
    `  wall: source ${(sourceEnd - start).toFixed(0)} ms (${
      (sourceEnd - loadEnd).toFixed(0)
    } after the destination loaded RAM), destination ${
      (destinationEnd - destinationStart).toFixed(0)
    } ms (${(destinationEnd - loadEnd).toFixed(0)} after)`,
    `  peak RSS (VmHWM): source ${
      (src.hwm / MIB).toFixed(0)
    } MiB, destination ${(dst.hwm / MIB).toFixed(0)} MiB; guest RAM ${
      (ramBytes / MIB).toFixed(0)
    } MiB`,
  ];
  // deno-lint-ignore no-console
  console.log(lines.join("\n"));
}

await using tls = values.tls ? await createTlsCredentials() : undefined;
const tlsArgs = tls === undefined ? [] : ["--tls-creds", tls.dir];
for (let run = 1; run <= Number(values.runs); run++) await runOnce(run);
