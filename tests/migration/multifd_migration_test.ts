/**
 * livemig → livemig with multifd (2 and 4 channels; none, zlib, zstd) over
 * loopback TCP and a Unix socket, with a guest that keeps dirtying RAM for
 * several rounds: the destination's RAM must equal the source's at
 * switchover, and the pages must have travelled on the channels.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  DestinationMigration,
  listenForMigration,
  migrateToUri,
  type MultifdCompression,
  NotSupportedError,
  ramSha256,
  SimulatedGuest,
  SourceMigration,
} from "../../mod.ts";

type Compression = MultifdCompression;

const MIB = 1024 * 1024;

async function migrateMultifd(
  channels: number,
  compression: Compression,
  uri = "tcp:127.0.0.1:0",
) {
  const guest = new SimulatedGuest({
    ramBytes: 8 * MIB,
    prefill: true,
    seed: 11,
    workload: { kind: "random", bytesPerSecond: 16 * MIB },
  });
  const source = new SourceMigration(guest, {
    capabilities: { multifd: true, "return-path": true },
    parameters: {
      "multifd-channels": channels,
      "multifd-compression": compression,
      "max-bandwidth": 64 * MIB,
      "downtime-limit": 20,
    },
  });
  let loaded: Record<string, string> = {};
  const destination = new DestinationMigration({
    autostart: false,
    multifd: { channels, compression },
    beforeResume: async (g) => {
      loaded = await ramSha256(g.memory);
    },
  });
  const listener = await listenForMigration(destination, uri);
  try {
    const [sent, received] = await Promise.all([
      migrateToUri(source, listener.address),
      listener.incoming(),
    ]);
    return { sent, received, loaded, sourceRam: await ramSha256(guest.memory) };
  } finally {
    await listener.close();
  }
}

for (const channels of [2, 4]) {
  for (const compression of ["none", "zlib", "zstd"] as const) {
    Deno.test(`livemig migrates to livemig with multifd (${channels} channels, ${compression}) over several rounds`, async () => {
      const { sent, received, loaded, sourceRam } = await migrateMultifd(
        channels,
        compression,
      );
      assert.equal(sent.status, "completed");
      assert.equal(received.info.status, "completed");
      assert.deepEqual(loaded, sourceRam);
      assert.ok(sent.ram!["dirty-sync-count"] >= 3, "several rounds");
      // QEMU's count: headers and uncompressed pages, on both ends.
      assert.ok(sent.ram!["multifd-bytes"] > 8 * MIB);
      assert.equal(
        received.info.ram!["multifd-bytes"],
        sent.ram!["multifd-bytes"],
      );
      assert.equal(received.info.ram!.normal, sent.ram!.normal);
    });
  }
}

Deno.test("livemig multifd runs over a Unix socket", async () => {
  // The one socket path the test task's permissions allow.
  await Deno.remove("/tmp/livemig-test.sock").catch(() => {});
  const { sent, loaded, sourceRam } = await migrateMultifd(
    2,
    "none",
    "unix:/tmp/livemig-test.sock",
  );
  assert.equal(sent.status, "completed");
  assert.deepEqual(loaded, sourceRam);
});

Deno.test("livemig multifd refuses exec: and file: with QEMU 7.2's messages", async () => {
  const guest = new SimulatedGuest({ ramBytes: MIB, running: false });
  const source = new SourceMigration(guest, {
    capabilities: { multifd: true },
  });
  await assert.rejects(migrateToUri(source, "exec:cat >/dev/null"), {
    name: NotSupportedError.name,
    message: "multifd is not supported by current protocol",
  });
  await assert.rejects(migrateToUri(source, "file:/tmp/x"), {
    message: "Parameter 'uri' expects a valid migration protocol",
  });
});

Deno.test("livemig's source refuses multifd with postcopy-ram, which it does not implement", () => {
  const guest = new SimulatedGuest({ ramBytes: MIB, running: false });
  assert.throws(
    () =>
      new SourceMigration(guest, {
        capabilities: { multifd: true, "postcopy-ram": true },
      }),
    NotSupportedError,
  );
});
