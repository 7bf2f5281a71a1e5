import assert from "node:assert/strict";
import { GuestMemory } from "../../mod.ts";

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
