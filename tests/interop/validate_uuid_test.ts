/**
 * validate-uuid against QEMU 7.2: a source started with `-uuid` and the
 * capability on puts its UUID in the CONFIGURATION section; livemig decodes
 * it and `incoming --uuid` loads the stream only when its UUID is the same,
 * refusing another with QEMU's own text.
 *
 * @module
 */

import assert from "node:assert/strict";
import { main } from "../../cli.ts";
import {
  type ConfigurationRecord,
  formatUuid,
  MigrationDecoderStream,
} from "../../mod.ts";
import {
  freeLoopbackPort,
  type MigrationInfo,
  waitForStatus,
} from "../_helpers/qemu.ts";
import {
  captureIo,
  firmwareIn,
  IDLE_FIRMWARE,
  interopTest,
  lastJsonLine,
  startMigration,
  startSource,
  withWorkDir,
} from "./_interop.ts";

const UUID = "6b2d7b0c-3e61-4f3a-9c3e-1a2b3c4d5e6f";
const OTHER = "00000000-0000-0000-0000-000000000001";

/** Records QEMU's stream with validate-uuid (and `-uuid UUID`) to a file. */
async function recordStream(dir: string): Promise<string> {
  const firmware = await firmwareIn(IDLE_FIRMWARE, dir);
  await using source = await startSource(firmware, {
    capabilities: ["validate-uuid"],
    extraArgs: ["-uuid", UUID],
  });
  const path = `${dir}/stream.bin`;
  await source.qmp.execute("migrate", { uri: `exec:cat > ${path}` });
  await waitForStatus(source.qmp, "completed", 60_000);
  return path;
}

async function configurationOf(path: string): Promise<ConfigurationRecord> {
  using file = await Deno.open(path);
  for await (
    const batch of file.readable.pipeThrough(new MigrationDecoderStream())
  ) {
    const found = batch.find((record) => record.type === "configuration");
    if (found) return found as ConfigurationRecord;
  }
  throw new Error("Cannot find the CONFIGURATION section");
}

interopTest(
  "QEMU 7.2 with validate-uuid: its UUID decodes and incoming --uuid checks it",
  async () => {
    await withWorkDir(async (dir) => {
      const path = await recordStream(dir);
      const configuration = await configurationOf(path);
      assert.equal(formatUuid(configuration.uuid!), UUID);

      const same = captureIo();
      const args = ["incoming", `file:${path}`, "--json", "--no-hugepages"];
      assert.equal(await main([...args, "--uuid", UUID], same), 0, same.err);
      assert.equal(lastJsonLine<MigrationInfo>(same.out).status, "completed");

      const other = captureIo();
      assert.equal(await main([...args, "--uuid", OTHER], other), 1);
      const message =
        `Cannot load the CONFIGURATION section: UUID received is ${UUID} and local is ${OTHER}`;
      const info = lastJsonLine<MigrationInfo>(other.out);
      assert.equal(info.status, "failed");
      assert.equal(info["error-desc"], message);
      assert.match(other.err, new RegExp(`: ${message}\n`));

      const none = captureIo();
      assert.equal(await main(args, none), 0, none.err);
      assert.match(
        none.err,
        new RegExp(
          `warning: UUID is received ${UUID}, but local uuid isn't set`,
        ),
      );
    });
  },
);

interopTest(
  "QEMU 7.2 with validate-uuid fails to migrate into livemig with another UUID",
  async () => {
    await withWorkDir(async (dir) => {
      const firmware = await firmwareIn(IDLE_FIRMWARE, dir);
      await using source = await startSource(firmware, {
        capabilities: ["validate-uuid", "return-path"],
        extraArgs: ["-uuid", UUID],
      });
      const port = freeLoopbackPort();
      const io = captureIo();
      const run = main([
        "incoming",
        `tcp:127.0.0.1:${port}`,
        "--uuid",
        OTHER,
        "--progress",
        "off",
        "--no-hugepages",
      ], io);
      await startMigration(source, `tcp:127.0.0.1:${port}`);
      assert.equal(await run, 1);
      assert.match(io.err, /UUID received is 6b2d7b0c-.* and local is 0{8}-/);
      // The guest stays with QEMU, which keeps running it.
      const info = await waitForStatus(source.qmp, "failed", 30_000);
      assert.equal(info.status, "failed");
    });
  },
);

interopTest(
  "QEMU 7.2 with validate-uuid is refused by run --uuid with another UUID",
  async () => {
    await withWorkDir(async (dir) => {
      const firmware = await firmwareIn(IDLE_FIRMWARE, dir);
      await using source = await startSource(firmware, {
        capabilities: ["validate-uuid"],
        extraArgs: ["-uuid", UUID],
      });
      const port = freeLoopbackPort();
      const io = captureIo();
      const args = ["--incoming", `tcp:127.0.0.1:${port}`, "--uuid", OTHER];
      const run = main(["run", ...args, "--json", "--no-hugepages"], io);
      await startMigration(source, `tcp:127.0.0.1:${port}`);
      // As a QEMU destination, run exits once the load failed.
      assert.equal(await run, 1, io.err);
      const json = lastJsonLine<{ migration: MigrationInfo }>(io.out);
      assert.equal(json.migration.status, "failed");
      assert.match(
        io.err,
        new RegExp(`UUID received is ${UUID} and local is ${OTHER}\n`),
      );
    });
  },
);
