/**
 * The source's multifd batches and encoding workers: pages in shared guest
 * RAM are batched by their place and read by the worker, other pages are
 * copied when batched, and the worker's packet decodes back to the pages.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  decodeMultifdPacketHeader,
  GuestMemory,
  MULTIFD_FLAG,
  MultifdPageDecompressor,
  type Transport,
} from "../../mod.ts";
import { MultifdSender } from "../../lib/migration/_multifd_send.ts";
import {
  MultifdSendWorker,
  PageBatch,
} from "../../lib/migration/_multifd_send_channel.ts";

const PAGE = 4096;
const HEADER = 320 + 8 * 128;

Deno.test("GuestMemory allocates its blocks over SharedArrayBuffers by default", () => {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: 4 * PAGE }]);
  assert.ok(memory.blocks[0]!.bytes.buffer instanceof SharedArrayBuffer);
});

Deno.test("PageBatch keeps pages in shared RAM by place and copies the others", () => {
  const ram = new Uint8Array(new SharedArrayBuffer(8 * PAGE));
  const batch = new PageBatch(PAGE, 128);
  batch.add("pc.ram", 3 * PAGE, ram.subarray(3 * PAGE, 4 * PAGE));
  const copy = new Uint8Array(PAGE).fill(5);
  batch.add("pc.ram", PAGE, copy);
  copy.fill(6); // after batching: the batch has its own copy
  batch.add("pc.ram", 7 * PAGE, ram.subarray(7 * PAGE, 8 * PAGE));
  assert.deepEqual(batch.offsets, [3 * PAGE, PAGE, 7 * PAGE]);
  const taken = batch.take();
  assert.equal(taken.shared, ram.buffer);
  assert.deepEqual([...taken.starts], [3 * PAGE, -1, 7 * PAGE]);
  assert.equal(new Uint8Array(taken.inline!)[PAGE - 1], 5);
  assert.equal(batch.length, 0);
});

for (const compression of ["none", "zstd"] as const) {
  Deno.test(`MultifdSendWorker encodes a ${compression} packet from shared RAM and copies`, async () => {
    const ram = new Uint8Array(new SharedArrayBuffer(4 * PAGE));
    ram.fill(0x11, 2 * PAGE, 3 * PAGE);
    const batch = new PageBatch(PAGE, 128);
    batch.add("pc.ram", 2 * PAGE, ram.subarray(2 * PAGE, 3 * PAGE));
    batch.add("pc.ram", 0, new Uint8Array(PAGE).fill(0x22));
    const offsets = batch.offsets;
    // Written after batching, before encoding: the worker reads RAM as it
    // is then, as QEMU's sending threads do (the page is dirty again).
    ram[2 * PAGE] = 0x33;
    const worker = new MultifdSendWorker({
      compression,
      level: 1,
      pageSize: PAGE,
    });
    try {
      const bytes = await worker.encode({
        type: "encode",
        header: {
          type: "multifd-packet",
          flags: compression === "none" ? 0 : MULTIFD_FLAG.ZSTD,
          pagesAlloc: 128,
          packetNum: 9n,
          ramBlock: "pc.ram",
          offsets,
        },
        ...batch.take(),
      });
      const header = decodeMultifdPacketHeader(bytes.subarray(0, HEADER));
      assert.deepEqual(header.offsets, [2 * PAGE, 0]);
      assert.equal(header.packetNum, 9n);
      assert.equal(header.nextPacketSize, bytes.byteLength - HEADER);
      const decompressor = new MultifdPageDecompressor(compression);
      const pages = await decompressor.decompress(bytes.subarray(HEADER), 2);
      decompressor.close();
      assert.equal(pages[0], 0x33);
      assert.equal(pages[PAGE - 1], 0x11);
      assert.equal(pages[PAGE], 0x22);
    } finally {
      worker.stop();
    }
  });
}

Deno.test("MultifdSender stops waiting for a peer that takes nothing once the run is aborted", async () => {
  let closed = 0;
  const stuck = (): Transport => {
    const pending: ((error: Error) => void)[] = [];
    return {
      readable: new ReadableStream(),
      // Takes nothing until closed, as a socket whose peer does not read.
      writable: new WritableStream({
        write: () => new Promise((_, reject) => pending.push(reject)),
      }),
      description: "a peer that takes nothing",
      copiesWrites: true,
      close: () => {
        closed++;
        for (const reject of pending) reject(new Error("closed"));
        return Promise.resolve();
      },
    };
  };
  const controller = new AbortController();
  const sender = new MultifdSender([stuck(), stuck()], {
    compression: "none",
    level: 1,
    pageSize: PAGE,
    limiter: { pass: () => Promise.resolve() },
    signal: controller.signal,
  });
  const ram = new Uint8Array(new SharedArrayBuffer(1024 * PAGE));
  const sending = (async () => {
    for (let page = 0; page < 1024; page++) {
      await sender.queue({
        type: "ram-page",
        block: "pc.ram",
        offset: page * PAGE,
        data: ram.subarray(page * PAGE, (page + 1) * PAGE),
      });
    }
  })();
  setTimeout(() => controller.abort(new Error("cancelled")), 50);
  await assert.rejects(sending, /cancelled/);
  await sender.close();
  assert.ok(closed >= 2, "both channels closed");
});
