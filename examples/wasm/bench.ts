/**
 * Figures for the README's Wasm section: the demo's steps per second with
 * and without the instrumentation at `--mib` MiB (default 256), then live
 * migrations of the demo between two livemig processes over loopback TCP,
 * with their downtime and total time: precopy at `--precopy-mib` MiB
 * (default 64), postcopy (after one pass) at `--mib` MiB. The demo
 * rewrites its whole second grid every generation; at 256 MiB a pass of
 * precopy takes about as long as a generation on a 2-core machine, so
 * whether precopy alone converges there depends on the machine's load
 * (it did in 7.9 s once, and ran for 10 minutes another time).
 *
 * deno run -A examples/wasm/bench.ts [--mib 256] [--precopy-mib 64] [--seconds 3]
 *   [--steps-only]
 */
import { parseArgs } from "node:util";
import { WasmProgram } from "../../mod.ts";

const { values } = parseArgs({
  options: {
    mib: { type: "string", default: "256" },
    "precopy-mib": { type: "string", default: "64" },
    seconds: { type: "string", default: "3" },
    "steps-only": { type: "boolean", default: false },
  },
});
const mib = Number(values.mib);
const seconds = Number(values.seconds);
const here = new URL("./", import.meta.url);
const wasmPath = new URL("life.wasm", here).pathname;
const cli = new URL("../../cli.ts", here).pathname;
const bytes = await Deno.readFile(wasmPath);
const program = await WasmProgram.compile(bytes);
const encoder = new TextEncoder();
function say(text: string): void {
  Deno.stdout.writeSync(encoder.encode(`${text}\n`));
}

/**
 * Steps per second of each module, measured in alternating slices of
 * 250 ms (so that load from elsewhere hits both alike): the median slice.
 */
function stepsPerSecond(modules: WebAssembly.Module[]): number[] {
  const steps = modules.map((module) => {
    const { exports } = new WebAssembly.Instance(module, {});
    (exports.init as (mib: number) => void)(mib);
    const step = exports.step as (budget: number) => void;
    for (let i = 0; i < 20; i++) step(262144);
    return step;
  });
  const rates: number[][] = modules.map(() => []);
  for (let round = 0; round < seconds * 2; round++) {
    steps.forEach((step, i) => {
      const start = performance.now();
      let count = 0;
      while (performance.now() - start < 250) {
        step(262144);
        count++;
      }
      rates[i]!.push(count / ((performance.now() - start) / 1000));
    });
  }
  return rates.map((list) => list.sort((a, b) => a - b)[list.length >> 1]!);
}

const [plain, instrumented] = stepsPerSecond([
  new WebAssembly.Module(bytes),
  program.module,
]) as [number, number];
say(
  `steps/s at ${mib} MiB (budget 262144 cells): ${plain.toFixed(0)} plain, ${
    instrumented.toFixed(0)
  } instrumented (${((1 - instrumented / plain) * 100).toFixed(1)}% slower)`,
);

async function migrate(
  mode: string,
  extra: { mib: number; incoming: string[]; migrate: string[] },
): Promise<void> {
  const incoming = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      cli,
      "incoming",
      "tcp:127.0.0.1:0",
      "--wasm",
      wasmPath,
      "--json",
      "--progress",
      "off",
      ...extra.incoming,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = incoming.stderr.pipeThrough(new TextDecoderStream())
    .getReader();
  let text = "";
  let address: string | undefined;
  while (address === undefined) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`incoming ended: ${text}`);
    text += value;
    address = /waiting for a migration at (\S+)/.exec(text)?.[1];
  }
  void (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  const source = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      cli,
      "migrate",
      address,
      "--wasm",
      wasmPath,
      "--init",
      String(mib),
      "--json",
      "-p",
      "max-bandwidth=4GiB/s",
      ...extra.migrate,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  await incoming.status;
  const out = new TextDecoder().decode(source.stdout).trim().split("\n").at(
    -1,
  )!;
  const info = JSON.parse(out);
  say(
    `${mode} at ${extra.mib} MiB: ${info.status}, downtime ${info.downtime} ms, total ${
      info["total-time"]
    } ms, ${info.ram?.["dirty-sync-count"]} syncs, ${
      ((info.ram?.transferred ?? 0) / (1 << 20)).toFixed(0)
    } MiB sent`,
  );
}

if (values["steps-only"]) Deno.exit(0);
await migrate("precopy", {
  mib: Number(values["precopy-mib"]),
  incoming: [],
  migrate: [],
});
const postcopy = ["-c", "postcopy-ram=on"];
await migrate("postcopy", {
  mib,
  incoming: postcopy,
  migrate: [...postcopy, "--postcopy-after", "1"],
});
