/**
 * QEMU 7.2 → `cli.ts run --incoming defer`, driven over both monitors
 * (QEMU's and livemig's) by the same client code that migrates between
 * two `cli.ts run` processes ({@linkcode migrateOverQmp}).
 */
import assert from "node:assert/strict";
import {
  buildFirmware,
  qemuSkipReason,
  sha256Hex,
  startQemu,
} from "../_helpers/qemu.ts";
import { migrateOverQmp } from "./_drive_migration.ts";
import { startRun } from "./_run_process.ts";

Deno.test({
  name:
    "QEMU 7.2 migrates to cli.ts run --incoming defer, both driven over QMP by the same client code",
  ignore: qemuSkipReason() !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "livemig-qemu-to-run-" });
    try {
      const firmware = await buildFirmware({
        DIRTY_START: 0x100000,
        DIRTY_END: 0x120000,
        DIRTY_OFFSET: 0x80,
        PAUSE: 0x20000,
        STATUS_ADDR: 0x1000,
        PATTERN_START: 0x2000,
        PATTERN_PAGES: 4,
      }, dir);
      await using qemu = await startQemu({ firmware, paused: false });
      const run = await startRun(["--incoming", "defer", "-S", "--json"]);
      try {
        const events = await migrateOverQmp(qemu.qmp, run.qmp, {
          parameters: { "max-bandwidth": 8 << 20 },
        });
        const names = (list: typeof events.source) =>
          list.map((e) =>
            e.event === "MIGRATION" ? `MIGRATION ${e.data.status}` : e.event
          ).filter((name) => name !== "MIGRATION_PASS");
        assert.deepEqual(names(events.source), [
          "MIGRATION setup",
          "MIGRATION active",
          "STOP",
          "MIGRATION completed",
        ]);
        assert.deepEqual(names(events.destination), [
          "MIGRATION setup",
          "MIGRATION active",
          "MIGRATION completed",
        ]);
        assert.deepEqual(await run.qmp.execute("query-migrate"), {
          status: "completed",
        });
        assert.deepEqual(await run.qmp.execute("query-status"), {
          status: "paused",
          singlestep: false,
          running: false,
        });
        await run.qmp.execute("quit");
        const end = await run.finish();
        assert.equal(end.code, 0);
        const digests = end.json!["ram-sha256"] as Record<string, string>;
        assert.deepEqual(Object.keys(digests).sort(), [
          "pc.bios",
          "pc.ram",
          "pc.rom",
        ]);
        // The firmware QEMU ran arrived as its pc.bios block, byte for byte.
        assert.equal(
          digests["pc.bios"],
          await sha256Hex(await Deno.readFile(firmware)),
        );
      } finally {
        await run.kill();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
