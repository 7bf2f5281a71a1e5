/**
 * `livemig proxy` between two real QEMU 7.2 processes: the source migrates
 * to the proxy, the proxy re-encodes every RAM record and forwards the
 * stream to a destination started with `-incoming` (and `-S`, so its RAM
 * can be compared with the source's before it is resumed with `cont`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { main } from "../../cli.ts";
import type { MigrationProxyInfo } from "../../mod.ts";
import {
  incomingPort,
  type MigrationInfo,
  type QemuInstance,
  startQemu,
  waitForRunState,
  waitForStatus,
} from "../_helpers/qemu.ts";
import {
  allowSwitchoverAfter,
  assertSameRam,
  captureIo,
  DIRTY_FIRMWARE,
  firmwareIn,
  guestPasses,
  guestRam,
  IDLE_FIRMWARE,
  interopTest,
  lastJsonLine,
  RAM_MIB,
  type SourceOptions,
  startMigration,
  startSource,
  waitForGuestPasses,
  withWorkDir,
} from "./_interop.ts";

/** Parameters that keep a dirtying source iterating until allowed to stop. */
const ITERATING = { "downtime-limit": 1, "max-bandwidth": 1024 * 1024 };

const CLI = new URL("../../cli.ts", import.meta.url);

/** Both QEMUs of a proxied migration. */
interface Pair {
  source: QemuInstance;
  destination: QemuInstance;
  /** The destination's migration address. */
  target: string;
}

/** Starts a paused destination with `-incoming`, then the source. */
async function startPair(
  dir: string,
  defines: typeof IDLE_FIRMWARE,
  options: SourceOptions,
): Promise<Pair> {
  const firmware = await firmwareIn(defines, dir);
  const destination = await startQemu({
    firmware,
    ramMiB: RAM_MIB,
    incoming: "tcp:127.0.0.1:0",
  });
  try {
    const target = `tcp:127.0.0.1:${await incomingPort(destination.qmp)}`;
    const source = await startSource(firmware, options);
    return { source, destination, target };
  } catch (error) {
    await destination.stop();
    throw error;
  }
}

/** How a proxy run is driven. */
interface ProxyCase {
  /** Extra proxy arguments. */
  args: string[];
  /** Let the source switch over after this many dirty syncs. */
  syncs?: number;
}

/** Runs `livemig proxy --json` in-process between the pair. */
async function proxyInProcess(
  pair: Pair,
  options: ProxyCase,
): Promise<{ code: number; info: MigrationProxyInfo; err: string }> {
  const io = captureIo();
  const run = main([
    "proxy",
    "tcp:127.0.0.1:0",
    pair.target,
    "--json",
    ...options.args,
  ], io);
  const [, address] = await io.waitForErr(/waiting for a migration at (\S+),/);
  await startMigration(pair.source, address!);
  if (options.syncs !== undefined) {
    await allowSwitchoverAfter(pair.source, options.syncs);
  }
  const code = await run;
  return { code, info: lastJsonLine<MigrationProxyInfo>(io.out), err: io.err };
}

/** How long a proxy child may run before it is killed and the test fails. */
const PROXY_DEADLINE_MS = 180_000;

/**
 * Runs `deno run cli.ts proxy --json` as a child process between the pair.
 * The child is killed after {@linkcode PROXY_DEADLINE_MS}, so a stuck proxy
 * fails the test instead of hanging it.
 */
async function proxySubprocess(
  pair: Pair,
  options: ProxyCase,
): Promise<{ code: number; info: MigrationProxyInfo; err: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      CLI.pathname,
      "proxy",
      "tcp:127.0.0.1:0",
      pair.target,
      "--json",
      ...options.args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let killed = false;
  const watchdog = setTimeout(() => {
    killed = true;
    kill(child.pid);
  }, PROXY_DEADLINE_MS);
  const stdout = new Response(child.stdout).text();
  // The proxy says where it listens on stderr; the JSON comes on stdout.
  const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let err = "";
  const readErr = async (until?: RegExp) => {
    while (true) {
      const { value, done } = await lines.read();
      if (done) return undefined;
      err += value;
      const match = until && err.match(until);
      if (match) return match;
    }
  };
  let rest: Promise<unknown> = Promise.resolve();
  try {
    const match = await readErr(/waiting for a migration at (\S+),/);
    if (match === undefined) {
      throw new Error(
        `The proxy ended${
          killed ? ` (killed after ${PROXY_DEADLINE_MS} ms)` : ""
        } before saying where it listens: ${await stdout}${err}`,
      );
    }
    rest = readErr();
    await startMigration(pair.source, match[1]!);
    if (options.syncs !== undefined) {
      await allowSwitchoverAfter(pair.source, options.syncs);
    }
    const { code } = await child.status;
    await rest;
    if (killed) {
      throw new Error(
        `The proxy did not end within ${PROXY_DEADLINE_MS} ms: ${await stdout}${err}`,
      );
    }
    return {
      code,
      info: lastJsonLine<MigrationProxyInfo>(await stdout),
      err,
    };
  } finally {
    clearTimeout(watchdog);
    kill(child.pid);
    await child.status;
    await stdout;
    await rest;
  }
}

/** Sends SIGKILL to `pid` unless it has ended. */
function kill(pid: number): void {
  try {
    Deno.kill(pid, "SIGKILL");
  } catch {
    // it has ended
  }
}

/**
 * Checks the end of a proxied migration: both QEMUs completed, the
 * destination's RAM is the source's, and once resumed its guest runs on.
 *
 * @returns The source's final query-migrate.
 */
async function checkCompleted(
  pair: Pair,
  dirtying: boolean,
): Promise<MigrationInfo> {
  const { source, destination } = pair;
  const final = await waitForStatus(source.qmp, "completed", 60_000);
  await waitForRunState(source.qmp, "postmigrate", 10_000);
  await waitForStatus(destination.qmp, "completed", 60_000);
  assertSameRam(
    await guestRam(destination),
    await guestRam(source),
    "destination pc.ram",
  );
  const passes = await guestPasses(destination);
  await destination.qmp.execute("cont");
  const state = await destination.qmp.execute<{ status: string }>(
    "query-status",
  );
  assert.equal(state.status, "running");
  if (dirtying) await waitForGuestPasses(destination, passes + 2);
  return final;
}

/** Retries `attempt` (up to 3 runs) while it returns false. */
async function retried(attempt: (last: boolean) => Promise<boolean>) {
  for (let run = 1; !await attempt(run === 3); run++);
}

interopTest(
  "livemig proxy (deno run cli.ts) turns XBZRLE on between two QEMUs",
  async () => {
    // QEMU may complete before the proxy saw three rounds (a dirty sync
    // that finds nothing dirty ends the precopy); such a run sent no
    // XBZRLE record and is tried again.
    await retried((last) =>
      withWorkDir(async (dir) => {
        const pair = await startPair(dir, DIRTY_FIRMWARE, {
          parameters: ITERATING,
          passes: 2,
        });
        await using _source = pair.source;
        await using _destination = pair.destination;
        const { code, info, err } = await proxySubprocess(pair, {
          args: ["-c", "xbzrle=on"],
          syncs: 4,
        });
        assert.equal(code, 0, err);
        assert.equal(info.status, "completed");
        await checkCompleted(pair, true);
        assert.equal(info.received?.xbzrle, 0);
        assert.ok(info["xbzrle-cache"] !== undefined);
        if (info.sent!.xbzrle === 0 && !last) return false;
        assert.ok(info.sent!.xbzrle > 0, JSON.stringify(info));
        assert.ok(info.sent!.transferred < info.received!.transferred);
        assert.equal(info["device-tail"]?.validated, true);
        return true;
      })
    );
  },
);

interopTest(
  "livemig proxy turns XBZRLE off and relays the return path",
  async () => {
    await retried((last) =>
      withWorkDir(async (dir) => {
        const pair = await startPair(dir, DIRTY_FIRMWARE, {
          capabilities: ["xbzrle", "return-path"],
          parameters: ITERATING,
          passes: 2,
        });
        await using _source = pair.source;
        await using _destination = pair.destination;
        const { code, info, err } = await proxyInProcess(pair, {
          args: ["-c", "xbzrle=off"],
          syncs: 4,
        });
        assert.equal(code, 0, err);
        const final = await checkCompleted(pair, true);
        assert.equal(info.sent?.xbzrle, 0);
        assert.equal(info["xbzrle-cache"], undefined);
        // PONG(1) and SHUT(0) went back to the source, which completed.
        assert.deepEqual(info["return-path"], {
          transferred: 16,
          messages: 2,
          shut: 0,
        });
        if (info.received!.xbzrle === 0 && !last) return false;
        assert.ok(info.received!.xbzrle > 0, JSON.stringify(info));
        assert.ok(final["xbzrle-cache"]!.bytes! > 0);
        return true;
      })
    );
  },
);

interopTest("livemig proxy holds max-bandwidth", async () => {
  await withWorkDir(async (dir) => {
    const pair = await startPair(dir, IDLE_FIRMWARE, {});
    await using _source = pair.source;
    await using _destination = pair.destination;
    const limit = 256 * 1024;
    const { code, info, err } = await proxyInProcess(pair, {
      args: ["-p", `max-bandwidth=${limit}B/s`],
    });
    assert.equal(code, 0, err);
    await checkCompleted(pair, false);
    assert.equal(info["max-bandwidth"], limit);
    // The first 100 ms window may pass its budget (a tenth of the limit)
    // at once, as QEMU's does; every byte after it waits its turn.
    const bytes = info.sent!.transferred;
    const minimumMs = (bytes - limit / 10) / limit * 1000;
    assert.ok(
      info["total-time"]! >= minimumMs,
      `${bytes} bytes in ${info["total-time"]} ms at ${limit} B/s`,
    );
  });
});

/**
 * A one-connection TCP relay that changes the byte at `offset` to `value`.
 * Its two directions are plain copies otherwise.
 */
function corruptingRelay(
  target: string,
  offset: number,
  value: number,
): { address: string; done: Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [host, port] = target.replace(/^tcp:/, "").split(":");
  const done = (async () => {
    let from: Deno.TcpConn;
    try {
      from = await listener.accept();
    } finally {
      listener.close();
    }
    const to = await Deno.connect({ hostname: host!, port: Number(port) });
    const copy = async (
      a: Deno.TcpConn,
      b: Deno.TcpConn,
      change: boolean,
    ) => {
      let position = 0;
      try {
        for await (const chunk of a.readable) {
          const bytes = chunk.slice();
          if (
            change && position <= offset && offset < position + bytes.length
          ) {
            bytes[offset - position] = value;
            // Send what comes before the bad byte on its own, so the
            // proxy forwards the records it can decode first.
            await b.write(bytes.subarray(0, offset - position));
            await new Promise((resolve) => setTimeout(resolve, 0));
            await writeAll(b, bytes.subarray(offset - position));
          } else {
            await writeAll(b, bytes);
          }
          position += bytes.length;
        }
      } catch {
        // the other side went away
      }
      try {
        b.close();
      } catch {
        // closed already
      }
    };
    await Promise.all([copy(from, to, true), copy(to, from, false)]);
  })();
  return {
    address: `tcp:127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    done,
  };
}

async function writeAll(conn: Deno.TcpConn, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length;) {
    done += await conn.write(bytes.subarray(done));
  }
}

interopTest(
  "livemig proxy stops at a corrupted record and the destination QEMU refuses the stream",
  async () => {
    await withWorkDir(async (dir) => {
      // With a return path the source waits for the destination's verdict.
      const pair = await startPair(dir, IDLE_FIRMWARE, {
        capabilities: ["return-path"],
      });
      await using _source = pair.source;
      await using _destination = pair.destination;
      const io = captureIo();
      const run = main(["proxy", "tcp:127.0.0.1:0", pair.target, "--json"], io);
      const [, address] = await io.waitForErr(
        /waiting for a migration at (\S+),/,
      );
      // Byte 136 is the flags byte of the first record of the first PART
      // (pc-i440fx-7.2 with acpi=off: header 8, CONFIGURATION 18,
      // OPEN_RETURN_PATH 5, PING 9, START with the block list 84, PART
      // header 5, then the record at 129): ZERO (0x02) becomes ZERO|0x01,
      // a combination QEMU never sends.
      const relay = corruptingRelay(address!, 136, 0x03);
      await startMigration(pair.source, relay.address);
      assert.equal(await run, 1);
      await relay.done;
      const info = lastJsonLine<MigrationProxyInfo>(io.out);
      assert.equal(info.status, "failed");
      assert.equal(info["error-offset"], 129);
      assert.match(
        io.err,
        /^livemig: Cannot proxy the migration: Cannot decode RAM record at offset 129: flags 0x003 .* are not a valid combination/m,
      );
      // Nothing from the bad record on went to the destination.
      assert.ok(info.sent!.transferred <= 129, JSON.stringify(info));
      // QEMU 7.2's destination exits when the load fails.
      const status = await pair.destination.exited;
      assert.equal(status.success, false);
      assert.match(pair.destination.stderr(), /load of migration failed/);
      await waitForStatus(pair.source.qmp, "failed", 30_000);
    });
  },
);

interopTest(
  "livemig proxy fails cleanly when the destination QEMU goes away",
  async () => {
    await withWorkDir(async (dir) => {
      const pair = await startPair(dir, DIRTY_FIRMWARE, {
        parameters: ITERATING,
        passes: 2,
      });
      await using _source = pair.source;
      await using _destination = pair.destination;
      const io = captureIo();
      const run = main(["proxy", "tcp:127.0.0.1:0", pair.target, "--json"], io);
      const [, address] = await io.waitForErr(
        /waiting for a migration at (\S+),/,
      );
      await startMigration(pair.source, address!);
      // Mid-stream: several passes forwarded, never allowed to switch over.
      await waitForStatus(pair.source.qmp, "active", 30_000, {
        until: (info) => (info.ram?.["dirty-sync-count"] ?? 0) >= 3,
      });
      Deno.kill(pair.destination.pid, "SIGKILL");
      await pair.destination.exited;
      assert.equal(await run, 1);
      const info = lastJsonLine<MigrationProxyInfo>(io.out);
      assert.equal(info.status, "failed");
      assert.ok(info.sent!.transferred > 0);
      assert.match(io.err, /^livemig: Cannot proxy the migration: /m);
      const failed = await waitForStatus(pair.source.qmp, "failed", 30_000);
      assert.ok(failed["error-desc"], "the source gave no reason");
    });
  },
);
