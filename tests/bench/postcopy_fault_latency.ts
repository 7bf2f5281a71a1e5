/**
 * Postcopy fault latency: how long a destination access to a missing page
 * waits until the page is in place, with the background copy running at
 * full speed (`max-postcopy-bandwidth` 0), with and without
 * `postcopy-preempt`.
 *
 * A livemig source and destination run in this process over loopback
 * TCP. The guest (256 MiB by default, filled with seeded data, idle) is
 * switched to postcopy before its first pass, so nearly every page is
 * missing on the destination. From the destination side the script then
 * touches random missing pages one after another
 * (`guest.memory.waitForPage()`) and times each from the access until the
 * page is in place: the page request goes back on the return path, the
 * source queues it ahead of the background copy (or sends it on the
 * preempt connection) and the destination's loader places it.
 *
 * Prints per mode: count, average, p50, p90, p99, max (ms), the share of
 * faults over 1 ms, how many pages the background copy brought meanwhile,
 * and the event-loop lag seen by a 1 ms timer during the faults (which
 * bounds what any page can do better).
 *
 * With `--source process` the source is a separate `cli.ts migrate`
 * process (`--postcopy-after 0`), so the two ends no longer share one
 * event loop; that needs `--allow-run --allow-read` as well.
 *
 * Run: deno run --allow-net=127.0.0.1 --allow-sys=loadavg
 *   tests/bench/postcopy_fault_latency.ts [--ram MIB] [--faults N]
 *   [--runs N] [--preempt on|off|both] [--source same|process] [--json]
 */

import { parseArgs } from "node:util";
import {
  connectTransport,
  DestinationMigration,
  listenTransport,
  SeededRandom,
  SimulatedGuest,
  SourceMigration,
} from "../../mod.ts";

const MIB = 1024 * 1024;

/** What one run measured. */
interface RunResult {
  preempt: boolean;
  /** Fault latencies in ms, in the order they happened. */
  faultsMs: number[];
  /** Pages still missing when the faults started. */
  missingAtStart: number;
  /** Pages still missing when the faults ended. */
  missingAtEnd: number;
  /** Milliseconds from the first fault to the last one's end. */
  faultingMs: number;
  /** Timer lags (ms beyond the asked 1 ms) seen while faulting. */
  lagMs: number[];
  /** Milliseconds from postcopy-active to completed on the destination. */
  postcopyMs: number;
}

const CLI = new URL("../../cli.ts", import.meta.url).pathname;

/** A migration source: this process, or a `cli.ts migrate` child. */
interface Source {
  /** Resolves when the source finished, with its final status. */
  done: Promise<string>;
  stop(): void;
}

function startInProcess(
  ramMiB: number,
  preempt: boolean,
  seed: number,
  address: string,
): Source {
  const guest = new SimulatedGuest({
    ramBytes: ramMiB * MIB,
    workload: { kind: "idle" },
    prefill: true,
    seed,
  });
  const source = new SourceMigration(guest, {
    capabilities: { "postcopy-ram": true, "postcopy-preempt": preempt },
    parameters: {
      "max-bandwidth": 0,
      "max-postcopy-bandwidth": 0,
    },
    // Postcopy at the first decision, before any page was sent.
    postcopyAfterPasses: 0,
  });
  const done = (async () => {
    const outgoing = await connectTransport(address);
    await source.migrate(outgoing, {
      connect: () => connectTransport(address),
    }).catch(() => {});
    return source.status;
  })();
  return { done, stop: () => guest.pause() };
}

function startProcess(
  ramMiB: number,
  preempt: boolean,
  seed: number,
  address: string,
): Source {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      CLI,
      "migrate",
      address,
      "--ram",
      `${ramMiB}MiB`,
      "--prefill",
      "--seed",
      String(seed),
      "-c",
      "postcopy-ram=on",
      "-c",
      `postcopy-preempt=${preempt ? "on" : "off"}`,
      "-p",
      "max-bandwidth=0",
      "-p",
      "max-postcopy-bandwidth=0",
      "--postcopy-after",
      "0",
      "--json",
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const done = (async () => {
    const [status, stdout] = await Promise.all([
      child.status,
      new Response(child.stdout).text(),
    ]);
    const last = stdout.trimEnd().split("\n").at(-1) ?? "";
    try {
      return (JSON.parse(last) as { status: string }).status;
    } catch {
      return `exit ${status.code}`;
    }
  })();
  return {
    done,
    stop: () => {
      try {
        child.kill();
      } catch {
        // already ended
      }
    },
  };
}

async function run(
  ramMiB: number,
  faults: number,
  preempt: boolean,
  seed: number,
  separate: boolean,
): Promise<RunResult> {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const destination = new DestinationMigration({
    postcopy: true,
    preempt,
    events: true,
  });
  const active = new Promise<number>((resolve) => {
    destination.addEventListener("migration", (event) => {
      if ((event as CustomEvent).detail.status === "postcopy-active") {
        resolve(performance.now());
      }
    });
  });
  const source = (separate ? startProcess : startInProcess)(
    ramMiB,
    preempt,
    seed,
    listener.address,
  );
  try {
    const incoming = await listener.accept();
    const received = destination.incoming(incoming, {
      accept: () => listener.accept(),
    });
    received.catch(() => {});
    const activeAt = await active;
    const memory = destination.guest!.memory;
    const pages = memory.blocks[0]!.pageCount;
    const random = new SeededRandom(seed);
    const countMissing = () => {
      let missing = 0;
      for (let page = 0; page < pages; page++) {
        if (memory.isMissing(0, page)) missing++;
      }
      return missing;
    };
    const missingAtStart = countMissing();
    // A 1 ms timer that notes how late it fires: the event loop's lag.
    const lagMs: number[] = [];
    let ticking = true;
    const tick = (asked: number) => {
      lagMs.push(performance.now() - asked - 1);
      if (ticking) {
        const now = performance.now();
        setTimeout(() => tick(now), 1);
      }
    };
    const firstTick = performance.now();
    setTimeout(() => tick(firstTick), 1);
    const faultsMs: number[] = [];
    const started = performance.now();
    for (let tries = 0; faultsMs.length < faults && tries < 50 * faults;) {
      const page = random.nextInt(pages);
      tries++;
      if (!memory.isMissing(0, page)) continue;
      const at = performance.now();
      await memory.waitForPage(0, page);
      faultsMs.push(performance.now() - at);
    }
    const faultingMs = performance.now() - started;
    ticking = false;
    const missingAtEnd = countMissing();
    const [sourceStatus] = await Promise.all([
      source.done,
      received.catch(() => {}),
    ]);
    const postcopyMs = performance.now() - activeAt;
    if (sourceStatus !== "completed" || destination.status !== "completed") {
      throw new Error(
        `Cannot measure: the migration ended as ${sourceStatus} / ${destination.status}`,
      );
    }
    return {
      preempt,
      faultsMs,
      missingAtStart,
      missingAtEnd,
      faultingMs,
      lagMs,
      postcopyMs,
    };
  } finally {
    source.stop();
    destination.guest?.pause();
    await listener.close();
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const index = Math.min(
    sorted.length - 1,
    Math.max(0, Math.ceil(p / 100 * sorted.length) - 1),
  );
  return sorted[index]!;
}

function summary(values: number[]) {
  const sorted = values.toSorted((a, b) => a - b);
  const sum = values.reduce((total, value) => total + value, 0);
  return {
    count: values.length,
    avg: values.length ? sum / values.length : NaN,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted.at(-1) ?? NaN,
  };
}

function loadAverage(): string {
  try {
    return Deno.loadavg().map((load) => load.toFixed(2)).join(" ");
  } catch {
    return "unknown (needs --allow-sys=loadavg)";
  }
}

function print(line: string): void {
  // deno-lint-ignore no-console
  console.log(line);
}

function formatMs(value: number): string {
  return value.toFixed(3).padStart(9);
}

async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      ram: { type: "string", default: "256" },
      faults: { type: "string", default: "1000" },
      runs: { type: "string", default: "3" },
      preempt: { type: "string", default: "both" },
      source: { type: "string", default: "same" },
      json: { type: "boolean", default: false },
    },
  });
  const ramMiB = Number(values.ram);
  const faults = Number(values.faults);
  const runs = Number(values.runs);
  const modes = values.preempt === "both"
    ? [false, true]
    : [values.preempt === "on"];
  const results: RunResult[] = [];
  const before = loadAverage();
  for (let i = 0; i < runs; i++) {
    for (const preempt of modes) {
      results.push(
        await run(ramMiB, faults, preempt, 7 + i, values.source === "process"),
      );
    }
  }
  const after = loadAverage();
  if (values.json) {
    print(JSON.stringify({
      ramMiB,
      faults,
      runs,
      load: { before, after },
      modes: modes.map((preempt) => {
        const mine = results.filter((r) => r.preempt === preempt);
        return {
          preempt,
          faults: summary(mine.flatMap((r) => r.faultsMs)),
          lag: summary(mine.flatMap((r) => r.lagMs)),
        };
      }),
    }));
    return;
  }
  print(
    `postcopy fault latency: ${ramMiB} MiB guest (filled), ${runs} run(s) per mode, up to ${faults} faults per run, loopback TCP, source ${
      values.source === "process" ? "in its own process" : "in this process"
    }`,
  );
  print(
    `load average (1/5/15 min): ${before} before, ${after} after; ${navigator.hardwareConcurrency} CPUs`,
  );
  print(
    "mode          count   avg ms    p50 ms    p90 ms    p99 ms    max ms  >1ms | timer lag p99/max ms | missing at start→end, faulting ms, postcopy ms",
  );
  for (const preempt of modes) {
    const mine = results.filter((r) => r.preempt === preempt);
    const all = mine.flatMap((r) => r.faultsMs);
    const s = summary(all);
    const slow = all.filter((ms) => ms > 1).length / Math.max(1, all.length);
    const lag = summary(mine.flatMap((r) => r.lagMs));
    const detail = mine.map((r) =>
      `${r.missingAtStart}→${r.missingAtEnd}, ${r.faultingMs.toFixed(0)}, ${
        r.postcopyMs.toFixed(0)
      }`
    ).join("; ");
    print(
      `${preempt ? "preempt on " : "preempt off"}  ${
        String(s.count).padStart(6)
      }${formatMs(s.avg)} ${formatMs(s.p50)} ${formatMs(s.p90)} ${
        formatMs(s.p99)
      } ${formatMs(s.max)} ${(slow * 100).toFixed(0).padStart(3)}% | ${
        lag.p99.toFixed(2)
      } / ${lag.max.toFixed(2)} | ${detail}`,
    );
  }
}

if (import.meta.main) await main(Deno.args);
