/**
 * SourceAutoRecovery and DestinationAutoRecovery together, on real ends
 * over loopback TCP: a postcopy migration whose connection is cut heals
 * itself and completes.
 */
import assert from "node:assert/strict";
import {
  connectTransport,
  DestinationAutoRecovery,
  DestinationMigration,
  listenForMigration,
  type MigrationStatus,
  SimulatedGuest,
  SourceAutoRecovery,
  SourceMigration,
} from "../../mod.ts";

const MIB = 1024 * 1024;

function reached(target: EventTarget, status: MigrationStatus): Promise<void> {
  return new Promise((resolve) => {
    target.addEventListener("status", function listener(event) {
      if ((event as CustomEvent).detail.status !== status) return;
      target.removeEventListener("status", listener);
      resolve();
    });
  });
}

Deno.test("auto recovery heals a postcopy migration whose connection is cut", async () => {
  const guest = new SimulatedGuest({
    ramBytes: 4 * MIB,
    workload: { kind: "random", bytesPerSecond: 4 * MIB },
    prefill: true,
    seed: 5,
  });
  const source = new SourceMigration(guest, {
    capabilities: { "postcopy-ram": true },
    parameters: {
      "max-bandwidth": 64 * MIB,
      "max-postcopy-bandwidth": 4 * MIB,
    },
    postcopyAfterPasses: 0,
  });
  const destination = new DestinationMigration({
    postcopy: true,
    autostart: false,
  });
  const listener = await listenForMigration(destination, "tcp:127.0.0.1:0");
  const waiting: string[] = [];
  const recoveryAddress = Promise.withResolvers<string>();
  const destinationRecovery = new DestinationAutoRecovery(
    destination,
    "tcp:127.0.0.1:0",
    {
      onWaiting: (address) => {
        waiting.push(address);
        recoveryAddress.resolve(address);
      },
    },
  );
  let pauses = 0;
  const sourceRecovery = new SourceAutoRecovery(source, "(port 0)", {
    onPaused: () => pauses++,
    // The destination picked a free port: connect wherever it waits.
    connect: async () => connectTransport(await recoveryAddress.promise),
  });
  try {
    const postcopy = reached(destination, "postcopy-active");
    const sent = migrate(source, listener.address);
    const received = listener.incoming();
    await postcopy;
    destination.pause();
    const [info, loaded] = await Promise.all([sent, received]);
    assert.equal(info.status, "completed");
    assert.equal(loaded.info.status, "completed");
    assert.equal(pauses, 1);
    assert.equal(waiting.length, 1);
    guest.pause();
    loaded.guest.pause();
    assert.equal(loaded.guest.memory.missingPages, 0);
  } finally {
    sourceRecovery.stop();
    await destinationRecovery.stop();
    await listener.close();
    guest.pause();
    destination.guest?.pause();
  }
});

async function migrate(source: SourceMigration, address: string) {
  return await source.migrate(await connectTransport(address), {
    connect: () => connectTransport(address),
  });
}
