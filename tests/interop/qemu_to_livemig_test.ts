/**
 * A running QEMU 7.2 live-migrates into `livemig incoming` (run in-process
 * through `main()`): the RAM livemig ends with must be the RAM QEMU's
 * source held at switchover (its `pmemsave` once it sits in `postmigrate`,
 * legacy window zeroed).
 *
 * @module
 */

import assert from "node:assert/strict";
import { main } from "../../cli.ts";
import {
  freeLoopbackPort,
  type MigrationInfo,
  type QemuInstance,
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
  IDLE_FIRMWARE,
  interopTest,
  lastJsonLine,
  nonZeroPages,
  type SourceOptions,
  startMigration,
  startSource,
  withWorkDir,
} from "./_interop.ts";

/** Parameters that keep a dirtying source iterating until allowed to stop. */
const ITERATING = { "downtime-limit": 1, "max-bandwidth": 1024 * 1024 };

interface Received {
  /** `incoming --json`'s last line. */
  info: MigrationInfo & { "ram-sha256"?: Record<string, string> };
  /** The source's final query-migrate. */
  source: MigrationInfo;
  /** The source's RAM at switchover. */
  sourceRam: Uint8Array;
  /** What `--ram-dump` wrote, by file name. */
  dump: Map<string, Uint8Array>;
}

/**
 * Runs `incoming --json --ram-dump` in-process, migrates `source` into it
 * (letting it switch over after `syncs` dirty syncs when given), and
 * collects both ends' results.
 */
async function receive(
  dir: string,
  source: QemuInstance,
  syncs?: number,
  options: {
    /** More `incoming` flags. */
    flags?: string[];
    /** Runs once the source migrates (e.g. migrate-start-postcopy). */
    started?: () => Promise<unknown>;
  } = {},
): Promise<Received & { err: string }> {
  const port = freeLoopbackPort();
  const io = captureIo();
  const dumpDir = `${dir}/dump`;
  const run = main([
    "incoming",
    `tcp:127.0.0.1:${port}`,
    "--ram-dump",
    dumpDir,
    "--json",
    ...options.flags ?? [],
  ], io);
  await startMigration(source, `tcp:127.0.0.1:${port}`);
  await options.started?.();
  if (syncs !== undefined) await allowSwitchoverAfter(source, syncs);
  const code = await run;
  assert.equal(code, 0, `incoming failed: ${io.err}`);
  const info = lastJsonLine<Received["info"]>(io.out);
  const final = await waitForStatus(source.qmp, "completed", 60_000);
  await waitForRunState(source.qmp, "postmigrate", 10_000);
  const dump = new Map<string, Uint8Array>();
  for await (const entry of Deno.readDir(dumpDir)) {
    dump.set(entry.name, await Deno.readFile(`${dumpDir}/${entry.name}`));
  }
  return {
    info,
    source: final,
    sourceRam: await guestRam(source),
    dump,
    err: io.err,
  };
}

/** Checks what every received migration must show. */
function checkReceived(received: Received, firmware: Uint8Array): void {
  const { info, dump } = received;
  assert.equal(info.status, "completed");
  assert.deepEqual([...dump.keys()].sort(), [
    "pc.bios.bin",
    "pc.ram.bin",
    "pc.rom.bin",
  ]);
  assertSameRam(
    zeroLegacyWindow(dump.get("pc.ram.bin")!),
    received.sourceRam,
    "pc.ram",
  );
  assert.deepEqual(dump.get("pc.bios.bin"), firmware, "pc.bios");
  assert.equal(
    info.ram?.duplicate! + info.ram?.normal!,
    received.source.ram!.duplicate + received.source.ram!.normal,
    "livemig counted other page records than QEMU sent",
  );
}

async function sourceFor(
  dir: string,
  defines: typeof IDLE_FIRMWARE,
  options: SourceOptions,
): Promise<{ source: QemuInstance; image: Uint8Array }> {
  const firmware = await firmwareIn(defines, dir);
  const image = await Deno.readFile(firmware);
  return { source: await startSource(firmware, options), image };
}

interopTest(
  "QEMU 7.2 migrates an idle guest into livemig incoming",
  async () => {
    await withWorkDir(async (dir) => {
      const { source, image } = await sourceFor(dir, IDLE_FIRMWARE, {});
      await using _ = source;
      const received = await receive(dir, source);
      checkReceived(received, image);
      assert.equal(received.info.ram?.total, 16_973_824);
    });
  },
);

interopTest(
  "QEMU 7.2 migrates a dirtying guest over several passes into livemig",
  async () => {
    // A dirty sync that finds nothing dirty (a vCPU the host did not
    // schedule) completes QEMU's precopy at once; such a run is retried.
    for (let attempt = 1;; attempt++) {
      const done = await withWorkDir(async (dir) => {
        const { source, image } = await sourceFor(dir, DIRTY_FIRMWARE, {
          parameters: ITERATING,
          passes: 2,
        });
        await using _ = source;
        const received = await receive(dir, source, 4);
        checkReceived(received, image);
        const syncs = received.source.ram!["dirty-sync-count"];
        if (syncs < 3 && attempt < 3) return false;
        assert.ok(syncs >= 3, `${syncs} dirty syncs`);
        // More PAGE records than non-zero pages: dirty pages were re-sent.
        const nonZero = [...received.dump.values()]
          .reduce((sum, block) => sum + nonZeroPages(block), 0);
        assert.ok(
          received.info.ram!.normal > nonZero,
          `${
            received.info.ram!.normal
          } PAGE records for ${nonZero} non-zero pages`,
        );
        return true;
      });
      if (done) return;
    }
  },
);

interopTest("QEMU 7.2 with xbzrle migrates into livemig", async () => {
  // QEMU completes whenever a dirty sync finds nothing dirty; a run that
  // ends before the third round carries no XBZRLE record and is retried.
  for (let attempt = 1;; attempt++) {
    const done = await withWorkDir(async (dir) => {
      const { source, image } = await sourceFor(dir, DIRTY_FIRMWARE, {
        capabilities: ["xbzrle"],
        parameters: ITERATING,
        passes: 2,
      });
      await using _ = source;
      const received = await receive(dir, source, 4);
      checkReceived(received, image);
      const cache = received.source["xbzrle-cache"];
      if (!(cache!.bytes! > 0) && attempt < 3) return false;
      assert.ok(cache!.bytes! > 0, "QEMU sent no XBZRLE record");
      return true;
    });
    if (done) return;
  }
});

interopTest(
  "QEMU 7.2 with return-path completes once livemig answers SHUT",
  async () => {
    await withWorkDir(async (dir) => {
      const { source, image } = await sourceFor(dir, IDLE_FIRMWARE, {
        capabilities: ["return-path"],
      });
      await using _ = source;
      // The source reports completed only after the destination's SHUT.
      const received = await receive(dir, source);
      checkReceived(received, image);
      assert.equal(received.source.status, "completed");
    });
  },
);

interopTest(
  "livemig incoming fails cleanly when the QEMU source is killed mid-stream",
  async () => {
    await withWorkDir(async (dir) => {
      const { source } = await sourceFor(dir, DIRTY_FIRMWARE, {
        parameters: ITERATING,
        passes: 2,
      });
      await using _ = source;
      const port = freeLoopbackPort();
      const io = captureIo();
      const dumpDir = `${dir}/dump`;
      const run = main([
        "incoming",
        `tcp:127.0.0.1:${port}`,
        "--ram-dump",
        dumpDir,
        "--json",
      ], io);
      await startMigration(source, `tcp:127.0.0.1:${port}`);
      // Mid-stream: several passes sent, never allowed to switch over.
      await waitForStatus(source.qmp, "active", 30_000, {
        until: (info) => (info.ram?.["dirty-sync-count"] ?? 0) >= 3,
      });
      Deno.kill(source.pid, "SIGKILL");
      await source.exited;
      assert.equal(await run, 1);
      const info = lastJsonLine<MigrationInfo>(io.out);
      assert.equal(info.status, "failed");
      assert.match(info["error-desc"]!, /stream ended/);
      assert.match(
        io.err,
        /^livemig: Cannot complete the incoming migration: Cannot read .* at offset \d+ as the stream ended/m,
      );
      assert.doesNotMatch(io.out, /completed/);
      await assert.rejects(Deno.stat(dumpDir), Deno.errors.NotFound);
    });
  },
);

interopTest(
  "QEMU 7.2 switches to postcopy into livemig incoming: background pages placed by its worker equal the source's RAM",
  async () => {
    await withWorkDir(async (dir) => {
      const { source, image } = await sourceFor(dir, {
        ...DIRTY_FIRMWARE,
        PATTERN_START: 0x200000,
        PATTERN_PAGES: 0x800,
      }, {
        capabilities: ["postcopy-ram"],
        // Precopy would never complete on its own (1 ms downtime).
        parameters: { "downtime-limit": 1, "max-bandwidth": 4 * 1024 * 1024 },
        passes: 2,
      });
      await using _ = source;
      const received = await receive(dir, source, undefined, {
        flags: ["-c", "postcopy-ram=on"],
        // Switch at once: most of RAM is still on the source.
        started: () => source.qmp.execute("migrate-start-postcopy"),
      });
      assert.match(received.err, /postcopy-active/);
      const postcopyBytes = received.info.ram!["postcopy-bytes"] as number;
      assert.ok(
        postcopyBytes > 4 * 1024 * 1024,
        `${postcopyBytes} bytes came in postcopy`,
      );
      checkReceived(received, image);
    });
  },
);
