/**
 * What the first write to fresh memory costs, the cost a destination pays
 * for every page of a new guest's RAM, and what can lower it:
 *
 * - `plain`: a fresh `Uint8Array`, one byte written per 4 KiB page;
 * - `worker`: the same on a SharedArrayBuffer, two threads touching one
 *   half each (pre-faulting from a Worker while the main thread loads);
 * - `hugepage`: `madvise(MADV_HUGEPAGE)` on the array first (through FFI),
 *   so that the kernel maps 2 MiB pages where it can (transparent huge
 *   pages in `madvise` mode, as QEMU asks for its guest RAM);
 * - `populate`: `madvise(MADV_POPULATE_WRITE)` (Linux 5.14+), which
 *   faults the whole range in from the kernel, without a trap per page;
 * - `hugepage+populate`: both.
 *
 * Each case runs in a fresh process (memory a process freed before would
 * be reused and show nothing). Prints the time to allocate, advise and
 * touch, and how much of the memory ended up on huge pages.
 *
 * Run: deno run -A tests/bench/first_touch_bench.ts [SIZE_MIB] [runs]
 * (`deno bench` loads it without running anything).
 * (one case: deno run -A tests/bench/first_touch_bench.ts --case NAME SIZE_MIB)
 */

const PAGE = 4096;
const MADV_HUGEPAGE = 14;
const MADV_POPULATE_WRITE = 23;
const CASES = [
  "plain",
  "worker",
  "hugepage",
  "populate",
  "hugepage+populate",
] as const;
type Case = typeof CASES[number];

function touch(bytes: Uint8Array, from: number, to: number): void {
  for (let at = from; at < to; at += PAGE) bytes[at] = 1;
}

function madvise(bytes: Uint8Array, advice: number): void {
  const libc = Deno.dlopen("libc.so.6", {
    madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  });
  try {
    const address = BigInt(
      Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes)),
    );
    const start = (address + BigInt(PAGE - 1)) & ~BigInt(PAGE - 1);
    const length = (BigInt(bytes.byteLength) - (start - address)) &
      ~BigInt(PAGE - 1);
    const result = libc.symbols.madvise(
      Deno.UnsafePointer.create(start),
      length,
      advice,
    );
    if (result !== 0) throw new Error(`Cannot madvise(${advice})`);
  } finally {
    libc.close();
  }
}

function anonHugePages(): number {
  const text = Deno.readTextFileSync("/proc/self/smaps_rollup");
  return Number(/AnonHugePages:\s+(\d+) kB/.exec(text)?.[1] ?? 0) * 1024;
}

async function touchWithWorker(bytes: Uint8Array): Promise<void> {
  const half = Math.floor(bytes.byteLength / 2 / PAGE) * PAGE;
  const source = `self.onmessage = (e) => {
    const bytes = new Uint8Array(e.data.buffer);
    for (let at = e.data.from; at < e.data.to; at += ${PAGE}) bytes[at] = 1;
    self.postMessage("done");
  };`;
  const worker = new Worker(
    `data:text/javascript,${encodeURIComponent(source)}`,
    { type: "module" },
  );
  const done = new Promise((resolve) => worker.onmessage = resolve);
  worker.postMessage({
    buffer: bytes.buffer,
    from: half,
    to: bytes.byteLength,
  });
  touch(bytes, 0, half);
  await done;
  worker.terminate();
}

async function runCase(name: Case, size: number): Promise<string> {
  const start = performance.now();
  const bytes = name === "worker"
    ? new Uint8Array(new SharedArrayBuffer(size))
    : new Uint8Array(size);
  const allocated = performance.now();
  if (name === "hugepage" || name === "hugepage+populate") {
    madvise(bytes, MADV_HUGEPAGE);
  }
  if (name === "populate" || name === "hugepage+populate") {
    madvise(bytes, MADV_POPULATE_WRITE);
  }
  const advised = performance.now();
  if (name === "worker") await touchWithWorker(bytes);
  else touch(bytes, 0, size);
  const end = performance.now();
  return `${name}: ${(size / 1e6 / (end - start)).toFixed(2)} GB/s (alloc ${
    (allocated - start).toFixed(0)
  } ms, madvise ${(advised - allocated).toFixed(0)} ms, touch ${
    (end - advised).toFixed(0)
  } ms; on huge pages ${(anonHugePages() / (1 << 20)).toFixed(0)} MiB)`;
}

if (!import.meta.main) {
  // Under `deno bench` (deno task bench) this script has nothing to
  // register: it times fresh processes, run it with `deno run`.
} else if (Deno.args[0] === "--case") {
  const name = Deno.args[1] as Case;
  // deno-lint-ignore no-console
  console.log(await runCase(name, Number(Deno.args[2]) * (1 << 20)));
} else {
  const sizeMiB = Deno.args[0] ?? "1024";
  const runs = Number(Deno.args[1] ?? "3");
  for (let run = 0; run < runs; run++) {
    for (const name of CASES) {
      const { stdout, success } = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", import.meta.filename!, "--case", name, sizeMiB],
        stderr: "inherit",
      }).output();
      if (!success) throw new Error(`Cannot run case ${name}`);
      // deno-lint-ignore no-console
      console.log(new TextDecoder().decode(stdout).trim());
    }
  }
}
