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
  QmpClient,
  QmpError,
  ramSha256,
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
        capabilities: [{ capability: "compress", state: true }],
      })),
      cli(() => parseCapabilityArgument("compress=on")),
    );
    // tls-creds names an object-add object, looked up when the migration
    // connects (as QEMU does), so setting it is accepted.
    await qmp.execute("migrate-set-parameters", { "tls-creds": "tls0" });
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
      capabilities: [{ capability: "auto-converge", state: false }],
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

Deno.test("migrate-set-parameters during a migration: a new XBZRLE cache size at once, and downtime-limit lets it complete", async () => {
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
      capabilities: [
        { capability: "events", state: true },
        { capability: "xbzrle", state: true },
      ],
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
    const before = await src.execute<{
      status: string;
      "xbzrle-cache": { "cache-size": number };
    }>("query-migrate");
    assert.equal(before.status, "active");
    assert.equal(before["xbzrle-cache"]["cache-size"], 4 << 20);
    await src.execute("migrate-set-parameters", {
      "xbzrle-cache-size": 1 << 20,
    });
    const resized = await src.execute<{
      "xbzrle-cache": { "cache-size": number };
    }>("query-migrate");
    assert.equal(resized["xbzrle-cache"]["cache-size"], 1 << 20);
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

Deno.test("a guest that arrived by migration migrates on: A to B, then B to C, RAM intact", async () => {
  const guest = new SimulatedGuest({ ramBytes: 2 << 20, prefill: true });
  const [a, b, c] = [
    new MigrationMonitor({ guest }),
    new MigrationMonitor({ incoming: true }),
    new MigrationMonitor({ incoming: true, paused: true }),
  ];
  const listeners = await Promise.all(
    [a, b, c].map(() => listenTransport("tcp:127.0.0.1:0")),
  );
  const serving = [a, b, c].map((monitor, i) => monitor.serve(listeners[i]!));
  const [qa, qb] = await Promise.all(
    listeners.slice(0, 2).map((listener) =>
      QmpClient.connect(listener.address)
    ),
  );
  const returnPath = {
    capabilities: [{ capability: "return-path", state: true }],
  };
  try {
    await qa!.execute("migrate-set-capabilities", returnPath);
    await qa!.execute("migrate", {
      uri: await b.migrateIncoming("tcp:127.0.0.1:0"),
    });
    await waitFor(() => a.runState === "postmigrate");
    assert.equal(b.runState, "running");
    assert.equal(
      await refusal(
        qb!.execute("migrate-incoming", { uri: "tcp:127.0.0.1:0" }),
      ),
      "The incoming migration has already been started",
    );
    await qb!.execute("migrate-set-capabilities", returnPath);
    await qb!.execute("migrate", {
      uri: await c.migrateIncoming("tcp:127.0.0.1:0"),
    });
    await waitFor(() => b.runState === "postmigrate");
    assert.equal(c.runState, "paused");
    assert.deepEqual(
      await ramSha256(c.guest!.memory),
      await ramSha256(guest.memory),
    );
  } finally {
    await Promise.all([qa!.close(), qb!.close()]);
    await Promise.all([a.close(), b.close(), c.close(), ...serving]);
    for (const monitor of [a, b, c]) monitor.guest?.pause();
  }
});

async function waitFor(condition: () => boolean): Promise<void> {
  for (let i = 0; !condition(); i++) {
    if (i > 1000) {
      throw new Error("Cannot wait any longer: the condition never held");
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

Deno.test("monitor: validate-uuid is accepted as in QEMU 7.2, switchover-ack (8.1) is unknown", async () => {
  const guest = new SimulatedGuest({ ramBytes: 16 * 4096 });
  await withMonitor({ guest }, async (qmp) => {
    await qmp.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "validate-uuid", state: true }],
    });
    const list = await qmp.execute("query-migrate-capabilities") as {
      capability: string;
      state: boolean;
    }[];
    assert.ok(
      list.some((c) => c.capability === "validate-uuid" && c.state),
    );
    assert.equal(
      await refusal(qmp.execute("migrate-set-capabilities", {
        capabilities: [
          { capability: "return-path", state: true },
          { capability: "switchover-ack", state: true },
        ],
      })),
      "Parameter 'capability' does not accept value 'switchover-ack'",
    );
  });
});
