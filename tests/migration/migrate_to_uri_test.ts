import assert from "node:assert/strict";
import {
  DestinationMigration,
  listenTransport,
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

/** A guest whose stream does not fit in the kernel's socket buffers. */
function bigGuest(): SimulatedGuest {
  return new SimulatedGuest({
    ramBytes: 16 * MIB,
    prefill: true,
    running: false,
  });
}

/**
 * Migrates a 16 MiB guest to `uri` with or without a return path and
 * checks that it fails with a message matching `expected`.
 */
async function assertFailsWith(
  uri: string,
  returnPath: boolean,
  expected: RegExp,
): Promise<void> {
  const guest = bigGuest();
  const source = new SourceMigration(guest, {
    capabilities: { "return-path": returnPath },
  });
  const error = await migrateToUri(source, uri).then(
    () => assert.fail(`${uri} completed`),
    (error) => error,
  );
  assert.ok(error instanceof MigrationAbortedError, String(error));
  assert.match(error.message, expected, `${uri}, return-path ${returnPath}`);
  assert.equal(source.status, "failed");
  assert.equal(source.query()["error-desc"], error.message);
  guest.pause();
}

/**
 * A tcp: destination that accepts one connection, reads `bytes` of it (to
 * its end when `Infinity`), then closes it; unread bytes make the kernel
 * reset the connection.
 */
async function closingDestination(
  bytes: number,
): Promise<{ address: string; done: Promise<void> }> {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const done = (async () => {
    try {
      const transport = await listener.accept();
      let read = 0;
      if (bytes > 0) {
        for await (const chunk of transport.readable) {
          read += chunk.byteLength;
          if (read >= bytes) break;
        }
      }
      await transport.close();
    } finally {
      await listener.close();
    }
  })();
  return { address: listener.address, done };
}

const ignoreExec =
  Deno.permissions.querySync({ name: "run", command: "/bin/sh" }).state !==
    "granted";

Deno.test({
  name:
    "migrateToUri() names the exit status of an exec: command that ends early",
  ignore: ignoreExec,
  async fn() {
    for (const returnPath of [false, true]) {
      await assertFailsWith(
        "exec:exit 3",
        returnPath,
        /^Cannot complete migration: Cannot complete "exec:exit 3": the command exited with code 3/,
      );
      await assertFailsWith(
        "exec:head -c 1000 >/dev/null",
        returnPath,
        /^Cannot complete migration: Cannot write to "exec:head -c 1000 >\/dev\/null": the command exited with code 0 before reading all of its input: Broken pipe/,
      );
    }
  },
});

Deno.test("migrateToUri() names a reset or broken connection when a tcp: destination goes away", async () => {
  for (const returnPath of [false, true]) {
    for (const bytes of [0, 300_000]) {
      const destination = await closingDestination(bytes);
      await assertFailsWith(
        destination.address,
        returnPath,
        /^Cannot complete migration: Cannot (write to|read from) "tcp:127\.0\.0\.1:\d+": (Broken pipe|Connection reset by peer)/,
      );
      await destination.done;
    }
  }
});

Deno.test("migrateToUri() with a return path fails when the connection is cut after the last byte, before SHUT", async () => {
  const destination = await closingDestination(Infinity);
  await assertFailsWith(
    destination.address,
    true,
    /^Cannot complete migration: the destination closed the connection without SHUT, so it never confirmed that it loaded the stream$/,
  );
  await destination.done;
});
