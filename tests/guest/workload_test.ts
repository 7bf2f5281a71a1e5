import assert from "node:assert/strict";
import { deflateSync } from "node:zlib";
import {
  formatWorkload,
  GuestMemory,
  parseWorkload,
  SimulatedGuest,
  Workload,
} from "../../mod.ts";

Deno.test("Workload refuses a rate or hot set that is not a whole number of bytes, naming it", () => {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: 1 << 20 }]);
  assert.throws(
    () => new Workload({ kind: "random", bytesPerSecond: 1.5 }, memory, 1),
    {
      name: "RangeError",
      message:
        "Cannot construct Workload as bytesPerSecond must be a whole number of bytes >= 0: received 1.5",
    },
  );
  assert.throws(
    () =>
      new Workload(
        { kind: "hot-set", setBytes: -4096, bytesPerSecond: 1000 },
        memory,
        1,
      ),
    /setBytes must be a whole number of bytes >= 0: received -4096/,
  );
  // A whole rate saves into the device state (a fraction used to fail the
  // migration at switchover, converting it to a 64-bit integer).
  const guest = new SimulatedGuest({
    ramBytes: 1 << 20,
    workload: { kind: "random", bytesPerSecond: 45_508_198 },
  });
  assert.equal(guest.saveState().length > 0, true);
  assert.throws(
    () =>
      new SimulatedGuest({
        ramBytes: 1 << 20,
        workload: { kind: "random", bytesPerSecond: 45_508_198.4 },
      }),
    RangeError,
  );
});

Deno.test("fill:address puts each word's flat address in RAM, which compresses some", () => {
  const spec = parseWorkload("fill:address");
  assert.deepEqual(spec, { kind: "fill", pattern: "address" });
  assert.equal(formatWorkload(spec), "fill:address");
  assert.throws(() => parseWorkload("fill:zeros"), /takes random or address/);
  const memory = new GuestMemory([
    { idstr: "a", size: 8192 },
    { idstr: "b", size: 1 << 20 },
  ]);
  memory.startDirtyLog();
  new Workload(spec, memory, 1).fill();
  const b = memory.blocks[1]!.bytes;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  assert.equal(view.getUint32(0, true), 8192, "block b starts after a");
  assert.equal(view.getUint32(4096 + 12, true), 8192 + 4096 + 12);
  const [dirtyA, dirtyB] = memory.syncDirtyLog();
  assert.equal(dirtyA!.count() + dirtyB!.count(), 2 + 256, "every page dirty");
  const packed = deflateSync(b).byteLength;
  // Like QEMU's test firmware's RAM: no repeats, but few byte values.
  assert.ok(packed < b.byteLength * 0.75, `${packed}`);
  // The random fill does not compress.
  const other = new GuestMemory([{ idstr: "b", size: 1 << 20 }]);
  new Workload({ kind: "fill" }, other, 1).fill();
  const random = deflateSync(other.blocks[0]!.bytes).byteLength;
  assert.ok(random > (1 << 20) * 0.9, `${random}`);
});
