/**
 * MigrationMonitor in one process: run states and their events, quit,
 * the refusals shared with the command line, the dirty-rate measurement
 * under a clock the test drives, and parameters that change a running
 * migration at once.
 */
import assert from "node:assert/strict";
import {
  type Clock,
  createMemoryTransportPair,
  GuestMemory,
  HostedGuest,
  listenTransport,
  MigrationMonitor,
  type MigrationMonitorOptions,
  parseCapabilityArgument,
  parseParameterArgument,
  QmpClient,
  QmpError,
  SimulatedGuest,
} from "../../mod.ts";

/** A monitor with one connected client; closes both when done. */
async function withMonitor(
  options: MigrationMonitorOptions,
  body: (qmp: QmpClient, monitor: MigrationMonitor) => Promise<void>,
): Promise<void> {
  const monitor = new MigrationMonitor(options);
  const [near, far] = createMemoryTransportPair();
  const served = monitor.handle(far);
  const qmp = await QmpClient.connect(near);
  try {
    await body(qmp, monitor);
  } finally {
    await qmp.close();
    await served;
    await monitor.close();
    monitor.guest?.pause();
  }
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof QmpError) return error.desc;
    throw error;
  }
  throw new Error("the command succeeded");
}

Deno.test("MigrationMonitor keeps a -S guest in prelaunch until cont, with RESUME and STOP as QEMU sends them", async () => {
  const guest = new SimulatedGuest({ ramBytes: 1 << 20 });
  await withMonitor({ guest, paused: true }, async (qmp) => {
    const events = qmp.events();
    assert.equal(guest.running, false);
    assert.deepEqual(await qmp.execute("query-status"), {
      status: "prelaunch",
      singlestep: false,
      running: false,
    });
    await qmp.execute("cont");
    assert.equal((await events.next()).value?.event, "RESUME");
    assert.equal(guest.running, true);
    await qmp.execute("stop");
    assert.equal((await events.next()).value?.event, "STOP");
    assert.equal(guest.running, false);
    assert.equal(
      await qmp.execute("human-monitor-command", {
        "command-line": "info status",
      }),
      "VM status: paused\r\n",
    );
  });
});

Deno.test("MigrationMonitor answers quit with SHUTDOWN first, then the reply, then ends", async () => {
  const guest = new SimulatedGuest({ ramBytes: 1 << 20 });
  await withMonitor({ guest }, async (qmp, monitor) => {
    const events = qmp.events();
    assert.deepEqual(await qmp.execute("quit"), {});
    const shutdown = (await events.next()).value!;
    assert.deepEqual(shutdown.data, { guest: false, reason: "host-qmp-quit" });
    assert.deepEqual(await monitor.ended, { reason: "quit" });
    assert.equal(monitor.runState, "shutdown");
    assert.equal(guest.running, false);
  });
});

Deno.test("MigrationMonitor refuses capabilities and parameters livemig lacks with the command line's words", async () => {
  const guest = new SimulatedGuest({ ramBytes: 1 << 20 });
  await withMonitor({ guest }, async (qmp) => {
    const cli = (parse: () => unknown) => {
      try {
        parse();
      } catch (error) {
        return (error as Error).message;
      }
      return "accepted";
    };
    assert.equal(
      await refusal(qmp.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "multifd", state: true }],
      })),
      cli(() => parseCapabilityArgument("multifd=on")),
    );
    assert.equal(
      await refusal(
        qmp.execute("migrate-set-parameters", { "tls-creds": "tls0" }),
      ),
      cli(() => parseParameterArgument("tls-creds=tls0")),
    );
    // QEMU's own check comes first: x-ignore-shared with postcopy-ram.
    assert.equal(
      await refusal(qmp.execute("migrate-set-capabilities", {
        capabilities: [
          { capability: "postcopy-ram", state: true },
          { capability: "x-ignore-shared", state: true },
        ],
      })),
      "Postcopy is not compatible with ignore-shared",
    );
    // Turning one off is fine; the list stays QEMU's.
    await qmp.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "multifd", state: false }],
    });
    const list = await qmp.execute<{ capability: string; state: boolean }[]>(
      "query-migrate-capabilities",
    );
    assert.equal(list.length, 21);
    assert.ok(list.every((entry) => entry.state === false));
  });
});

/** A clock whose sleeps end when the test says so. */
function steppedClock(): Clock & { step(ms: number): void } {
  let now = 0;
  const sleepers: { until: number; resolve(): void }[] = [];
  return {
    now: () => now,
    sleep(ms) {
      return new Promise<void>((resolve) => {
        sleepers.push({ until: now + ms, resolve });
      });
    },
    step(ms) {
      now += ms;
      for (const sleeper of sleepers.splice(0)) {
        if (sleeper.until <= now) sleeper.resolve();
        else sleepers.push(sleeper);
      }
    },
  };
}

Deno.test("calc-dirty-rate samples the guest's pages: every sample changed over 1 s of 16 MiB is 16 MiB/s", async () => {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: 16 << 20 }]);
  const guest = new HostedGuest({ memory });
  const clock = steppedClock();
  await withMonitor({ guest, source: { clock } }, async (qmp) => {
    await qmp.execute("calc-dirty-rate", {
      "calc-time": 1,
      "sample-pages": 16384,
    });
    memory.blocks[0]!.bytes.fill(1);
    clock.step(1000);
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.deepEqual(await qmp.execute("query-dirty-rate"), {
      status: "measured",
      "sample-pages": 16384,
      "dirty-rate": 16,
      mode: "page-sampling",
      "start-time": 0,
      "calc-time": 1,
    });
    await qmp.execute("calc-dirty-rate", { "calc-time": 2 });
    clock.step(2000);
    await new Promise((resolve) => setTimeout(resolve, 0));
    const quiet = await qmp.execute<Record<string, unknown>>(
      "query-dirty-rate",
    );
    assert.equal(quiet["dirty-rate"], 0);
    assert.equal(quiet["start-time"], 1);
  });
});

Deno.test("migrate-set-parameters downtime-limit lets a migration that could not converge complete at once", async () => {
  const guest = new SimulatedGuest({
    ramBytes: 4 << 20,
    prefill: true,
    workload: { kind: "random", bytesPerSecond: 50_000_000 },
  });
  const destination = new MigrationMonitor({ incoming: true, paused: true });
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const serving = destination.serve(listener);
  const dst = await QmpClient.connect(listener.address);
  await withMonitor({ guest }, async (src) => {
    const address = await destination.migrateIncoming("tcp:127.0.0.1:0");
    await src.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "events", state: true }],
    });
    await src.execute("migrate-set-parameters", {
      "downtime-limit": 1,
      "max-bandwidth": 32 << 20,
    });
    await src.execute("migrate", { uri: address });
    await src.waitForEvent("MIGRATION", (e) => e.data.status === "active");
    // Several passes, and still active: 50 MB/s of writes never fit in 1 ms.
    for (let pass = 0; pass < 3; pass++) {
      await src.waitForEvent("MIGRATION_PASS");
    }
    const before = await src.execute<{ status: string }>("query-migrate");
    assert.equal(before.status, "active");
    await src.execute("migrate-set-parameters", {
      "downtime-limit": 2_000_000,
    });
    await src.waitForEvent(
      "MIGRATION",
      (e) => e.data.status === "completed",
      10_000,
    );
    const info = await src.execute<{ ram: { "dirty-sync-count": number } }>(
      "query-migrate",
    );
    assert.ok(info.ram["dirty-sync-count"] >= 4);
  });
  await dst.close();
  await destination.close();
  await serving;
  destination.guest?.pause();
});
