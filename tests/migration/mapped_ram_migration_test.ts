import assert from "node:assert/strict";
import {
  DestinationMigration,
  openRandomAccessFile,
  ramSha256,
  SimulatedGuest,
  SourceMigration,
} from "../../mod.ts";

const MIB = 1024 * 1024;

Deno.test("a live migration into a mapped-ram file keeps its size bounded and restores the guest", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const sizes: number[] = [];
    for (const passes of [2, 6]) {
      const guest = new SimulatedGuest({
        ramBytes: 4 * MIB,
        workload: { kind: "sweep", bytesPerSecond: 16 * MIB },
        prefill: true,
        seed: 9,
      });
      const path = `${dir}/guest-${passes}.mr`;
      const file = await openRandomAccessFile(path, {
        create: true,
        truncate: true,
      });
      let info;
      try {
        const source = new SourceMigration(guest, {
          capabilities: { "mapped-ram": true },
          parameters: { "max-bandwidth": 8 * MIB, "downtime-limit": 1 },
        });
        source.addEventListener("status", () => {});
        const stopAt = setInterval(() => {
          // Let it iterate `passes` times, then let it converge.
          if ((source.query().ram?.["dirty-sync-count"] ?? 0) >= passes) {
            source.setParameters({ "downtime-limit": 2000 });
            clearInterval(stopAt);
          }
        }, 5);
        info = await source.migrateToFile(file, { offset: 4096 });
        clearInterval(stopAt);
      } finally {
        await file.close();
      }
      assert.equal(info.status, "completed");
      assert.ok(info.ram!["dirty-sync-count"] >= passes);
      sizes.push((await Deno.stat(path)).size);
      const reading = await openRandomAccessFile(path, { readOnly: true });
      try {
        const result = await new DestinationMigration({ autostart: false })
          .incomingMappedRam(reading, { offset: 4096 });
        assert.deepEqual(
          await ramSha256(result.guest.memory),
          await ramSha256(guest.memory),
        );
        assert.deepEqual(
          (result.guest as SimulatedGuest).workload.progress,
          guest.workload.progress,
          "the device state arrived",
        );
      } finally {
        await reading.close();
      }
    }
    // Pages sent again are rewritten in place: more passes resend
    // megabytes but the file only grows by the 18-byte EOS-only PART
    // sections of the extra iteration steps, never by a page.
    assert.ok(sizes[1]! - sizes[0]! < 4096, `sizes ${sizes}`);
    assert.ok(sizes[0]! < 4 * MIB + 2 * MIB, `file size ${sizes[0]}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mapped-ram needs a file and refuses XBZRLE and postcopy", async () => {
  const guest = new SimulatedGuest({ ramBytes: MIB, running: false });
  assert.throws(
    () =>
      new SourceMigration(guest, {
        capabilities: { "mapped-ram": true, xbzrle: true },
      }),
    /incompatible with "xbzrle"/,
  );
  const source = new SourceMigration(guest, {
    capabilities: { "mapped-ram": true },
  });
  const [a] = (await import("../../mod.ts")).createMemoryTransportPair();
  await assert.rejects(source.migrate(a), /needs a random-access file/);
  const plain = new SourceMigration(guest);
  const path = await Deno.makeTempFile();
  const file = await openRandomAccessFile(path);
  try {
    await assert.rejects(
      plain.migrateToFile(file),
      /mapped-ram capability is off/,
    );
  } finally {
    await file.close();
    await Deno.remove(path);
  }
});
