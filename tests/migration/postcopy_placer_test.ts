/**
 * Postcopy's background pages are placed by a worker: off the main thread,
 * each page once, never over a guest's write, failures named.
 */
import assert from "node:assert/strict";
import {
  DirtyBitmap,
  GuestMemory,
  MigrationState,
  SYSTEM_CLOCK,
} from "../../mod.ts";
import { DestinationPostcopy } from "../../lib/migration/_destination_postcopy.ts";
import { PostcopyPlacer } from "../../lib/migration/_postcopy_placer.ts";

const PAGE = 4096;
const PAGES = 64;

/** A destination in postcopy-active with every page missing. */
function listening(
  memory = new GuestMemory([{
    idstr: "pc.ram",
    size: PAGES * PAGE,
  }]),
) {
  const state = new MigrationState("destination");
  state.moveTo("active");
  const postcopy = new DestinationPostcopy(memory, {
    state,
    clock: SYSTEM_CLOCK,
    preempt: true,
    connection: () => undefined,
    place: () => {},
  });
  const all = new DirtyBitmap(PAGES);
  all.setAll();
  postcopy.listen([all], undefined);
  return { memory, postcopy };
}

function page(offset: number, fill: number) {
  return {
    type: "ram-page" as const,
    block: "pc.ram",
    offset,
    data: new Uint8Array(PAGE).fill(fill),
  };
}

Deno.test("postcopy background pages land in RAM while the main thread is blocked", async () => {
  const { memory, postcopy } = listening();
  try {
    const ram = memory.blocks[0]!.bytes;
    assert.equal(postcopy.place(page(5 * PAGE, 0x41)), true);
    assert.equal(postcopy.place(page(9 * PAGE, 0x42)), true);
    const arrived = memory.waitForPage(0, 5); // on its way: waits
    postcopy.flush();
    // The main thread spins without yielding: only a worker can write now.
    const deadline = performance.now() + 10_000;
    const landed = () =>
      Atomics.load(ram, 6 * PAGE - 1) === 0x41 &&
      Atomics.load(ram, 10 * PAGE - 1) === 0x42;
    while (!landed() && performance.now() < deadline) { /* spin */ }
    assert.ok(landed(), "the pages landed while the main thread was blocked");
    // Received only once the main thread heard it from the worker.
    assert.equal(memory.isMissing(0, 5), true);
    await arrived;
    assert.equal(memory.isMissing(0, 5), false);
    assert.equal(memory.isMissing(0, 9), false);
    assert.equal(memory.missingPages, PAGES - 2);
  } finally {
    postcopy.close();
  }
});

Deno.test("a page on its way through the placer is not placed again from the preempt connection", async () => {
  const { memory, postcopy } = listening();
  try {
    assert.equal(postcopy.place(page(3 * PAGE, 7)), true);
    // The requested copy comes while the background one is on its way.
    assert.equal(postcopy.place(page(3 * PAGE, 7), true), false);
    postcopy.flush();
    await memory.waitForPage(0, 3);
    assert.equal(memory.blocks[0]!.bytes[3 * PAGE + 100], 7);
    // Once received, the guest may write it; a late copy must not land.
    memory.write("pc.ram", 3 * PAGE, new Uint8Array([99]));
    assert.equal(postcopy.place(page(3 * PAGE, 7)), false);
    assert.equal(postcopy.place(page(3 * PAGE, 7), true), false);
    assert.equal(memory.blocks[0]!.bytes[3 * PAGE], 99);
  } finally {
    postcopy.close();
  }
});

Deno.test("requested pages are placed at once and zero pages through the placer", async () => {
  const { memory, postcopy } = listening();
  try {
    const ram = memory.blocks[0]!.bytes;
    ram.fill(0xee, 2 * PAGE, 3 * PAGE); // stale precopy content
    assert.equal(postcopy.place(page(PAGE, 5), true), true);
    assert.equal(memory.isMissing(0, 1), false);
    assert.equal(ram[PAGE + 1], 5);
    assert.equal(
      postcopy.place({
        type: "ram-zero",
        block: "pc.ram",
        offset: 2 * PAGE,
        fill: 0,
      }),
      true,
    );
    postcopy.flush();
    await memory.waitForPage(0, 2);
    assert.deepEqual(ram.subarray(2 * PAGE, 3 * PAGE), new Uint8Array(PAGE));
  } finally {
    postcopy.close();
  }
});

Deno.test("finish waits for the placer and fails when pages never arrived", async () => {
  const { memory, postcopy } = listening();
  for (let i = 0; i < PAGES; i++) postcopy.place(page(i * PAGE, i));
  await postcopy.finish(); // every page went through the worker
  assert.equal(memory.missingPages, 0);
  assert.equal(memory.blocks[0]!.bytes[63 * PAGE], 63);

  const other = listening();
  other.postcopy.place(page(0, 1));
  await assert.rejects(
    other.postcopy.finish(),
    /Cannot complete the incoming migration: 63 pages never arrived/,
  );
});

Deno.test("RAM that is not shared memory is placed on the main thread", async () => {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: PAGES * PAGE }], {
    allocate: (size) => new Uint8Array(size),
  });
  assert.equal(PostcopyPlacer.canPlace(memory), false);
  const { postcopy } = listening(memory);
  assert.equal(postcopy.place(page(4 * PAGE, 3)), true);
  assert.equal(memory.isMissing(0, 4), false); // placed right here
  await postcopy.finish().catch(() => {});
});

Deno.test("a failing placer worker fails with its own error, and a closed one says so", async () => {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: PAGES * PAGE }]);
  const placer = new PostcopyPlacer(memory);
  try {
    placer.submit(0, PAGES + 1, new Uint8Array(PAGE)); // beyond the block
    await assert.rejects(
      placer.drain(),
      (error: Error) =>
        error instanceof RangeError &&
        /Cannot place page 65 of block 0: outside the RAM, in the postcopy placer/
          .test(error.message),
    );
    assert.throws(() => placer.room(), RangeError);
  } finally {
    placer.close();
  }
  const closed = new PostcopyPlacer(memory);
  closed.submit(0, 1, undefined);
  closed.close();
  await assert.rejects(closed.drain(), /the placer was closed/);
});

Deno.test("a background page the guest waits for lands at once, not through the worker", async () => {
  const { memory, postcopy } = listening();
  try {
    const waited = memory.waitForPage(0, 7);
    assert.equal(memory.isWaitedFor(0, 7), true);
    assert.equal(memory.isWaitedFor(0, 8), false);
    assert.equal(postcopy.place(page(7 * PAGE, 9)), true);
    assert.equal(memory.isMissing(0, 7), false); // no worker round trip
    await waited;
    assert.equal(memory.blocks[0]!.bytes[7 * PAGE], 9);
  } finally {
    postcopy.close();
  }
});
