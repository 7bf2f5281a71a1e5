/**
 * auto-converge and dirty-limit's trigger and steps (QEMU's
 * `migration_trigger_throttle()` and `mig_throttle_guest_down()`), on an
 * injected clock, and the throttle reaching simulated and hosted guests.
 */
import assert from "node:assert/strict";
import {
  DEFAULT_PARAMETERS,
  GuestMemory,
  type GuestThrottle,
  HostedGuest,
  type MigrationParameters,
  NO_THROTTLE,
  parseCapabilityArgument,
  parseParameterArgument,
  SimulatedGuest,
  SourceMigration,
} from "../../mod.ts";
import {
  AutoConverge,
  dirtiedTooMuch,
  nextCpuThrottle,
} from "../../lib/migration/_auto_converge.ts";
import { dirtyLimitInfo } from "../../lib/migration/_dirty_limit.ts";
import { createManualClock } from "../_helpers/manual_clock.ts";

const PAGE = 4096;

function parameters(
  changes: Partial<MigrationParameters> = {},
): MigrationParameters {
  return { ...DEFAULT_PARAMETERS, ...changes };
}

Deno.test("nextCpuThrottle() starts at cpu-throttle-initial, then adds the increment up to max-cpu-throttle", () => {
  const p = parameters();
  const steps = [0];
  for (let i = 0; i < 10; i++) {
    steps.push(nextCpuThrottle(steps.at(-1)!, 100, 50, p));
  }
  assert.deepEqual(steps, [0, 20, 30, 40, 50, 60, 70, 80, 90, 99, 99]);
  const capped = parameters({ "max-cpu-throttle": 45 });
  assert.equal(nextCpuThrottle(40, 100, 50, capped), 45);
  assert.equal(
    nextCpuThrottle(0, 100, 50, parameters({ "cpu-throttle-initial": 35 })),
    35,
  );
});

Deno.test("nextCpuThrottle() with tailslow adds only what would bring the dirtying down to the threshold", () => {
  const p = parameters({ "cpu-throttle-tailslow": true });
  // 60 % CPU now; 10 % over the threshold: the ideal is 54 %, so + 6.
  assert.equal(nextCpuThrottle(40, 110, 100, p), 46);
  // Far over the threshold: never more than the increment.
  assert.equal(nextCpuThrottle(40, 1000, 100, p), 50);
});

Deno.test("dirtiedTooMuch() compares with throttle-trigger-threshold percent of the bytes sent", () => {
  assert.deepEqual(dirtiedTooMuch({ dirtiedBytes: 50, sentBytes: 100 }, 50), {
    thresholdBytes: 50,
    high: false,
  });
  assert.equal(
    dirtiedTooMuch({ dirtiedBytes: 51, sentBytes: 100 }, 50).high,
    true,
  );
  assert.equal(
    dirtiedTooMuch({ dirtiedBytes: 51, sentBytes: 100 }, 60).high,
    false,
  );
});

/** A guest that records the throttles it is given. */
function recordingGuest(): { guest: HostedGuest; seen: GuestThrottle[] } {
  const seen: GuestThrottle[] = [];
  const guest = new HostedGuest({
    memory: new GuestMemory([{ idstr: "app", size: 16 * PAGE }]),
    onThrottle: (throttle) => seen.push(throttle),
  });
  return { guest, seen };
}

function trigger(
  capabilities: { "auto-converge"?: boolean; "dirty-limit"?: boolean },
  changes: Partial<MigrationParameters> = {},
) {
  const clock = createManualClock();
  let transferred = 0;
  const { guest, seen } = recordingGuest();
  const throttle = new AutoConverge(guest, {
    capabilities: {
      ...new SourceMigration(guest).capabilities,
      ...capabilities,
    },
    parameters: parameters(changes),
    clock,
    pageSize: PAGE,
    transferred: () => transferred,
  });
  /** One period of 1 s: `sent` bytes out, `dirtied` pages found dirty. */
  function period(sent: number, dirtied: number): void {
    clock.advance(1000);
    transferred += sent;
    throttle.synced(dirtied);
    throttle.periodClosed();
  }
  return { throttle, seen, period };
}

Deno.test("AutoConverge throttles on the second period that dirtied more than the threshold, then every second one", () => {
  const { throttle, seen, period } = trigger({ "auto-converge": true });
  period(100 * PAGE, 60); // 60 pages dirtied > 50 % of 100 sent: count 1
  assert.equal(throttle.cpuPercentage, 0);
  period(100 * PAGE, 40); // calm: QEMU keeps the count
  assert.equal(throttle.cpuPercentage, 0);
  period(100 * PAGE, 60); // count 2: throttle
  assert.equal(throttle.cpuPercentage, 20);
  period(100 * PAGE, 60);
  assert.equal(throttle.cpuPercentage, 20);
  period(100 * PAGE, 60);
  assert.equal(throttle.cpuPercentage, 30);
  assert.deepEqual(throttle.info(), { "cpu-throttle-percentage": 30 });
  assert.deepEqual(seen, [
    { cpuPercentage: 20, dirtyLimit: 0 },
    { cpuPercentage: 30, dirtyLimit: 0 },
  ]);
  throttle.stop();
  assert.deepEqual(seen.at(-1), NO_THROTTLE);
  assert.deepEqual(throttle.info(), {});
});

Deno.test("AutoConverge does nothing without auto-converge or dirty-limit", () => {
  const { throttle, seen, period } = trigger({});
  for (let i = 0; i < 6; i++) period(100 * PAGE, 100);
  assert.equal(throttle.cpuPercentage, 0);
  assert.deepEqual(seen, []);
});

Deno.test("AutoConverge with dirty-limit caps the guest at vcpu-dirty-limit MB/s and reports QEMU's fields", () => {
  const { throttle, seen, period } = trigger({ "dirty-limit": true }, {
    "vcpu-dirty-limit": 2,
  });
  period(1000 * PAGE, 1000); // 4 MB/s dirtied
  assert.equal(throttle.dirtyLimit, 0);
  period(1000 * PAGE, 1000);
  assert.equal(throttle.dirtyLimit, 2e6);
  assert.equal(throttle.cpuPercentage, 0);
  assert.deepEqual(seen, [{ cpuPercentage: 0, dirtyLimit: 2e6 }]);
  const info = throttle.info();
  assert.equal(info["cpu-throttle-percentage"], undefined);
  // 1000 pages/s of 4 KiB dirtied: 4.096 MB/s. A 4096-page ring is
  // 16 MiB: full in 4.096 s at that rate, in 8.389 s at 2 MB/s, so the
  // guest sleeps 4.293 s per round.
  assert.deepEqual(info, {
    "dirty-limit-throttle-time-per-round": 4_292_608,
    "dirty-limit-ring-full-time": 4_096_000,
  });
});

Deno.test("dirtyLimitInfo() reports no sleep when the guest dirties less than the limit", () => {
  assert.deepEqual(
    dirtyLimitInfo({
      pageSize: PAGE,
      limit: 1e6,
      unlimitedRate: 5e5,
      maxDirtyRate: 0,
    }),
    {
      "dirty-limit-throttle-time-per-round": 0,
      "dirty-limit-ring-full-time": 0,
    },
  );
});

Deno.test("a throttled SimulatedGuest writes (100 - pct) % of its rate, and no more than a dirty limit", () => {
  const clock = createManualClock();
  const guest = new SimulatedGuest({
    ramBytes: 1024 * PAGE,
    workload: { kind: "sweep", bytesPerSecond: 1000 * PAGE },
    running: false,
    clock,
  });
  assert.equal(guest.step(1000), 1000);
  guest.setThrottle({ cpuPercentage: 40, dirtyLimit: 0 });
  assert.equal(guest.step(1000), 600);
  guest.setThrottle({ cpuPercentage: 0, dirtyLimit: 100 * PAGE });
  assert.equal(guest.step(1000), 100);
  guest.setThrottle(NO_THROTTLE);
  assert.equal(guest.step(1000), 1000);
});

Deno.test("the throttling capabilities and parameters parse with QEMU's names and ranges", () => {
  assert.deepEqual(parseCapabilityArgument("auto-converge=on"), [
    "auto-converge",
    true,
  ]);
  assert.deepEqual(parseCapabilityArgument("dirty-limit=on"), [
    "dirty-limit",
    true,
  ]);
  assert.deepEqual(parseParameterArgument("cpu-throttle-initial=30"), [
    "cpu-throttle-initial",
    30,
  ]);
  assert.deepEqual(parseParameterArgument("cpu-throttle-tailslow=on"), [
    "cpu-throttle-tailslow",
    true,
  ]);
  assert.deepEqual(parseParameterArgument("x-vcpu-dirty-limit-period=500ms"), [
    "x-vcpu-dirty-limit-period",
    500,
  ]);
  assert.deepEqual(parseParameterArgument("vcpu-dirty-limit=10"), [
    "vcpu-dirty-limit",
    10,
  ]);
  assert.throws(
    () => parseParameterArgument("cpu-throttle-initial=100"),
    RangeError,
  );
  assert.throws(
    () => parseParameterArgument("throttle-trigger-threshold=0"),
    RangeError,
  );
  assert.throws(
    () => parseParameterArgument("x-vcpu-dirty-limit-period=1001"),
    RangeError,
  );
  assert.throws(() => parseParameterArgument("vcpu-dirty-limit=0"), RangeError);
  const guest = new SimulatedGuest({ ramBytes: 16 * PAGE, running: false });
  assert.throws(
    () =>
      new SourceMigration(guest, {
        capabilities: { "auto-converge": true, "dirty-limit": true },
      }),
    {
      name: "TypeError",
      message:
        'Cannot set capability "dirty-limit": it conflicts with "auto-converge"',
    },
  );
  assert.throws(
    () =>
      new SourceMigration(guest, {
        parameters: { "cpu-throttle-initial": 50, "max-cpu-throttle": 40 },
      }),
    RangeError,
  );
});
