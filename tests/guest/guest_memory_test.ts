import assert from "node:assert/strict";
import { DirtyBitmap, GuestMemory } from "../../mod.ts";

Deno.test("GuestMemory logs writes only while logging is on", () => {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: 8 * 4096 }]);
  memory.write("pc.ram", 0, new Uint8Array([1]));
  memory.startDirtyLog();
  assert.equal(memory.syncDirtyLog()[0]!.count(), 0);
  memory.write("pc.ram", 4095, new Uint8Array([1, 2])); // spans pages 0 and 1
  memory.markDirty("pc.ram", 5 * 4096, 3 * 4096);
  const [log] = memory.syncDirtyLog();
  assert.deepEqual([0, 1, 5, 6, 7].map((p) => log!.test(p)), [
    true,
    true,
    true,
    true,
    true,
  ]);
  assert.equal(log!.count(), 5);
  memory.stopDirtyLog();
  memory.write("pc.ram", 0, new Uint8Array([1]));
  assert.equal(memory.syncDirtyLog()[0]!.count(), 0);
});

Deno.test("GuestMemory wraps memory the caller owns", () => {
  const mine = new Uint8Array(2 * 4096);
  const memory = new GuestMemory([{ idstr: "app.state", bytes: mine }]);
  memory.startDirtyLog();
  mine[4096] = 9;
  memory.markDirty("app.state", 4096, 1);
  assert.equal(memory.block("app.state").bytes, mine);
  assert.ok(memory.syncDirtyLog()[0]!.test(1));
  assert.equal(memory.pageView("app.state", 4096)[0], 9);
});

Deno.test("GuestMemory lays blocks out in one flat address space", () => {
  const memory = new GuestMemory([
    { idstr: "pc.ram", size: 4 * 4096 },
    { idstr: "pc.bios", size: 4096 },
  ]);
  assert.deepEqual(memory.blocks.map((b) => [b.idstr, b.base, b.index]), [
    ["pc.ram", 0, 0],
    ["pc.bios", 4 * 4096, 1],
  ]);
  assert.equal(memory.totalBytes, 5 * 4096);
});

Deno.test("GuestMemory rejects bad blocks and out-of-range access", () => {
  assert.throws(() => new GuestMemory([{ idstr: "a", size: 100 }]), RangeError);
  assert.throws(
    () =>
      new GuestMemory([{ idstr: "a", size: 4096 }, { idstr: "a", size: 4096 }]),
    RangeError,
  );
  assert.throws(() => new GuestMemory([{ idstr: "", size: 4096 }]), RangeError);
  const memory = new GuestMemory([{ idstr: "a", size: 4096 }]);
  assert.throws(() => memory.write("a", 4095, new Uint8Array(2)), RangeError);
  assert.throws(() => memory.pageView("a", 4096), RangeError);
  assert.throws(() => memory.block("b"), RangeError);
});

function postcopyMemory(): { memory: GuestMemory; faults: number[] } {
  const memory = new GuestMemory([{ idstr: "a", size: 4 * 4096 }]);
  memory.blocks[0]!.bytes.fill(7);
  const missing = new DirtyBitmap(4);
  missing.set(2);
  const faults: number[] = [];
  memory.startPostcopy([missing], (_, page) => faults.push(page));
  return { memory, faults };
}

Deno.test("GuestMemory.prepareWrite() waits for a missing page, asking for it once", async () => {
  const { memory, faults } = postcopyMemory();
  await memory.prepareWrite("a", 0, 4096); // present: at once
  let ready = false;
  const waiting = memory.prepareWrite("a", 4096, 2 * 4096).then(() => {
    ready = true;
  });
  await Promise.resolve();
  assert.equal(ready, false);
  assert.deepEqual(faults, [2]);
  memory.markReceived(0, 2);
  await waiting;
  assert.equal(ready, true);
  await assert.rejects(memory.prepareWrite("a", 4 * 4096, 1), RangeError);
});

Deno.test("GuestMemory.write() refuses a page that has not arrived", () => {
  const { memory } = postcopyMemory();
  assert.throws(
    () => memory.write("a", 3 * 4096 - 1, new Uint8Array(2)),
    (error) =>
      error instanceof TypeError &&
      /Cannot write to page 2 of RAM block "a": it has not arrived yet/.test(
        error.message,
      ),
  );
  assert.equal(memory.blocks[0]!.bytes[3 * 4096 - 1], 7, "nothing written");
  memory.write("a", 3 * 4096, new Uint8Array([1]));
  assert.equal(memory.blocks[0]!.bytes[3 * 4096], 1);
});

Deno.test("GuestMemory keeps each page as received before its first write, until released", async () => {
  const { memory } = postcopyMemory();
  memory.write("a", 0, new Uint8Array([1])); // before keeping: not kept
  memory.keepReceivedPages();
  memory.write("a", 4096, new Uint8Array([2]));
  memory.write("a", 4096 + 1, new Uint8Array([3])); // second write: no copy
  assert.equal(memory.preparePageWrite(0, 3), true);
  memory.blocks[0]!.bytes[3 * 4096] = 4;
  assert.equal(memory.preparePageWrite(0, 2), false, "page 2 is missing");
  memory.blocks[0]!.bytes.fill(9, 2 * 4096, 3 * 4096); // it arrives
  memory.markReceived(0, 2);
  await memory.prepareWrite("a", 2 * 4096, 1);
  memory.blocks[0]!.bytes[2 * 4096] = 5;
  assert.equal(memory.keptPages, 3);
  const copies = memory.receivedCopies(0);
  assert.deepEqual([...copies.keys()].sort(), [1, 2, 3]);
  assert.deepEqual(copies.get(1), new Uint8Array(4096).fill(7));
  assert.deepEqual(copies.get(2), new Uint8Array(4096).fill(9));
  assert.deepEqual(copies.get(3), new Uint8Array(4096).fill(7));
  memory.releaseReceivedPages();
  assert.equal(memory.keptPages, 0);
  assert.equal(memory.receivedCopies(0).size, 0);
  memory.write("a", 4096, new Uint8Array([2]));
  assert.equal(memory.keptPages, 0, "not keeping any more");
});
