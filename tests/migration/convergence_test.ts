/**
 * The done-when proof of auto-converge and dirty-limit: a guest whose hot
 * set is written at 4× the link rate (max-bandwidth) never gets its
 * remaining RAM under the switchover threshold in precopy, and completes
 * with either throttle, with a downtime no longer than downtime-limit
 * (+10 %). Scaled down for CI: a 1 MiB hot set written at 8 MB/s over a
 * 2 MB/s link (the 256 MiB hot set at 4× the link rate: the same
 * ratio), with QEMU's default throttling parameters.
 *
 * Downtime is measured here on the test's side too: from the moment the
 * engine pauses the source guest to the moment `migrate()` resolves (the
 * destination's SHUT arrived), which is what QEMU's `downtime` spans; it
 * must match what `query-migrate` reports.
 */
import assert from "node:assert/strict";
import {
  connectTransport,
  DestinationMigration,
  listenTransport,
  type MigrationCapabilities,
  type MigrationInfo,
  type MigrationParameters,
  NO_THROTTLE,
  SimulatedGuest,
  SourceMigration,
} from "../../mod.ts";

const MIB = 1024 * 1024;
const LINK = 2_000_000; // bytes/s
const DOWNTIME_LIMIT = 300; // ms
const HOT = {
  kind: "hot-set",
  setBytes: 1 * MIB,
  bytesPerSecond: 4 * LINK,
} as const;

/** A simulated guest that notes when the migration stops it. */
class TimedGuest extends SimulatedGuest {
  pausedAt: number | undefined;
  override pause(): void {
    this.pausedAt ??= performance.now();
    super.pause();
  }
}

interface Outcome {
  info: MigrationInfo;
  measuredDowntime: number;
  throttled: MigrationInfo[];
  guest: TimedGuest;
}

async function migrate(
  capabilities: Partial<MigrationCapabilities>,
  options: {
    parameters?: Partial<MigrationParameters>;
    stopAfterPasses?: number;
  } = {},
): Promise<Outcome> {
  const guest = new TimedGuest({
    ramBytes: 2 * MIB,
    workload: HOT,
    prefill: true,
    seed: 3,
  });
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const source = new SourceMigration(guest, {
    capabilities: { "return-path": true, events: true, ...capabilities },
    parameters: {
      "max-bandwidth": LINK,
      "downtime-limit": DOWNTIME_LIMIT,
      ...options.parameters,
    },
  });
  const throttled: MigrationInfo[] = [];
  source.addEventListener("progress", (event) => {
    const info = (event as CustomEvent<MigrationInfo>).detail;
    if (
      info["cpu-throttle-percentage"] !== undefined ||
      info["dirty-limit-ring-full-time"] !== undefined
    ) throttled.push(info);
  });
  if (options.stopAfterPasses !== undefined) {
    const stopAt = options.stopAfterPasses;
    source.addEventListener("pass", (event) => {
      const { pass } = (event as CustomEvent<{ pass: number }>).detail;
      const info = source.query();
      // Before every sync past the first pass: still far above the
      // threshold (bandwidth × downtime-limit).
      if (pass > 2) {
        assert.ok(
          info.ram!.remaining > LINK * DOWNTIME_LIMIT / 1000,
          `pass ${pass}: ${info.ram!.remaining} bytes remain`,
        );
      }
      if (pass >= stopAt && source.status === "active") source.cancel();
    });
  }
  const destination = new DestinationMigration({ autostart: false });
  // A migration that never converges fails the test instead of hanging it.
  const guard = setTimeout(() => source.cancel(), 60_000);
  try {
    const [outgoing, incoming] = await Promise.all([
      connectTransport(listener.address),
      listener.accept(),
    ]);
    const received = destination.incoming(incoming);
    received.catch(() => {});
    const sent = source.migrate(outgoing);
    let info: MigrationInfo;
    try {
      info = await sent;
    } catch {
      info = source.query();
    }
    const measuredDowntime = performance.now() - (guest.pausedAt ?? NaN);
    if (info.status === "completed") {
      const loaded = await received;
      (loaded.guest as SimulatedGuest).pause();
    } else {
      await received.catch(() => {});
    }
    return { info, measuredDowntime, throttled, guest };
  } finally {
    clearTimeout(guard);
    guest.pause();
    await listener.close();
  }
}

function assertDowntime(outcome: Outcome): void {
  const { info, measuredDowntime } = outcome;
  assert.equal(info.status, "completed");
  const downtime = info.downtime!;
  assert.ok(
    downtime <= DOWNTIME_LIMIT * 1.1,
    `downtime ${downtime} ms within downtime-limit ${DOWNTIME_LIMIT} ms + 10 %`,
  );
  assert.ok(
    Math.abs(measuredDowntime - downtime) <= 50,
    `query-migrate's downtime ${downtime} ms matches the ${
      measuredDowntime.toFixed(1)
    } ms measured`,
  );
}

Deno.test("a hot set written at 4x the link rate does not converge in precopy", async () => {
  const { info, throttled } = await migrate({}, { stopAfterPasses: 7 });
  assert.equal(info.status, "cancelled");
  assert.deepEqual(throttled, [], "nothing throttled the guest");
});

Deno.test("auto-converge throttles the same guest until it converges, within downtime-limit", async () => {
  const outcome = await migrate({ "auto-converge": true });
  assertDowntime(outcome);
  const percentages = outcome.throttled.map((i) =>
    i["cpu-throttle-percentage"]!
  );
  assert.equal(
    percentages[0],
    20,
    "the first throttle is cpu-throttle-initial",
  );
  for (let i = 1; i < percentages.length; i++) {
    const step = percentages[i]! - percentages[i - 1]!;
    assert.ok(
      step === 0 || step === 10,
      `steps of cpu-throttle-increment: ${percentages}`,
    );
  }
  assert.equal(
    outcome.info["cpu-throttle-percentage"],
    undefined,
    "the throttle ended with the migration",
  );
  assert.deepEqual(outcome.guest.throttle, NO_THROTTLE);
});

Deno.test("dirty-limit caps the same guest's dirty rate until it converges, within downtime-limit", async () => {
  const outcome = await migrate({ "dirty-limit": true }, {
    parameters: { "vcpu-dirty-limit": 1 },
  });
  assertDowntime(outcome);
  assert.ok(outcome.throttled.length > 0, "query-migrate showed dirty-limit");
  for (const info of outcome.throttled) {
    assert.equal(info["cpu-throttle-percentage"], undefined);
    assert.ok(info["dirty-limit-throttle-time-per-round"]! > 0);
  }
  assert.deepEqual(outcome.guest.throttle, NO_THROTTLE);
});
