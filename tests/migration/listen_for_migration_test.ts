import assert from "node:assert/strict";
import { createManualClock } from "../_helpers/manual_clock.ts";
import {
  connectTransport,
  DestinationMigration,
  listenForMigration,
  migrateToUri,
  MigrationAbortedError,
  openRandomAccessFile,
  ramSha256,
  SimulatedGuest,
  SourceMigration,
} from "../../mod.ts";

const MIB = 1024 * 1024;

function newGuest(): SimulatedGuest {
  return new SimulatedGuest({ ramBytes: MIB, prefill: true, running: false });
}

Deno.test("listenForMigration() listens on a tcp: URI and loads the first connection", async () => {
  const destination = new DestinationMigration({ autostart: false });
  const listener = await listenForMigration(destination, "tcp:127.0.0.1:0");
  try {
    assert.equal(destination.status, "setup");
    assert.match(listener.address, /^tcp:127\.0\.0\.1:[1-9]\d*$/);
    const guest = newGuest();
    const [info, loaded] = await Promise.all([
      connectTransport(listener.address).then((transport) =>
        new SourceMigration(guest).migrate(transport)
      ),
      listener.incoming(),
    ]);
    assert.equal(info.status, "completed");
    assert.equal(loaded.info.status, "completed");
    assert.deepEqual(
      await ramSha256(loaded.guest.memory),
      await ramSha256(guest.memory),
    );
  } finally {
    await listener.close();
  }
});

Deno.test("listenForMigration() with mappedRam loads the file a file: URI names", async () => {
  const path = await Deno.makeTempFile({ suffix: ".mr" });
  try {
    const guest = newGuest();
    const file = await openRandomAccessFile(path, { create: true });
    try {
      await new SourceMigration(guest, { capabilities: { "mapped-ram": true } })
        .migrateToFile(file, { offset: 8192 });
    } finally {
      await file.close();
    }
    const uri = `file:${path},offset=8192`;
    const destination = new DestinationMigration({ autostart: false });
    const listener = await listenForMigration(destination, uri, {
      mappedRam: true,
    });
    assert.equal(listener.address, uri);
    assert.equal(destination.status, "setup");
    const loaded = await listener.incoming();
    await listener.close();
    assert.equal(loaded.info.status, "completed");
    assert.deepEqual(
      await ramSha256(loaded.guest.memory),
      await ramSha256(guest.memory),
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("listenForMigration() with mappedRam refuses a URI that names no file", async () => {
  await assert.rejects(
    listenForMigration(new DestinationMigration(), "tcp:127.0.0.1:0", {
      mappedRam: true,
    }),
    new TypeError(
      'Cannot load mapped-ram from "tcp:127.0.0.1:0": it needs a file: URI',
    ),
  );
});

async function mappedRamFile(path: string, guest: SimulatedGuest) {
  const file = await openRandomAccessFile(path, { create: true });
  try {
    await new SourceMigration(guest, { capabilities: { "mapped-ram": true } })
      .migrateToFile(file);
  } finally {
    await file.close();
  }
}

Deno.test("listenForMigration() loads a mapped-ram file as one when not told", async () => {
  const path = await Deno.makeTempFile({ suffix: ".mr" });
  try {
    const guest = newGuest();
    await mappedRamFile(path, guest);
    const destination = new DestinationMigration({ autostart: false });
    const listener = await listenForMigration(destination, `file:${path}`);
    assert.equal(listener.format, "mapped-ram");
    const loaded = await listener.incoming();
    await listener.close();
    assert.equal(loaded.info.ram?.normal, 256);
    assert.deepEqual(
      await ramSha256(loaded.guest.memory),
      await ramSha256(guest.memory),
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("listenForMigration() fails a mapped-ram file it is told is a stream", async () => {
  const path = await Deno.makeTempFile({ suffix: ".mr" });
  try {
    await mappedRamFile(path, newGuest());
    const destination = new DestinationMigration({ autostart: false });
    const listener = await listenForMigration(destination, `file:${path}`, {
      mappedRam: false,
    });
    assert.equal(listener.format, "stream");
    await assert.rejects(
      listener.incoming(),
      (error: unknown) =>
        error instanceof MigrationAbortedError &&
        /Cannot load a mapped-ram stream as a stream/.test(error.message),
    );
    await listener.close();
    assert.equal(destination.status, "failed");
    assert.match(destination.query()["error-desc"]!, /fixed offsets/);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("listenForMigration() fails a stream file it is told is mapped-ram", async () => {
  const path = await Deno.makeTempFile({ suffix: ".mig" });
  try {
    await migrateToUri(new SourceMigration(newGuest()), `file:${path}`);
    const destination = new DestinationMigration({ autostart: false });
    const listener = await listenForMigration(destination, `file:${path}`, {
      mappedRam: true,
    });
    assert.equal(listener.format, "mapped-ram");
    await assert.rejects(listener.incoming(), /a plain migration stream/);
    await listener.close();
    assert.equal(destination.status, "failed");
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("listenForMigration() refuses a second source at once while a migration runs", async () => {
  const refused: string[] = [];
  const destination = new DestinationMigration({ autostart: false });
  const listener = await listenForMigration(destination, "tcp:127.0.0.1:0", {
    onRefused: (peer) => refused.push(peer),
  });
  try {
    const guest = new SimulatedGuest({
      ramBytes: 4 * MIB,
      prefill: true,
      running: false,
    });
    const source = new SourceMigration(guest, {
      parameters: { "max-bandwidth": 8 * MIB },
    });
    const outgoing = await connectTransport(listener.address);
    const loaded = listener.incoming();
    const sent = source.migrate(outgoing);
    const intruder = await connectTransport(listener.address);
    assert.deepEqual(await Array.fromAsync(intruder.readable), []);
    await intruder.close();
    assert.equal(refused.length, 1);
    assert.equal(destination.status, "active");
    const [info, result] = await Promise.all([sent, loaded]);
    assert.equal(info.status, "completed");
    assert.equal(result.info.status, "completed");
  } finally {
    await listener.close();
  }
});

Deno.test("listenForMigration() with idleTimeoutMs fails a source that sends nothing", async () => {
  const clock = createManualClock();
  const destination = new DestinationMigration();
  const listener = await listenForMigration(destination, "tcp:127.0.0.1:0", {
    idleTimeoutMs: 10_000,
    clock,
  });
  try {
    const silent = await connectTransport(listener.address);
    const loaded = listener.incoming();
    await clock.untilSleeping();
    clock.advance(10_000);
    await assert.rejects(loaded, (error: unknown) => {
      assert.ok(error instanceof MigrationAbortedError);
      assert.match(
        error.message,
        /^Cannot complete the incoming migration: Cannot read from "tcp:[^"]+": nothing arrived for 10000 ms \(idle timeout\)/,
      );
      return true;
    });
    assert.equal(destination.status, "failed");
    await silent.close();
  } finally {
    await listener.close();
  }
});
