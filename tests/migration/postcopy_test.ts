/**
 * Postcopy between two livemig ends in one process over loopback TCP:
 * start, page requests, preempt, pause and recovery.
 */
import assert from "node:assert/strict";
import {
  connectTransport,
  DestinationMigration,
  GuestMemory,
  listenTransport,
  type MigrationCapabilities,
  type MigrationParameters,
  type MigrationStatus,
  SimulatedGuest,
  SourceMigration,
  type TransportListener,
  Workload,
  type WorkloadProgress,
  type WorkloadSpec,
} from "../../mod.ts";

const MIB = 1024 * 1024;

interface PostcopyRun {
  guest: SimulatedGuest;
  source: SourceMigration;
  destination: DestinationMigration;
  listener: TransportListener;
  sent: Promise<unknown>;
  received: ReturnType<DestinationMigration["incoming"]>;
  /** Source RAM and workload state the moment postcopy started. */
  atStart: Promise<{ ram: Uint8Array; progress: WorkloadProgress }>;
}

async function startPostcopy(
  workload: WorkloadSpec,
  options: {
    ramBytes?: number;
    capabilities?: Partial<MigrationCapabilities>;
    parameters?: Partial<MigrationParameters>;
    postcopyAfterPasses?: number;
    autostart?: boolean;
  } = {},
): Promise<PostcopyRun> {
  const guest = new SimulatedGuest({
    ramBytes: options.ramBytes ?? 2 * MIB,
    workload,
    prefill: true,
    seed: 3,
  });
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const capabilities = {
    events: true,
    "postcopy-ram": true,
    ...options.capabilities,
  };
  const source = new SourceMigration(guest, {
    capabilities,
    parameters: { "max-bandwidth": 2 * MIB, ...options.parameters },
    postcopyAfterPasses: options.postcopyAfterPasses ?? 2,
  });
  const destination = new DestinationMigration({
    postcopy: true,
    preempt: capabilities["postcopy-preempt"] ?? false,
    events: true,
    autostart: options.autostart ?? true,
  });
  const atStart = new Promise<{ ram: Uint8Array; progress: WorkloadProgress }>(
    (resolve) => {
      source.addEventListener("migration", (event) => {
        if (
          (event as CustomEvent).detail.status === "postcopy-active" &&
          !guest.running
        ) {
          resolve({
            ram: guest.memory.blocks[0]!.bytes.slice(),
            progress: guest.workload.progress,
          });
        }
      });
    },
  );
  const [outgoing, incoming] = await Promise.all([
    connectTransport(listener.address),
    listener.accept(),
  ]);
  const sent = source.migrate(outgoing, {
    connect: () => connectTransport(listener.address),
  });
  const received = destination.incoming(incoming, {
    accept: () => listener.accept(),
  });
  sent.catch(() => {});
  received.catch(() => {});
  return { guest, source, destination, listener, sent, received, atStart };
}

function statusReached(
  target: EventTarget,
  status: MigrationStatus,
): Promise<void> {
  return new Promise((resolve) => {
    const listener = (event: Event) => {
      if ((event as CustomEvent).detail.status === status) {
        target.removeEventListener("migration", listener);
        resolve();
      }
    };
    target.addEventListener("migration", listener);
  });
}

/**
 * Checks the destination's final RAM: the source's RAM when postcopy
 * started, plus exactly the writes the destination guest made since,
 * replayed from the workload state that travelled in the package.
 */
async function assertPostcopyRam(
  run: PostcopyRun,
  loaded: SimulatedGuest,
): Promise<void> {
  loaded.pause();
  const { ram, progress } = await run.atStart;
  const replay = new GuestMemory([{ idstr: "guest.ram", bytes: ram }]);
  const workload = new Workload(run.guest.workload.spec, replay, 3, progress);
  workload.write(loaded.workload.progress.written - progress.written);
  assert.deepEqual(
    loaded.workload.progress,
    workload.progress,
    "the workload went on from the source's state",
  );
  assert.ok(
    equalBytes(loaded.memory.blocks[0]!.bytes, ram),
    "destination RAM = source RAM at postcopy start + the destination guest's writes",
  );
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

Deno.test("postcopy completes a guest that cannot converge in precopy", async () => {
  // 16 MB/s of random writes over 2 MiB at 2 MiB/s never converges.
  const run = await startPostcopy({ kind: "random", bytesPerSecond: 16 * MIB });
  try {
    const destinationPostcopy = statusReached(
      run.destination,
      "postcopy-active",
    );
    const [info, result] = await Promise.all([run.sent, run.received]);
    await destinationPostcopy;
    assert.equal((info as { status: string }).status, "completed");
    assert.equal(run.destination.status, "completed");
    const loaded = result.guest as SimulatedGuest;
    assert.ok(loaded.running, "the destination guest runs");
    const query = run.source.query();
    assert.ok(query.ram!["postcopy-bytes"] > 0);
    assert.equal(typeof query.downtime, "number");
    await assertPostcopyRam(run, loaded);
  } finally {
    run.guest.pause();
    run.destination.guest?.pause();
    await run.listener.close();
  }
});

for (const preempt of [false, true]) {
  Deno.test(`postcopy serves requested pages ahead of the background copy (preempt ${preempt ? "on" : "off"})`, async () => {
    // A slow background copy (1 MB/s for 8 MiB): the guest's writes must
    // not wait for it.
    const run = await startPostcopy(
      { kind: "random", bytesPerSecond: 4 * MIB },
      {
        ramBytes: 8 * MIB,
        capabilities: { "postcopy-preempt": preempt },
        parameters: {
          "max-bandwidth": 64 * MIB,
          "max-postcopy-bandwidth": 1_000_000,
        },
        postcopyAfterPasses: 0,
      },
    );
    try {
      await statusReached(run.destination, "postcopy-active");
      const started = performance.now();
      // Wait until the destination guest has faulted on some pages.
      while (run.destination.query().ram!["postcopy-requests"] < 5) {
        await new Promise((resolve) => setTimeout(resolve, 20));
        assert.ok(performance.now() - started < 20_000, "the guest faulted");
      }
      const [, result] = await Promise.all([run.sent, run.received]);
      const loaded = result.guest as SimulatedGuest;
      const requests = run.destination.query().ram!["postcopy-requests"];
      const perFaultMs = loaded.blockedMs / requests;
      assert.ok(
        perFaultMs < 1000,
        `a fault waited ${
          perFaultMs.toFixed(0)
        } ms on average; the background copy alone takes ~8 s`,
      );
      assert.ok(run.source.query().ram!["postcopy-requests"] >= 5);
      await assertPostcopyRam(run, loaded);
    } finally {
      run.guest.pause();
      run.destination.guest?.pause();
      await run.listener.close();
    }
  });
}

Deno.test("postcopy with autostart off completes with the destination guest paused", async () => {
  const run = await startPostcopy(
    { kind: "random", bytesPerSecond: 16 * MIB },
    { autostart: false },
  );
  try {
    const [info, result] = await Promise.all([run.sent, run.received]);
    assert.equal((info as { status: string }).status, "completed");
    const loaded = result.guest as SimulatedGuest;
    assert.equal(loaded.running, false, "like QEMU -S: loaded, not resumed");
    const { ram, progress } = await run.atStart;
    assert.deepEqual(loaded.workload.progress, progress);
    assert.ok(
      equalBytes(loaded.memory.blocks[0]!.bytes, ram),
      "every page arrived although no guest access asked for it",
    );
  } finally {
    run.guest.pause();
    run.destination.guest?.pause();
    await run.listener.close();
  }
});

Deno.test("migrate_cancel during postcopy is refused: neither end would keep a whole guest", async () => {
  const run = await startPostcopy({ kind: "random", bytesPerSecond: 16 * MIB });
  try {
    await statusReached(run.source, "postcopy-active");
    assert.throws(
      () => run.source.cancel(),
      /Cannot cancel migration in "postcopy-active"/,
    );
    await Promise.all([run.sent, run.received]);
    assert.equal(run.source.status, "completed");
  } finally {
    run.guest.pause();
    run.destination.guest?.pause();
    await run.listener.close();
  }
});

for (const how of ["migrate-pause", "a cut connection"] as const) {
  Deno.test(`postcopy pauses on ${how}, recovers on a new connection and completes`, async () => {
    const run = await startPostcopy(
      { kind: "random", bytesPerSecond: 4 * MIB },
      {
        ramBytes: 8 * MIB,
        parameters: {
          "max-bandwidth": 64 * MIB,
          "max-postcopy-bandwidth": 2 * MIB,
        },
        postcopyAfterPasses: 0,
      },
    );
    try {
      await statusReached(run.source, "postcopy-active");
      await statusReached(run.destination, "postcopy-active");
      const sourcePaused = statusReached(run.source, "postcopy-paused");
      const destinationPaused = statusReached(
        run.destination,
        "postcopy-paused",
      );
      if (how === "migrate-pause") run.source.pause();
      else run.destination.pause();
      await Promise.all([sourcePaused, destinationPaused]);
      assert.equal(
        run.destination.guest!.running,
        true,
        "the destination guest keeps running",
      );
      // Recovery: the destination accepts, the source connects again.
      const [outgoing, incoming] = await Promise.all([
        connectTransport(run.listener.address),
        run.listener.accept(),
      ]);
      const sourceBack = statusReached(run.source, "postcopy-active");
      run.destination.recover(incoming);
      run.source.resume(outgoing);
      await sourceBack;
      const [, result] = await Promise.all([run.sent, run.received]);
      assert.equal(run.source.status, "completed");
      assert.equal(run.destination.status, "completed");
      await assertPostcopyRam(run, result.guest as SimulatedGuest);
    } finally {
      run.guest.pause();
      run.destination.guest?.pause();
      await run.listener.close();
    }
  });
}

Deno.test("postcopy survives a second failure during recovery and then completes", async () => {
  const run = await startPostcopy(
    { kind: "random", bytesPerSecond: 4 * MIB },
    {
      ramBytes: 8 * MIB,
      parameters: {
        "max-bandwidth": 64 * MIB,
        "max-postcopy-bandwidth": 2 * MIB,
      },
      postcopyAfterPasses: 0,
    },
  );
  try {
    await statusReached(run.destination, "postcopy-active");
    let paused = Promise.all([
      statusReached(run.source, "postcopy-paused"),
      statusReached(run.destination, "postcopy-paused"),
    ]);
    run.source.pause();
    await paused;
    // A recovery whose connection dies during the handshake.
    paused = Promise.all([
      statusReached(run.source, "postcopy-paused"),
      statusReached(run.destination, "postcopy-paused"),
    ]);
    const [badOut, badIn] = await Promise.all([
      connectTransport(run.listener.address),
      run.listener.accept(),
    ]);
    const recovering = statusReached(run.source, "postcopy-recover");
    run.destination.recover(badIn);
    run.source.resume(badOut);
    await recovering;
    await badIn.close();
    await paused;
    // A good recovery.
    const [outgoing, incoming] = await Promise.all([
      connectTransport(run.listener.address),
      run.listener.accept(),
    ]);
    run.destination.recover(incoming);
    run.source.resume(outgoing);
    const [, result] = await Promise.all([run.sent, run.received]);
    assert.equal(run.source.status, "completed");
    await assertPostcopyRam(run, result.guest as SimulatedGuest);
  } finally {
    run.guest.pause();
    run.destination.guest?.pause();
    await run.listener.close();
  }
});

Deno.test("a destination without postcopy-ram refuses POSTCOPY_ADVISE", async () => {
  const guest = new SimulatedGuest({ ramBytes: MIB, running: false });
  const listener = await listenTransport("tcp:127.0.0.1:0");
  try {
    const source = new SourceMigration(guest, {
      capabilities: { "postcopy-ram": true },
    });
    const destination = new DestinationMigration();
    const [outgoing, incoming] = await Promise.all([
      connectTransport(listener.address),
      listener.accept(),
    ]);
    const sent = source.migrate(outgoing);
    await assert.rejects(
      destination.incoming(incoming),
      /postcopy-ram is off on this destination/,
    );
    await assert.rejects(sent);
    assert.equal(
      guest.running,
      false,
      "the guest was not running to begin with",
    );
  } finally {
    await listener.close();
  }
});
