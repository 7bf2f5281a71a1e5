/**
 * A running QEMU 7.2 with multifd (2 and 4 channels; none, zlib, zstd)
 * live-migrates into `livemig incoming -c multifd=on` (run in-process
 * through `main()`): the RAM livemig ends with must be the RAM QEMU's source
 * held at switchover, over several rounds of a dirtying guest.
 *
 * @module
 */

import assert from "node:assert/strict";
import { main } from "../../cli.ts";
import {
  freeLoopbackPort,
  type MigrationInfo,
  waitForRunState,
  waitForStatus,
  zeroLegacyWindow,
} from "../_helpers/qemu.ts";
import {
  allowSwitchoverAfter,
  assertSameRam,
  captureIo,
  DIRTY_FIRMWARE,
  firmwareIn,
  guestRam,
  interopTest,
  lastJsonLine,
  startMigration,
  startSource,
  withWorkDir,
} from "./_interop.ts";

/** Parameters that keep a dirtying source iterating until allowed to stop. */
const ITERATING = { "downtime-limit": 1, "max-bandwidth": 1024 * 1024 };

for (const channels of [2, 4]) {
  for (const compression of ["none", "zlib", "zstd"]) {
    interopTest(
      `QEMU 7.2 with multifd (${channels} channels, ${compression}) migrates a dirtying guest into livemig`,
      async () => {
        await withWorkDir(async (dir) => {
          const firmware = await firmwareIn(DIRTY_FIRMWARE, dir);
          const image = await Deno.readFile(firmware);
          const source = await startSource(firmware, {
            capabilities: ["multifd"],
            parameters: { ...ITERATING, "multifd-channels": channels },
            passes: 2,
          });
          await using _ = source;
          await source.qmp.execute("migrate-set-parameters", {
            "multifd-compression": compression,
          });
          const port = freeLoopbackPort();
          const io = captureIo();
          const dumpDir = `${dir}/dump`;
          const run = main([
            "incoming",
            `tcp:127.0.0.1:${port}`,
            "-c",
            "multifd=on",
            "-p",
            `multifd-channels=${channels}`,
            "-p",
            `multifd-compression=${compression}`,
            "--ram-dump",
            dumpDir,
            "--json",
          ], io);
          await startMigration(source, `tcp:127.0.0.1:${port}`);
          await allowSwitchoverAfter(source, 3);
          const code = await run;
          assert.equal(code, 0, `incoming failed: ${io.err}`);
          const info = lastJsonLine<MigrationInfo>(io.out);
          const final = await waitForStatus(source.qmp, "completed", 60_000);
          await waitForRunState(source.qmp, "postmigrate", 10_000);
          assert.equal(info.status, "completed");
          assertSameRam(
            zeroLegacyWindow(await Deno.readFile(`${dumpDir}/pc.ram.bin`)),
            await guestRam(source),
            "pc.ram",
          );
          assert.deepEqual(
            await Deno.readFile(`${dumpDir}/pc.bios.bin`),
            image,
            "pc.bios",
          );
          // Pages came on the channels, ZERO records on the main stream:
          // livemig placed as many of each as QEMU sent.
          assert.ok(final.ram!.normal > 0);
          assert.equal(info.ram?.normal, final.ram!.normal);
          assert.equal(info.ram?.duplicate, final.ram!.duplicate);
          assert.equal(
            info.ram?.["multifd-bytes"],
            final.ram!["multifd-bytes"],
          );
        });
      },
    );
  }
}
