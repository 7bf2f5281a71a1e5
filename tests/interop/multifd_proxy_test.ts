/**
 * `livemig proxy` re-channels a multifd migration between two real QEMU
 * 7.2 processes: the source sends on one channel count and compression,
 * the destination (`-incoming defer`, multifd set before
 * `migrate-incoming`) expects another, and its RAM must be the source's
 * at switchover.
 *
 * @module
 */

import assert from "node:assert/strict";
import { main } from "../../cli.ts";
import type { MigrationProxyInfo } from "../../mod.ts";
import { incomingPort, startQemu, waitForStatus } from "../_helpers/qemu.ts";
import {
  allowSwitchoverAfter,
  assertSameRam,
  captureIo,
  DIRTY_FIRMWARE,
  firmwareIn,
  guestRam,
  interopTest,
  lastJsonLine,
  RAM_MIB,
  startMigration,
  startSource,
  withWorkDir,
} from "./_interop.ts";

/** Parameters that keep a dirtying source iterating until allowed to stop. */
const ITERATING = { "downtime-limit": 1, "max-bandwidth": 1024 * 1024 };

interface Side {
  /** multifd-channels, or 0 for multifd off. */
  channels: number;
  compression: "none" | "zlib" | "zstd";
}

async function setMultifd(
  qmp: {
    execute(command: string, args?: Record<string, unknown>): Promise<unknown>;
  },
  side: Side,
): Promise<void> {
  if (side.channels === 0) return;
  await qmp.execute("migrate-set-capabilities", {
    capabilities: [{ capability: "multifd", state: true }],
  });
  await qmp.execute("migrate-set-parameters", {
    "multifd-channels": side.channels,
    "multifd-compression": side.compression,
  });
}

async function proxied(from: Side, to: Side): Promise<void> {
  await withWorkDir(async (dir) => {
    const firmware = await firmwareIn(DIRTY_FIRMWARE, dir);
    await using destination = await startQemu({
      firmware,
      ramMiB: RAM_MIB,
      incoming: "defer",
    });
    await setMultifd(destination.qmp, to);
    await destination.qmp.execute("migrate-incoming", {
      uri: "tcp:127.0.0.1:0",
    });
    const target = `tcp:127.0.0.1:${await incomingPort(destination.qmp)}`;
    await using source = await startSource(firmware, {
      parameters: ITERATING,
      passes: 2,
    });
    await setMultifd(source.qmp, from);
    const io = captureIo();
    const args = ["proxy", "tcp:127.0.0.1:0", target, "--json"];
    if (from.channels > 0) {
      args.push(
        "--source-multifd-channels",
        `${from.channels}`,
        "--source-multifd-compression",
        from.compression,
      );
    }
    if (to.channels > 0) {
      args.push(
        "-c",
        "multifd=on",
        "-p",
        `multifd-channels=${to.channels}`,
        "-p",
        `multifd-compression=${to.compression}`,
      );
    }
    const run = main(args, io);
    const [, address] = await io.waitForErr(
      /waiting for a migration at (\S+),/,
    );
    await startMigration(source, address!);
    await allowSwitchoverAfter(source, 3).catch(async (error) => {
      const code = await run;
      throw new Error(
        `${error.message}; the proxy exited ${code}: ${io.err}${io.out}`,
      );
    });
    const code = await run;
    assert.equal(code, 0, `proxy failed: ${io.err}`);
    const info = lastJsonLine<MigrationProxyInfo>(io.out);
    assert.equal(info.status, "completed");
    await waitForStatus(source.qmp, "completed", 60_000);
    await waitForStatus(destination.qmp, "completed", 60_000);
    assertSameRam(
      await guestRam(destination),
      await guestRam(source),
      "pc.ram",
    );
  });
}

interopTest(
  "livemig proxy re-channels QEMU 7.2 multifd 2 channels none into 4 channels zstd",
  () =>
    proxied({ channels: 2, compression: "none" }, {
      channels: 4,
      compression: "zstd",
    }),
);

interopTest(
  "livemig proxy re-channels QEMU 7.2 multifd 4 channels zlib into 2 channels zlib",
  () =>
    proxied({ channels: 4, compression: "zlib" }, {
      channels: 2,
      compression: "zlib",
    }),
);

interopTest(
  "livemig proxy takes QEMU 7.2 multifd 2 channels zstd to a QEMU without multifd",
  () =>
    proxied({ channels: 2, compression: "zstd" }, {
      channels: 0,
      compression: "none",
    }),
);

interopTest(
  "livemig proxy sends a QEMU 7.2 stream without multifd on 2 channels none",
  () =>
    proxied({ channels: 0, compression: "none" }, {
      channels: 2,
      compression: "none",
    }),
);
