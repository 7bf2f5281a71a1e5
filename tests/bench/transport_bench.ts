/**
 * Transport throughput. Each benchmark moves the number of bytes in its name
 * per iteration, one way, and times only the transfer (from the first write
 * until the reader has seen the end and acknowledged it), so
 * MB/s = bytes per iteration / 1e6 / (time per iteration in s).
 *
 * Run: deno bench --allow-read --allow-write --allow-run --allow-net=127.0.0.1 tests/bench/transport_bench.ts
 * (add `unix:/tmp/livemig-bench.sock` to --allow-net for the Unix socket one).
 *
 * The two-process benchmark runs this file again as the receiving peer:
 * `deno run --allow-net=127.0.0.1 transport_bench.ts --peer tcp:HOST:PORT [byob]`.
 */
import { createMemoryTransportPair } from "../../lib/transport/memory_transport.ts";
import { spawnExecTransport } from "../../lib/transport/exec_transport.ts";
import {
  connectTransport,
  listenTransport,
} from "../../lib/transport/open_transport.ts";
import type { Transport } from "../../lib/transport/transport.ts";

const GIB = 1 << 30;
const MIB = 1 << 20;
const UNIX_SOCKET = "/tmp/livemig-bench.sock";

if (Deno.args[0] === "--peer") {
  await runPeer(Deno.args[1]!, Deno.args[2] === "byob" ? "byob" : "default");
} else {
  registerBenchmarks();
}

function registerBenchmarks(): void {
  const canRun = Deno.permissions.querySync({ name: "run" }).state ===
    "granted";
  const canUseUnix = Deno.permissions.querySync({
    name: "net",
    host: `unix:${UNIX_SOCKET}`,
  }).state === "granted";

  Deno.bench({
    name: "memory pair, 1 GiB in 1 MiB chunks",
    group: "transport",
    n: 5,
    warmup: 1,
    async fn(b) {
      const [a, z] = createMemoryTransportPair();
      await timeTransfer(b, a, z, GIB, MIB, "default");
    },
  });

  Deno.bench({
    name: "tcp in one process, 1 GiB in 1 MiB chunks",
    group: "transport",
    baseline: true,
    n: 5,
    warmup: 1,
    async fn(b) {
      await withSocketPair(
        "tcp:127.0.0.1:0",
        (a, z) => timeTransfer(b, a, z, GIB, MIB, "default"),
      );
    },
  });

  Deno.bench({
    name: "tcp in one process, 1 GiB in 1 MiB chunks, BYOB reader",
    group: "transport",
    n: 5,
    warmup: 1,
    async fn(b) {
      await withSocketPair(
        "tcp:127.0.0.1:0",
        (a, z) => timeTransfer(b, a, z, GIB, MIB, "byob"),
      );
    },
  });

  Deno.bench({
    name: "tcp in one process, 256 MiB in 4 KiB chunks",
    group: "transport",
    n: 5,
    warmup: 1,
    async fn(b) {
      await withSocketPair(
        "tcp:127.0.0.1:0",
        (a, z) => timeTransfer(b, a, z, 256 * MIB, 4096, "default"),
      );
    },
  });

  Deno.bench({
    name: "unix socket in one process, 1 GiB in 1 MiB chunks",
    group: "transport",
    ignore: !canUseUnix,
    n: 5,
    warmup: 1,
    async fn(b) {
      await withSocketPair(
        `unix:${UNIX_SOCKET}`,
        (a, z) => timeTransfer(b, a, z, GIB, MIB, "default"),
      );
    },
  });

  for (const reader of ["default", "byob"] as const) {
    Deno.bench({
      name: `tcp between two processes, 1 GiB in 1 MiB chunks${
        reader === "byob" ? ", BYOB reader" : ""
      }`,
      group: "transport",
      ignore: !canRun,
      n: 5,
      warmup: 1,
      async fn(b) {
        const listener = await listenTransport("tcp:127.0.0.1:0");
        const child = new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--allow-net=127.0.0.1",
            import.meta.filename!,
            "--peer",
            listener.address,
            reader,
          ],
          stdout: "null",
        }).spawn();
        try {
          const accepting = listener.accept();
          accepting.catch(() => {});
          const transport = await Promise.race([
            accepting,
            child.status.then((status) => {
              throw new Error(
                `Peer exited with code ${status.code} before connecting`,
              );
            }),
          ]);
          try {
            b.start();
            await send(transport, GIB, MIB);
            const ack = new Uint8Array(
              await new Response(transport.readable).arrayBuffer(),
            );
            b.end();
            checkAck(ack, GIB);
          } finally {
            await transport.close();
          }
        } finally {
          await listener.close();
          await child.status;
        }
      },
    });
  }

  Deno.bench({
    name: "exec:cat > /dev/null pipe, 1 GiB in 1 MiB chunks",
    group: "transport",
    ignore: !canRun,
    n: 5,
    warmup: 1,
    async fn(b) {
      const transport = spawnExecTransport("cat > /dev/null");
      try {
        b.start();
        await send(transport, GIB, MIB);
        b.end();
      } finally {
        await transport.close();
      }
    },
  });
}

/** Listens on `uri`, connects to it, and runs `fn` with both ends. */
async function withSocketPair(
  uri: string,
  fn: (a: Transport, z: Transport) => Promise<void>,
): Promise<void> {
  const listener = await listenTransport(uri);
  try {
    const [a, z] = await Promise.all([
      connectTransport(listener.address),
      listener.accept(),
    ]);
    try {
      await fn(a, z);
    } finally {
      await Promise.all([a.close(), z.close()]);
    }
  } finally {
    await listener.close();
  }
}

/** Times sending `total` bytes from `a` and reading them at `z`. */
async function timeTransfer(
  b: Deno.BenchContext,
  a: Transport,
  z: Transport,
  total: number,
  chunkBytes: number,
  reader: "default" | "byob",
): Promise<void> {
  b.start();
  const [, received] = await Promise.all([
    send(a, total, chunkBytes),
    reader === "byob" ? drainByob(z.readable) : drain(z.readable),
  ]);
  b.end();
  if (received !== total) {
    throw new Error(`Received ${received} of ${total} bytes`);
  }
}

/** Writes `total` bytes in chunks honouring backpressure, then closes. */
async function send(
  transport: Transport,
  total: number,
  chunkBytes: number,
): Promise<void> {
  // One buffer reused for every chunk: sockets and pipes are done with a
  // chunk once its write resolved; the memory pair hands it over as is,
  // which is fine because nobody looks at the bytes.
  const chunk = new Uint8Array(chunkBytes).fill(0x5a);
  const writer = transport.writable.getWriter();
  for (let sent = 0; sent < total; sent += chunkBytes) {
    await writer.ready;
    writer.write(chunk).catch(() => {});
  }
  await writer.close();
}

async function drain(readable: ReadableStream<Uint8Array>): Promise<number> {
  let total = 0;
  for await (const chunk of readable) total += chunk.byteLength;
  return total;
}

async function drainByob(
  readable: ReadableStream<Uint8Array>,
): Promise<number> {
  const reader = readable.getReader({ mode: "byob" });
  let buffer: Uint8Array<ArrayBuffer> = new Uint8Array(MIB);
  let total = 0;
  while (true) {
    const { done, value } = await reader.read(buffer);
    if (done) return total;
    total += value.byteLength;
    buffer = new Uint8Array(value.buffer);
  }
}

function checkAck(ack: Uint8Array, expected: number): void {
  const received = ack.byteLength === 8
    ? Number(new DataView(ack.buffer).getBigUint64(0))
    : -1;
  if (received !== expected) {
    throw new Error(`Peer received ${received} of ${expected} bytes`);
  }
}

/** The receiving peer: reads to the end, reports the count, and exits. */
async function runPeer(
  address: string,
  reader: "default" | "byob",
): Promise<void> {
  const transport = await connectTransport(address);
  try {
    const received = reader === "byob"
      ? await drainByob(transport.readable)
      : await drain(transport.readable);
    const ack = new Uint8Array(8);
    new DataView(ack.buffer).setBigUint64(0, BigInt(received));
    const writer = transport.writable.getWriter();
    await writer.write(ack);
    await writer.close();
  } finally {
    await transport.close();
  }
}
