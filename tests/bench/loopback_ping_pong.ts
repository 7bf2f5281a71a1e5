/**
 * The floor under postcopy's fault latency on this machine: a request of
 * 16 bytes answered by a 4 KiB page between two Deno processes over
 * loopback TCP, with nothing else in between (no streams, no codec), while
 * `--hogs N` other processes keep N CPUs busy: `yes > /dev/null` (a loop
 * of system calls, as a migration's own threads are: socket reads and
 * writes, page faults) or, with `--hog spin`, a pure JS loop. A fault in
 * postcopy makes this round trip once (REQ_PAGES out, the page back); with
 * the background copy at full speed every CPU of a 2-CPU machine is busy,
 * so the `--hogs 2` line is what a fault's wake-ups cost there.
 *
 * Prints p50, p90, p99 and max in ms per hog count.
 *
 * Run: deno run --allow-net=127.0.0.1 --allow-run --allow-read
 *   tests/bench/loopback_ping_pong.ts [--hogs 0,1,2] [--hog yes|spin]
 *   [--count 3000]
 */

import { parseArgs } from "node:util";

const PAGE = 4096;
const REQUEST = 16;

async function serve(): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // deno-lint-ignore no-console
  console.log((listener.addr as Deno.NetAddr).port);
  const conn = await listener.accept();
  listener.close();
  conn.setNoDelay(true);
  const request = new Uint8Array(REQUEST);
  const page = new Uint8Array(PAGE);
  while (true) {
    for (let n = 0; n < REQUEST;) {
      const read = await conn.read(request.subarray(n));
      if (read === null) return conn.close();
      n += read;
    }
    await conn.write(page);
  }
}

function hog(kind: string): Deno.ChildProcess {
  const [command, args] = kind === "spin"
    ? [Deno.execPath(), ["eval", "while (true) {}"]]
    : ["yes", []];
  return new Deno.Command(command, { args, stdout: "null", stderr: "null" })
    .spawn();
}

async function measure(
  count: number,
  hogs: number,
  kind: string,
): Promise<number[]> {
  const busy = Array.from({ length: hogs }, () => hog(kind));
  // Let the hogs get going before measuring.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const server = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net=127.0.0.1", import.meta.filename!, "--serve"],
    stdout: "piped",
  }).spawn();
  try {
    const reader = server.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    const { value } = await reader.read();
    reader.releaseLock();
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: Number(value!.trim()),
    });
    conn.setNoDelay(true);
    const request = new Uint8Array(REQUEST);
    const page = new Uint8Array(PAGE);
    const times: number[] = [];
    for (let i = 0; i < count; i++) {
      const started = performance.now();
      await conn.write(request);
      for (let n = 0; n < PAGE;) n += (await conn.read(page.subarray(n)))!;
      times.push(performance.now() - started);
    }
    conn.close();
    await server.status;
    return times.sort((a, b) => a - b);
  } finally {
    for (const child of busy) child.kill();
    await Promise.all(busy.map((child) => child.status));
  }
}

async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      serve: { type: "boolean", default: false },
      hogs: { type: "string", default: "0,1,2" },
      hog: { type: "string", default: "yes" },
      count: { type: "string", default: "3000" },
    },
  });
  if (values.serve) return await serve();
  const count = Number(values.count);
  const at = (sorted: number[], p: number) =>
    sorted[Math.min(sorted.length - 1, Math.ceil(p / 100 * sorted.length) - 1)]!
      .toFixed(3);
  // deno-lint-ignore no-console
  console.log(
    `loopback round trip (16 B request, 4 KiB answer), ${count} per line`,
  );
  for (const hogs of values.hogs.split(",").map(Number)) {
    const sorted = await measure(count, hogs, values.hog);
    // deno-lint-ignore no-console
    console.log(
      `${hogs} busy CPU(s) (${values.hog}): p50 ${at(sorted, 50)} p90 ${
        at(sorted, 90)
      } p99 ${at(sorted, 99)} max ${sorted.at(-1)!.toFixed(3)} ms`,
    );
  }
}

if (import.meta.main) await main(Deno.args);
