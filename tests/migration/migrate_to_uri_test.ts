import assert from "node:assert/strict";
import {
  DestinationMigration,
  listenTransport,
  migrateToUri,
  openRandomAccessFile,
  ramSha256,
  SimulatedGuest,
  SourceMigration,
} from "../../mod.ts";

const MIB = 1024 * 1024;

function newGuest(): SimulatedGuest {
  return new SimulatedGuest({ ramBytes: MIB, prefill: true, running: false });
}

Deno.test("migrateToUri() migrates over the stream a tcp: URI opens", async () => {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  try {
    const guest = newGuest();
    const destination = new DestinationMigration({ autostart: false });
    const [info, loaded] = await Promise.all([
      migrateToUri(new SourceMigration(guest), listener.address),
      listener.accept().then((transport) => destination.incoming(transport)),
    ]);
    assert.equal(info.status, "completed");
    assert.deepEqual(
      await ramSha256(loaded.guest.memory),
      await ramSha256(guest.memory),
    );
  } finally {
    await listener.close();
  }
});

Deno.test("migrateToUri() writes a mapped-ram file at the file: URI's offset", async () => {
  const path = await Deno.makeTempFile({ suffix: ".mr" });
  try {
    await Deno.writeFile(path, new Uint8Array(4096).fill(0xee));
    const guest = newGuest();
    const source = new SourceMigration(guest, {
      capabilities: { "mapped-ram": true },
    });
    const info = await migrateToUri(source, `file:${path},offset=4096`);
    assert.equal(info.status, "completed");
    const bytes = await Deno.readFile(path);
    assert.ok(bytes.subarray(0, 4096).every((b) => b === 0xee), "kept");
    const file = await openRandomAccessFile(path, { readOnly: true });
    try {
      const loaded = await new DestinationMigration({ autostart: false })
        .incomingMappedRam(file, { offset: 4096 });
      assert.deepEqual(
        await ramSha256(loaded.guest.memory),
        await ramSha256(guest.memory),
      );
    } finally {
      await file.close();
    }
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("migrateToUri() refuses mapped-ram to a URI that names no file", async () => {
  const source = new SourceMigration(newGuest(), {
    capabilities: { "mapped-ram": true },
  });
  await assert.rejects(
    migrateToUri(source, "tcp:127.0.0.1:1"),
    new TypeError(
      'Cannot migrate with mapped-ram to "tcp:127.0.0.1:1": it needs a file: URI',
    ),
  );
  assert.equal(source.status, "none");
});

Deno.test("migrateToUri() rejects a malformed URI before migrating", async () => {
  const source = new SourceMigration(newGuest());
  await assert.rejects(migrateToUri(source, "tcp:nohost"), TypeError);
  assert.equal(source.status, "none");
});
