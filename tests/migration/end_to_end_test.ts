/**
 * End-to-end migrations between a SourceMigration and a
 * DestinationMigration in one process, over loopback TCP, Unix sockets,
 * exec: and file:. Tests wait for conditions (statuses, passes), never for
 * fixed times.
 */
import assert from "node:assert/strict";
import {
  connectTransport,
  DestinationMigration,
  listenTransport,
  MigrationAbortedError,
  type MigrationCapabilities,
  type MigrationInfo,
  type MigrationParameters,
  type MigrationStatus,
  ramSha256,
  SimulatedGuest,
  SourceMigration,
  type WorkloadSpec,
} from "../../mod.ts";

const MIB = 1024 * 1024;

interface Run {
  source: SourceMigration;
  destination: DestinationMigration;
  sent: Promise<MigrationInfo>;
  received: ReturnType<DestinationMigration["incoming"]>;
  sourceDigest(): Promise<Record<string, string>>;
  close(): Promise<void>;
}

function guestOf(
  workload: WorkloadSpec,
  ramBytes = 4 * MIB,
  prefill = true,
): SimulatedGuest {
  return new SimulatedGuest({ ramBytes, workload, prefill, seed: 7 });
}

async function start(
  guest: SimulatedGuest,
  options: {
    uri?: string;
    capabilities?: Partial<MigrationCapabilities>;
    parameters?: Partial<MigrationParameters>;
  } = {},
): Promise<Run> {
  const listener = await listenTransport(options.uri ?? "tcp:127.0.0.1:0");
  const source = new SourceMigration(guest, {
    capabilities: { events: true, ...options.capabilities },
    ...(options.parameters ? { parameters: options.parameters } : {}),
  });
  let destinationDigest: Record<string, string> = {};
  const destination = new DestinationMigration({
    autostart: false,
    beforeResume: async (loaded) => {
      destinationDigest = await ramSha256(loaded.memory);
    },
  });
  const [outgoing, incoming] = await Promise.all([
    connectTransport(listener.address),
    listener.accept(),
  ]);
  const sent = source.migrate(outgoing);
  const received = destination.incoming(incoming);
  const withDigest = received.then((r) => ({
    ...r,
    digest: destinationDigest,
  }));
  sent.catch(() => {});
  withDigest.catch(() => {});
  return {
    source,
    destination,
    sent,
    received: withDigest,
    sourceDigest: () => ramSha256(guest.memory),
    close: () => listener.close(),
  } as Run;
}

function waitForStatus(
  source: SourceMigration,
  status: MigrationStatus,
): Promise<void> {
  return new Promise((resolve) => {
    if (source.status === status) return resolve();
    const listener = (event: Event) => {
      if ((event as CustomEvent).detail.status === status) {
        source.removeEventListener("migration", listener);
        resolve();
      }
    };
    source.addEventListener("migration", listener);
  });
}

function waitForPass(source: SourceMigration, pass: number): Promise<void> {
  return new Promise((resolve) => {
    const listener = (event: Event) => {
      if ((event as CustomEvent).detail.pass >= pass) {
        source.removeEventListener("pass", listener);
        resolve();
      }
    };
    source.addEventListener("pass", listener);
  });
}

async function assertConverges(
  workload: WorkloadSpec,
  uri?: string,
): Promise<MigrationInfo> {
  const guest = guestOf(workload);
  const run = await start(guest, uri ? { uri } : {});
  try {
    const [info, received] = await Promise.all([run.sent, run.received]);
    assert.equal(info.status, "completed");
    assert.equal(run.destination.status, "completed");
    assert.equal(
      guest.running,
      false,
      "the source guest stays stopped after switchover",
    );
    assert.deepEqual(
      (received as unknown as { digest: Record<string, string> }).digest,
      await run.sourceDigest(),
      "destination RAM equals source RAM at switchover",
    );
    assert.equal(received.livemig, true);
    const loaded = received.guest as SimulatedGuest;
    assert.deepEqual(
      loaded.workload.progress,
      guest.workload.progress,
      "device state arrived",
    );
    return info;
  } finally {
    guest.pause();
    await run.close();
  }
}

Deno.test("migration of an idle guest converges over TCP with identical RAM", async () => {
  const info = await assertConverges({ kind: "idle" });
  assert.equal(info.ram!.normal, 1024);
  assert.ok(info.downtime! >= 0);
});

Deno.test("migration of a sweeping guest converges with identical RAM", async () => {
  await assertConverges({ kind: "sweep", bytesPerSecond: 8 * MIB });
});

Deno.test("migration of a hot-set guest converges over a Unix socket", async () => {
  const info = await assertConverges(
    { kind: "hot-set", setBytes: 256 * 1024, bytesPerSecond: 4 * MIB },
    "unix:/tmp/livemig-test.sock",
  );
  assert.ok(info.ram!["dirty-sync-count"] >= 2);
});

Deno.test("migration reports QEMU's query-migrate fields", async () => {
  const guest = guestOf({ kind: "idle" }, 2 * MIB, false);
  guest.memory.blocks[0]!.bytes[5 * 4096] = 1;
  const run = await start(guest);
  try {
    const [info] = await Promise.all([run.sent, run.received]);
    assert.deepEqual(Object.keys(info.ram!).sort(), [
      "dirty-pages-rate",
      "dirty-sync-count",
      "dirty-sync-missed-zero-copy",
      "downtime-bytes",
      "duplicate",
      "mbps",
      "multifd-bytes",
      "normal",
      "normal-bytes",
      "page-size",
      "pages-per-second",
      "postcopy-bytes",
      "postcopy-requests",
      "precopy-bytes",
      "remaining",
      "skipped",
      "total",
      "transferred",
    ]);
    assert.equal(info.ram!.duplicate, 511);
    assert.equal(info.ram!.normal, 1);
    assert.equal(info.ram!["normal-bytes"], 4096);
    assert.equal(info.ram!.total, 2 * MIB);
    assert.equal(info.ram!.remaining, 0);
    assert.ok(info.ram!.transferred > 4096);
    assert.equal(
      info.ram!["precopy-bytes"] + info.ram!["downtime-bytes"],
      info.ram!.transferred,
    );
    assert.ok(
      typeof info["setup-time"] === "number" &&
        typeof info["total-time"] === "number",
    );
  } finally {
    await run.close();
  }
});

Deno.test("a guest dirtying faster than the bandwidth stays active, then converges when max-bandwidth is raised", async () => {
  const guest = guestOf({ kind: "random", bytesPerSecond: 8 * MIB }, 1 * MIB);
  const run = await start(guest, {
    parameters: { "max-bandwidth": 1_000_000 },
  });
  try {
    await waitForPass(run.source, 4);
    assert.equal(run.source.status, "active", "not converging at 1 MB/s");
    const info = run.source.query();
    assert.ok(
      info.ram!["dirty-pages-rate"] > 0 || info.ram!["dirty-sync-count"] >= 4,
    );
    run.source.setParameters({ "max-bandwidth": 1024 * MIB });
    const [done, received] = await Promise.all([run.sent, run.received]);
    assert.equal(done.status, "completed");
    assert.deepEqual(
      (received as unknown as { digest: Record<string, string> }).digest,
      await run.sourceDigest(),
    );
  } finally {
    guest.pause();
    await run.close();
  }
});

for (const status of ["setup", "active", "pre-switchover", "device"] as const) {
  Deno.test(`cancel in "${status}" ends cancelled with the guest running and RAM intact`, async () => {
    const guest = guestOf({ kind: "idle" }, 8 * MIB);
    const before = await ramSha256(guest.memory);
    const run = await start(guest, {
      capabilities: { "pause-before-switchover": status === "pre-switchover" },
      parameters: { "max-bandwidth": status === "active" ? 4 * MIB : 0 },
    });
    try {
      if (status === "setup") {
        assert.equal(run.source.status, "setup");
        run.source.cancel();
      } else {
        run.source.addEventListener("migration", (event) => {
          if ((event as CustomEvent).detail.status === status) {
            run.source.cancel();
          }
        });
      }
      await assert.rejects(run.sent, (error) => {
        assert.ok(error instanceof MigrationAbortedError);
        assert.equal(error.reason, "cancelled");
        return true;
      });
      assert.equal(run.source.status, "cancelled");
      assert.equal(guest.running, true, "the guest runs again");
      assert.equal(guest.memory.dirtyLogging, false, "the dirty log is off");
      assert.deepEqual(await ramSha256(guest.memory), before, "RAM is intact");
      await assert.rejects(run.received, MigrationAbortedError);
      assert.equal(
        run.destination.status,
        "failed",
        "the destination never completes",
      );
    } finally {
      await run.close();
    }
    // A new migration from the same guest succeeds.
    const again = await start(guest, {});
    try {
      const [info] = await Promise.all([again.sent, again.received]);
      assert.equal(info.status, "completed");
    } finally {
      guest.pause();
      await again.close();
    }
  });
}

Deno.test("a destination killed mid-stream fails the source, which keeps its guest and can migrate again", async () => {
  const guest = guestOf({ kind: "sweep", bytesPerSecond: 2 * MIB }, 8 * MIB);
  const run = await start(guest, { parameters: { "max-bandwidth": 8 * MIB } });
  try {
    await waitForStatus(run.source, "active");
    await waitForPass(run.source, 1);
    run.destination.abort("the destination was killed");
    await assert.rejects(run.sent, (error) => {
      assert.ok(error instanceof MigrationAbortedError);
      assert.notEqual(error.reason, "cancelled");
      return true;
    });
    assert.equal(run.source.status, "failed");
    assert.match(
      run.source.query()["error-desc"] ?? "",
      /Cannot complete migration/,
    );
    assert.equal(guest.running, true);
    assert.equal(guest.memory.dirtyLogging, false);
    await assert.rejects(run.received, MigrationAbortedError);
    assert.equal(run.destination.status, "failed");
  } finally {
    await run.close();
  }
  const again = await start(guest, {});
  try {
    const [info, received] = await Promise.all([again.sent, again.received]);
    assert.equal(info.status, "completed");
    assert.deepEqual(
      (received as unknown as { digest: Record<string, string> }).digest,
      await again.sourceDigest(),
    );
  } finally {
    guest.pause();
    await again.close();
  }
});

Deno.test("with return-path the source completes only after the destination's SHUT", async () => {
  const guest = guestOf({ kind: "idle" }, 1 * MIB);
  const run = await start(guest, { capabilities: { "return-path": true } });
  try {
    const [info] = await Promise.all([run.sent, run.received]);
    assert.equal(info.status, "completed");
  } finally {
    await run.close();
  }
});

Deno.test("exec: and file: round trips carry the guest through a file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (
      const [outgoing, incoming] of [
        [`exec:cat > ${dir}/exec.mig`, `exec:cat ${dir}/exec.mig`],
        [`file:${dir}/file.mig`, `file:${dir}/file.mig`],
        [
          `file:${dir}/offset.mig,offset=4096`,
          `file:${dir}/offset.mig,offset=4096`,
        ],
      ]
    ) {
      const guest = guestOf({ kind: "idle" }, 1 * MIB);
      const source = new SourceMigration(guest);
      const info = await source.migrate(await connectTransport(outgoing!));
      assert.equal(info.status, "completed", outgoing);
      const listener = await listenTransport(incoming!);
      try {
        const result = await new DestinationMigration({ autostart: false })
          .incoming(await listener.accept());
        assert.deepEqual(
          await ramSha256(result.guest.memory),
          await ramSha256(guest.memory),
          incoming,
        );
      } finally {
        await listener.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a destination refuses a stream announcing more RAM than allowed", async () => {
  const guest = guestOf({ kind: "idle" }, 2 * MIB, false);
  const listener = await listenTransport("tcp:127.0.0.1:0");
  try {
    const destination = new DestinationMigration({ maxRamBytes: MIB });
    const [outgoing, incoming] = await Promise.all([
      connectTransport(listener.address),
      listener.accept(),
    ]);
    // With a return path the source learns of the refusal; without one
    // it may finish writing 2 MiB into the socket first and, as QEMU's,
    // call that completed.
    const sent = new SourceMigration(guest, {
      capabilities: { "return-path": true },
    }).migrate(outgoing);
    await assert.rejects(
      destination.incoming(incoming),
      /limit is 1048576 bytes/,
    );
    await assert.rejects(sent, MigrationAbortedError);
    assert.equal(destination.status, "failed");
  } finally {
    guest.pause();
    await listener.close();
  }
});
