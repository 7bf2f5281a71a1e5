import assert from "node:assert/strict";
import { DirtyBitmap, GuestMemory } from "../../mod.ts";
import { SnapshotWriteGuard } from "../../lib/migration/_snapshot_write_guard.ts";

const PAGE = 4096;

function setup(maxCopies: number) {
  const memory = new GuestMemory([{ idstr: "ram", size: 4 * PAGE }]);
  memory.blocks[0]!.bytes.fill(7);
  const unsaved = new DirtyBitmap(4);
  unsaved.setAll();
  const guard = new SnapshotWriteGuard(memory, [unsaved], maxCopies);
  memory.guardWrites(guard);
  return { memory, unsaved, guard };
}

Deno.test("SnapshotWriteGuard copies a page once before its first write and hands the copy to the pass", () => {
  const { memory, unsaved, guard } = setup(4);
  memory.write("ram", PAGE, new Uint8Array([1]));
  memory.write("ram", PAGE + 1, new Uint8Array([2]));
  assert.equal(guard.copied, 1);
  assert.equal(guard.held, 1);
  unsaved.clear(1);
  const saved = guard.take(0, 1);
  assert.equal(saved[0], 7);
  assert.equal(saved[1], 7);
  assert.equal(guard.held, 0);
  // A page the guest never wrote comes from RAM, as a copy of its own.
  unsaved.clear(2);
  const untouched = guard.take(0, 2);
  memory.write("ram", 2 * PAGE, new Uint8Array([9]));
  assert.equal(untouched[0], 7);
  assert.equal(guard.copied, 1, "a saved page is not copied");
});

Deno.test("SnapshotWriteGuard holds at most maxCopies; a writer past that waits for the pass", async () => {
  const { memory, unsaved, guard } = setup(1);
  assert.ok(memory.preparePageWrite(0, 0));
  assert.equal(memory.preparePageWrite(0, 3), false);
  let woke = false;
  const waiting = memory.waitForPage(0, 3).then(() => (woke = true));
  await Promise.resolve();
  assert.equal(woke, false);
  unsaved.clear(0);
  guard.take(0, 0);
  guard.notify();
  await waiting;
  assert.ok(memory.preparePageWrite(0, 3));
  assert.equal(guard.peak, 1);
});

Deno.test("SnapshotWriteGuard reports a page marked written before it was saved, and nothing after release()", () => {
  const { memory, guard } = setup(4);
  memory.blocks[0]!.bytes[0] = 1;
  memory.markDirty("ram", 0, 1);
  assert.match(guard.violation!, /^page 0 of RAM block "ram" was written/);
  const second = setup(4);
  second.guard.release();
  second.memory.markPageDirty(0, 1);
  assert.equal(second.guard.violation, undefined);
  assert.ok(second.memory.preparePageWrite(0, 2));
  assert.equal(second.guard.copied, 0);
});
