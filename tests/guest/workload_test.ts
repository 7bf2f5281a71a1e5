import assert from "node:assert/strict";
import { GuestMemory, SimulatedGuest, Workload } from "../../mod.ts";

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
