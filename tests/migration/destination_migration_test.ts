import assert from "node:assert/strict";
import {
  connectTransport,
  createMemoryTransportPair,
  DestinationMigration,
  listenTransport,
  MigrationAbortedError,
  type MigrationStatus,
  SimulatedGuest,
  SourceMigration,
} from "../../mod.ts";

const MIB = 1024 * 1024;

function statusReached(
  target: EventTarget,
  status: MigrationStatus,
): Promise<void> {
  return new Promise((resolve) => {
    const listener = (event: Event) => {
      if ((event as CustomEvent).detail.status === status) {
        target.removeEventListener("status", listener);
        resolve();
      }
    };
    target.addEventListener("status", listener);
  });
}

/** Waits for `reached`, failing at once if `migration` settles first. */
async function beforeSettled(
  reached: Promise<void>,
  migration: Promise<unknown>,
): Promise<void> {
  const settled = migration.then(
    () => "completed",
    (error) => `failed: ${error}`,
  );
  const early = await Promise.race([reached.then(() => null), settled]);
  if (early !== null) {
    throw new Error(`The migration ended before the status: ${early}`);
  }
}

Deno.test("DestinationMigration fails, sends SHUT 1 and keeps the guest paused when beforeResume throws", async () => {
  const guest = new SimulatedGuest({
    ramBytes: MIB,
    prefill: true,
    running: false,
  });
  const source = new SourceMigration(guest, {
    capabilities: { "return-path": true },
  });
  const statuses: MigrationStatus[] = [];
  const destination = new DestinationMigration({
    beforeResume: () => {
      throw new Error("Cannot write RAM dump: disk full");
    },
  });
  destination.addEventListener("status", (event) => {
    statuses.push((event as CustomEvent).detail.status);
  });
  const [outgoing, incoming] = createMemoryTransportPair();
  const [sent, received] = await Promise.allSettled([
    source.migrate(outgoing),
    destination.incoming(incoming),
  ]);
  assert.equal(received.status, "rejected");
  const error = (received as PromiseRejectedResult).reason;
  assert.ok(error instanceof MigrationAbortedError, String(error));
  assert.equal(
    error.message,
    "Cannot complete the incoming migration: Cannot write RAM dump: disk full",
  );
  assert.equal(error.reason, "destination-failed");
  assert.equal(destination.status, "failed");
  assert.deepEqual(statuses, ["setup", "active", "failed"]);
  assert.equal(
    destination.query()["error-desc"],
    "Cannot write RAM dump: disk full",
  );
  assert.equal(destination.guest?.running, false);
  assert.equal(sent.status, "rejected");
  assert.match(String((sent as PromiseRejectedResult).reason), /SHUT 1/);
  assert.equal(source.status, "failed");
});

Deno.test("DestinationMigration.abandon() gives up a paused postcopy, which stays postcopy-paused", async () => {
  const guest = new SimulatedGuest({
    ramBytes: 8 * MIB,
    workload: { kind: "random", bytesPerSecond: 4 * MIB },
    prefill: true,
    seed: 3,
  });
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const source = new SourceMigration(guest, {
    capabilities: { "postcopy-ram": true },
    parameters: {
      "max-bandwidth": 64 * MIB,
      "max-postcopy-bandwidth": 1 * MIB,
    },
    // After the first sync, before any convergence check: 8 MiB at
    // 64 MiB/s would otherwise fit the downtime budget and complete.
    postcopyAfterPasses: 0,
  });
  const destination = new DestinationMigration({ postcopy: true });
  try {
    assert.throws(
      () => destination.abandon("quit"),
      /Cannot abandon migration in "none"/,
    );
    const [outgoing, incoming] = await Promise.all([
      connectTransport(listener.address),
      listener.accept(),
    ]);
    const active = statusReached(destination, "postcopy-active");
    source.migrate(outgoing).catch(() => {});
    const received = destination.incoming(incoming);
    received.catch(() => {});
    await beforeSettled(active, received);
    const paused = statusReached(destination, "postcopy-paused");
    destination.pause();
    await paused;
    destination.abandon("the user quit");
    await assert.rejects(received, (error: unknown) => {
      assert.ok(error instanceof MigrationAbortedError);
      assert.equal(error.reason, "cancelled");
      assert.match(
        error.message,
        /^Cannot complete the incoming migration: the user quit; the guest is lost in postcopy-paused \(\d+ pages never arrived\)$/,
      );
      return true;
    });
    assert.equal(destination.status, "postcopy-paused");
    assert.equal(destination.query().status, "postcopy-paused");
  } finally {
    guest.pause();
    destination.guest?.pause();
    source.pause();
    await listener.close();
  }
});

Deno.test("DestinationMigration.abandon() in postcopy-active pauses and gives up at once", async () => {
  const guest = new SimulatedGuest({
    ramBytes: 8 * MIB,
    prefill: true,
    running: false,
  });
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const source = new SourceMigration(guest, {
    capabilities: { "postcopy-ram": true },
    parameters: { "max-postcopy-bandwidth": 1 * MIB },
    postcopyAfterPasses: 0,
  });
  const destination = new DestinationMigration({ postcopy: true });
  try {
    const [outgoing, incoming] = await Promise.all([
      connectTransport(listener.address),
      listener.accept(),
    ]);
    const active = statusReached(destination, "postcopy-active");
    source.migrate(outgoing).catch(() => {});
    const received = destination.incoming(incoming);
    received.catch(() => {});
    await beforeSettled(active, received);
    destination.abandon("the user quit");
    await assert.rejects(received, /the user quit; the guest is lost/);
    assert.equal(destination.status, "postcopy-paused");
  } finally {
    destination.guest?.pause();
    await listener.close();
  }
});

Deno.test("DestinationMigration.abort() fails a destination still waiting for its source", () => {
  const destination = new DestinationMigration();
  destination.listen();
  destination.abort("interrupted while waiting for a source");
  assert.equal(destination.status, "failed");
  const info = destination.query();
  assert.equal(info["error-desc"], "interrupted while waiting for a source");
  assert.equal(info["total-time"], 0);
});
