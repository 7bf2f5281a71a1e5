/**
 * The destination's multifd channels run in workers: pages land in shared
 * guest RAM while the main thread is busy, pages of memory that is not
 * shared come back to be placed, and a worker's decoding error reaches the
 * main thread with its class, its offset and the channel it came from.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  concatBytes,
  encodeMultifdInitialPacket,
  encodeMultifdPacket,
  MigrationProtocolError,
  MULTIFD_FLAG,
  type RamPageRecord,
  StreamFormatError,
  type Transport,
  UnexpectedEndOfStreamError,
} from "../../mod.ts";
import { MultifdReceiver } from "../../lib/migration/_multifd_receive.ts";
import type { SharedRamBlock } from "../../lib/migration/_multifd_channel_worker.ts";

const PAGE = 4096;
const HEADER = 320 + 8 * 128;
const ZERO_UUID = "00000000-0000-0000-0000-000000000000";

/**
 * A channel connection fed by the test: `push()` queues chunks, `drained`
 * resolves once the reader asked for more than was pushed (every chunk
 * pushed so far has been taken and handed on).
 */
function feed(description = "test channel") {
  const queue: Uint8Array[] = [];
  let ended = false;
  let waiting: (() => void) | undefined;
  let drained = Promise.withResolvers<void>();
  const readable = new ReadableStream<Uint8Array>({
    async pull(controller) {
      while (queue.length === 0 && !ended) {
        drained.resolve();
        await new Promise<void>((resolve) => waiting = resolve);
      }
      const chunk = queue.shift();
      if (chunk === undefined) controller.close();
      else controller.enqueue(chunk);
    },
  }, { highWaterMark: 0 });
  const transport: Transport = {
    readable,
    writable: new WritableStream(),
    description,
    close: () => Promise.resolve(),
  };
  return {
    transport,
    push(...chunks: Uint8Array[]): Promise<void> {
      drained = Promise.withResolvers<void>();
      queue.push(...chunks);
      waiting?.();
      return drained.promise;
    },
    end(): void {
      ended = true;
      waiting?.();
    },
  };
}

function initial(channelId: number): Uint8Array {
  return encodeMultifdInitialPacket({
    type: "multifd-initial",
    uuid: ZERO_UUID,
    channelId,
  });
}

function packet(
  offsets: number[],
  data: Uint8Array,
  flags: number = MULTIFD_FLAG.NOCOMP,
): Uint8Array {
  return encodeMultifdPacket({
    type: "multifd-packet",
    flags: offsets.length > 0 ? flags : flags & MULTIFD_FLAG.SYNC,
    pagesAlloc: 128,
    nextPacketSize: data.byteLength,
    packetNum: 1n,
    ramBlock: offsets.length > 0 ? "pc.ram" : "",
    offsets,
    data,
  });
}

const SYNC = () => packet([], new Uint8Array(0), MULTIFD_FLAG.SYNC);

function receiver(
  transports: Transport[],
  memory: SharedRamBlock[] | undefined,
  place: (record: RamPageRecord) => void = () => {
    throw new Error("a page came to the main thread");
  },
) {
  const counts = { placed: 0, bytes: 0 };
  const multifd = new MultifdReceiver(transports, {
    settings: {
      channels: transports.length,
      compression: "none",
      connectTimeoutMs: 1000,
    },
    place,
    count: (bytes) => counts.bytes += bytes,
    memory: () => memory,
    placed: (pages) => counts.placed += pages,
  });
  multifd.failure.catch(() => {});
  return { multifd, counts };
}

Deno.test("multifd channel workers place pages in shared RAM while the main thread is blocked", async () => {
  const ram = new Uint8Array(new SharedArrayBuffer(16 * PAGE));
  const channel = feed();
  const { multifd, counts } = receiver([channel.transport], [{
    idstr: "pc.ram",
    bytes: ram,
  }]);
  try {
    await channel.push(initial(0), SYNC());
    await multifd.sync(); // the setup round's RAM EOS
    const pages = new Uint8Array(3 * PAGE);
    for (let i = 0; i < 3; i++) pages.fill(0x41 + i, i * PAGE, (i + 1) * PAGE);
    await channel.push(packet([5 * PAGE, 2 * PAGE, 9 * PAGE], pages));
    // Every chunk has gone to the worker. The main thread now spins
    // without yielding: if pages were placed here, none could land.
    const deadline = performance.now() + 10_000;
    const landed = () =>
      Atomics.load(ram, 5 * PAGE + PAGE - 1) === 0x41 &&
      Atomics.load(ram, 2 * PAGE + PAGE - 1) === 0x42 &&
      Atomics.load(ram, 9 * PAGE + PAGE - 1) === 0x43;
    while (!landed() && performance.now() < deadline) { /* spin */ }
    assert.ok(landed(), "the pages landed while the main thread was blocked");
    assert.equal(ram[5 * PAGE], 0x41);
    assert.equal(ram[9 * PAGE + 7], 0x43);
    assert.equal(ram[0], 0);
    await channel.push(SYNC());
    await multifd.sync();
    assert.equal(counts.placed, 3);
    assert.equal(counts.bytes, 64 + 3 * HEADER + 3 * PAGE);
  } finally {
    await multifd.close();
  }
});

Deno.test("multifd channel workers hand pages back when RAM is not shared", async () => {
  const channel = feed();
  const placed: [string, number, number][] = [];
  const { multifd, counts } = receiver(
    [channel.transport],
    undefined,
    (record) => placed.push([record.block, record.offset, record.data[0]!]),
  );
  try {
    await channel.push(initial(0), SYNC());
    await multifd.sync();
    const pages = new Uint8Array(2 * PAGE);
    pages.fill(7, 0, PAGE);
    pages.fill(9, PAGE);
    await channel.push(packet([3 * PAGE, PAGE], pages), SYNC());
    await multifd.sync();
    assert.deepEqual(placed, [["pc.ram", 3 * PAGE, 7], ["pc.ram", PAGE, 9]]);
    assert.equal(counts.placed, 0);
  } finally {
    await multifd.close();
  }
});

Deno.test("a corrupt multifd packet fails with a StreamFormatError naming its channel and offset", async () => {
  const channel = feed("tcp:127.0.0.1:4444 (peer 127.0.0.1:5555)");
  const { multifd } = receiver([channel.transport], undefined);
  try {
    const bad = packet([0], new Uint8Array(PAGE));
    bad[0] = 0xee; // the magic
    await channel.push(initial(0), SYNC());
    await multifd.sync();
    await channel.push(bad);
    await assert.rejects(
      multifd.failure,
      (error) =>
        error instanceof StreamFormatError &&
        error.offset === 64 + HEADER &&
        error.message ===
          `Cannot decode multifd packet at offset ${
            64 + HEADER
          }: magic 0xee223344 is not 0x11223344, on multifd channel 0 from tcp:127.0.0.1:4444 (peer 127.0.0.1:5555)`,
    );
  } finally {
    await multifd.close();
  }
});

/** One channel into 4 pages of shared RAM, past its first SYNC. */
async function syncedChannel() {
  const channel = feed();
  const { multifd } = receiver([channel.transport], [{
    idstr: "pc.ram",
    bytes: new Uint8Array(new SharedArrayBuffer(4 * PAGE)),
  }]);
  await channel.push(initial(0), SYNC());
  await multifd.sync();
  return { channel, multifd };
}

Deno.test("a multifd packet cut short fails with an UnexpectedEndOfStreamError at its data", async () => {
  const { channel, multifd } = await syncedChannel();
  try {
    await channel.push(
      packet([0, PAGE], new Uint8Array(2 * PAGE)).subarray(0, HEADER + 100),
    );
    channel.end();
    await assert.rejects(
      multifd.failure,
      (error) =>
        error instanceof UnexpectedEndOfStreamError &&
        error.offset === 64 + 2 * HEADER && error.expectedBytes === 2 * PAGE &&
        /^Cannot read multifd packet data at offset \d+ as the stream ended: received 100 of 8192 bytes, on multifd channel 0 from test channel$/
          .test(error.message),
    );
  } finally {
    await multifd.close();
  }
});

Deno.test("a multifd page beyond its block fails as on the main thread", async () => {
  const { channel, multifd } = await syncedChannel();
  try {
    await channel.push(packet([4 * PAGE], new Uint8Array(PAGE)));
    await assert.rejects(
      multifd.failure,
      (error) =>
        error instanceof MigrationProtocolError &&
        error.cause instanceof RangeError &&
        error.message.startsWith(
          `Cannot place a page of multifd channel 0: Cannot access offset ${
            4 * PAGE
          } of RAM block "pc.ram": the block is ${4 * PAGE} bytes`,
        ),
    );
  } finally {
    await multifd.close();
  }
});

/**
 * A socket-like channel whose reads fill the whole view they are given
 * (the kernel had everything queued), after a head read ahead.
 */
function greedySocket(bytes: Uint8Array) {
  let at = 4;
  const transport: Transport & {
    head: Uint8Array<ArrayBuffer>;
    readInto(view: Uint8Array): Promise<number | null>;
  } = {
    head: bytes.slice(0, 4),
    readInto: (view) => {
      if (at === bytes.byteLength) return Promise.resolve(null);
      const count = Math.min(view.byteLength, bytes.byteLength - at);
      view.set(bytes.subarray(at, at + count));
      at += count;
      return Promise.resolve(count);
    },
    readable: new ReadableStream(),
    writable: new WritableStream(),
    description: "greedy socket",
    close: () => Promise.resolve(),
  };
  return transport;
}

Deno.test("a multifd channel read in large reads never waits for ring room its worker holds", async () => {
  const pages = 4096; // 16 MiB in 32 full packets: the ring fills often
  const ram = new Uint8Array(new SharedArrayBuffer(pages * PAGE));
  const parts = [initial(0), SYNC()];
  for (let first = 0; first < pages; first += 128) {
    const data = new Uint8Array(128 * PAGE);
    const offsets = [];
    for (let i = 0; i < 128; i++) {
      offsets.push((first + i) * PAGE);
      data.fill((first + i) % 251, i * PAGE, (i + 1) * PAGE);
    }
    parts.push(packet(offsets, data));
  }
  parts.push(SYNC());
  const stream = concatBytes(parts);
  const { multifd, counts } = receiver([greedySocket(stream)], [{
    idstr: "pc.ram",
    bytes: ram,
  }]);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const stuck = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Error("the channel is stuck")),
        20_000,
      );
    });
    await Promise.race([multifd.sync(), stuck]);
    await Promise.race([multifd.sync(), stuck]);
    assert.equal(counts.placed, pages);
    for (const page of [0, 1, 250, 251, 4095]) {
      assert.equal(ram[page * PAGE + 17], page % 251);
    }
  } finally {
    clearTimeout(timer);
    await multifd.close();
  }
});

Deno.test("closing the multifd channels fails a RAM EOS still waiting for their SYNC", async () => {
  const channel = feed();
  const { multifd } = receiver([channel.transport], undefined);
  await channel.push(initial(0));
  const syncing = multifd.sync();
  syncing.catch(() => {});
  await multifd.close();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stuck = new Promise((resolve) => timer = setTimeout(resolve, 5_000));
  try {
    await assert.rejects(
      Promise.race([syncing, stuck]),
      (error) =>
        error instanceof MigrationProtocolError &&
        error.message === "Cannot sync the multifd channels: they were closed",
    );
  } finally {
    clearTimeout(timer);
  }
});
