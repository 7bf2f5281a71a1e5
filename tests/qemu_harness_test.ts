/**
 * Boots livemig's firmware under a real QEMU and checks, over QMP, that the
 * guest runs and dirties its range. Skipped (with the reason in the test
 * name) when QEMU or nasm is missing or `--allow-run` is not granted.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  buildFirmware,
  pmemsave,
  qemuSkipReason,
  startQemu,
} from "./_helpers/qemu.ts";
import { QmpError } from "./_helpers/qmp.ts";

const SKIP_REASON = qemuSkipReason();
const SKIPPED = SKIP_REASON === undefined ? "" : ` (skipped: ${SKIP_REASON})`;

const DIRTY_START = 0x100000;
const STATUS_ADDR = 0x1000;

Deno.test({
  name: `QEMU runs the firmware and it dirties its range${SKIPPED}`,
  ignore: SKIP_REASON !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "livemig-harness-" });
    try {
      const firmware = await buildFirmware({
        DIRTY_START,
        DIRTY_END: DIRTY_START + 0x4000,
        STATUS_ADDR,
        PAUSE: 0x1000,
      }, dir);
      await using vm = await startQemu({ firmware, paused: false });
      const status = await vm.qmp.execute<{ status: string }>("query-status");
      assert.equal(status.status, "running");

      const first = await pmemsave(vm.qmp, `${dir}/a.bin`, 0x5000, {
        address: DIRTY_START,
      });
      await new Promise((resolve) => setTimeout(resolve, 100));
      const second = await pmemsave(vm.qmp, `${dir}/b.bin`, 0x5000, {
        address: DIRTY_START,
      });
      assert.notDeepEqual(first, second, "the dirty range did not change");
      assert.ok(second[0x4000] === 0, "the page after the range was written");

      const statusPage = await pmemsave(vm.qmp, `${dir}/s.bin`, 16, {
        address: STATUS_ADDR,
      });
      assert.equal(new TextDecoder().decode(statusPage.subarray(0, 4)), "LMFW");
      const passes = new DataView(statusPage.buffer).getUint32(8, true);
      assert.ok(passes > 0, "the firmware finished no pass");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: `QmpClient reports QEMU's errors and events${SKIPPED}`,
  ignore: SKIP_REASON !== undefined,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "livemig-harness-" });
    try {
      const firmware = await buildFirmware({ IDLE: true }, dir);
      await using vm = await startQemu({ firmware });
      const error = await vm.qmp.execute("migrate-set-parameters", {
        "downtime-limit": 2000001,
      }).then(() => undefined, (error: unknown) => error);
      assert.ok(error instanceof QmpError);
      assert.equal(error.errorClass, "GenericError");
      assert.match(error.desc, /downtime_limit|downtime-limit/);
      assert.equal(vm.qmp.greeting.QMP.version.qemu.major >= 7, true);

      await vm.qmp.execute("cont");
      const resume = await vm.qmp.waitForEvent("RESUME", () => true, 5000);
      assert.equal(resume.event, "RESUME");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
