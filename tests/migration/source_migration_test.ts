/**
 * SourceMigration's public face on its own: the order of its events, a
 * second migration on the same instance, the pre-switchover pause, the
 * failure it reports, and the commands refused outside their status. The
 * clock is frozen, so no rate window closes and the run is deterministic.
 */
import assert from "node:assert/strict";
import {
  createMemoryTransportPair,
  DestinationMigration,
  listenTransport,
  migrateToUri,
  MigrationAbortedError,
  type MigrationCapabilities,
  type MigrationInfo,
  SimulatedGuest,
  SourceMigration,
  type Transport,
} from "../../mod.ts";
import { createFakeClock } from "../_helpers/fake_clock.ts";

const PAGES = 64;

function idleGuest(): SimulatedGuest {
  const guest = new SimulatedGuest({ ramBytes: PAGES * 4096, running: false });
  for (let page = 0; page < 5; page++) {
    guest.memory.blocks[0]!.bytes[page * 4096 + 7] = page + 1;
  }
  return guest;
}

function sourceOf(
  guest: SimulatedGuest,
  capabilities: Partial<MigrationCapabilities> = {},
  batchPages?: number,
): SourceMigration {
  return new SourceMigration(guest, {
    capabilities: { events: true, ...capabilities },
    clock: createFakeClock(),
    ...(batchPages ? { batchPages } : {}),
  });
}

/** Records every event the source dispatches, as "type:value". */
function record(source: SourceMigration): string[] {
  const seen: string[] = [];
  for (const type of ["status", "migration", "pass"]) {
    source.addEventListener(type, (event) => {
      const detail = (event as CustomEvent).detail;
      seen.push(`${type}:${detail.status ?? detail.pass}`);
    });
  }
  return seen;
}

async function migrateOnce(source: SourceMigration): Promise<MigrationInfo> {
  const [a, b] = createMemoryTransportPair();
  const [info] = await Promise.all([
    source.migrate(a),
    new DestinationMigration({ autostart: false }).incoming(b),
  ]);
  return info;
}

/**
 * A transport that takes nothing: its first write fails with `error` after
 * a while, when the source waits on a full pipeline (not between steps).
 */
function brokenTransport(error: Error): Transport {
  return {
    description: "broken",
    readable: new ReadableStream(),
    writable: new WritableStream({
      write: () =>
        new Promise((_, reject) => setTimeout(() => reject(error), 20)),
    }),
    close: () => Promise.resolve(),
  };
}

const ONE_RUN = [
  "pass:1",
  "status:active",
  "migration:active",
  "status:device",
  "migration:device",
  "pass:2",
  "status:completed",
  "migration:completed",
];

Deno.test("SourceMigration dispatches status, migration and pass events in order", async () => {
  const source = sourceOf(idleGuest());
  const seen = record(source);
  const progress: MigrationInfo[] = [];
  source.addEventListener("progress", (event) => {
    progress.push((event as CustomEvent<MigrationInfo>).detail);
  });
  const info = await migrateOnce(source);
  assert.deepEqual(seen, ["status:setup", "migration:setup", ...ONE_RUN]);
  assert.equal(info.status, "completed");
  assert.deepEqual(progress.at(-1), source.query());
  assert.equal(info.ram!.normal, 5);
  assert.equal(info.ram!.duplicate, PAGES - 5);
  assert.equal(info.ram!["dirty-sync-count"], 2);
  assert.equal(info.ram!.remaining, 0);
});

Deno.test("SourceMigration starts a second migration from fresh counters", async () => {
  const source = sourceOf(idleGuest());
  const first = await migrateOnce(source);
  const seen = record(source);
  const second = await migrateOnce(source);
  // The finished run goes back to setup, then the new one starts in setup.
  assert.deepEqual(seen, [
    "status:setup",
    "migration:setup",
    "status:setup",
    "migration:setup",
    ...ONE_RUN,
  ]);
  assert.deepEqual(second.ram, first.ram);
  assert.equal(second.downtime, first.downtime);
});

Deno.test("SourceMigration waits in pre-switchover for continue()", async () => {
  const source = sourceOf(idleGuest(), { "pause-before-switchover": true });
  const seen = record(source);
  source.addEventListener("status", (event) => {
    if ((event as CustomEvent).detail.status !== "pre-switchover") return;
    assert.throws(
      () => source.continue("active"),
      /Cannot continue migration: it is in "pre-switchover", not "active"/,
    );
    setTimeout(() => source.continue("pre-switchover"), 0);
  });
  const info = await migrateOnce(source);
  assert.equal(info.status, "completed");
  assert.deepEqual(seen.filter((s) => s.startsWith("status:")), [
    "status:setup",
    "status:active",
    "status:pre-switchover",
    "status:device",
    "status:completed",
  ]);
});

Deno.test("SourceMigration wraps a transport error without its own 'Cannot …:'", async () => {
  for (
    const [error, message] of [
      [
        new Error("Cannot write to broken: the peer went away"),
        "Cannot complete migration: the peer went away",
      ],
      [new RangeError(""), "Cannot complete migration: RangeError"],
    ] as const
  ) {
    const guest = idleGuest();
    // One page per write: the first step fills the pipeline and waits.
    const source = sourceOf(guest, {}, 1);
    const seen = record(source);
    await assert.rejects(source.migrate(brokenTransport(error)), (thrown) => {
      assert.ok(thrown instanceof MigrationAbortedError);
      assert.equal(thrown.message, message);
      assert.equal(thrown.reason, "transport-failed");
      assert.equal(thrown.cause, error);
      return true;
    });
    assert.equal(source.status, "failed");
    const info = source.query();
    assert.equal(info["error-desc"], message);
    assert.equal(info["expected-downtime"], undefined);
    assert.equal(typeof info["total-time"], "number");
    assert.equal(guest.memory.dirtyLogging, false);
    assert.deepEqual(seen.filter((s) => s.startsWith("status:")), [
      "status:setup",
      "status:active",
      "status:failed",
    ]);
  }
});

/**
 * A transport whose writes fail with `error` from the `failAt`-th one on,
 * at once: the pipeline fails while the source is between two writes.
 */
function resettingTransport(
  error: Error,
  options: { failAt: number; copiesWrites: boolean },
): Transport {
  let writes = 0;
  return {
    description: "resetting",
    copiesWrites: options.copiesWrites,
    readable: new ReadableStream(),
    writable: new WritableStream({
      write: () => {
        if (writes++ >= options.failAt) throw error;
      },
    }),
    close: () => Promise.resolve(),
  };
}

Deno.test("SourceMigration reports the transport's error when it fails between two writes", async () => {
  for (const copiesWrites of [false, true]) {
    for (const failAt of [0, 1, 2, 3]) {
      const error = new Error(
        "Cannot write to resetting: Connection reset by peer (os error 104)",
      );
      const guest = new SimulatedGuest({
        ramBytes: PAGES * 4096,
        running: false,
        prefill: true,
      });
      const source = sourceOf(guest);
      await assert.rejects(
        source.migrate(resettingTransport(error, { failAt, copiesWrites })),
        (thrown) => {
          assert.ok(thrown instanceof MigrationAbortedError);
          assert.equal(
            thrown.message,
            "Cannot complete migration: Connection reset by peer (os error 104)",
            `copiesWrites ${copiesWrites}, failing at write ${failAt}`,
          );
          assert.equal(thrown.cause, error);
          return true;
        },
      );
      assert.equal(source.status, "failed");
    }
  }
});

/**
 * Migrates a guest of PAGES pages in postcopy after `passes` passes, the
 * guest writing 16 pages on every dirty-bitmap sync (so precopy never
 * converges), and returns how many pages went out before postcopy. The
 * threshold is one page (4 MB/s × 1 ms), so a sync happens exactly when
 * a pass has sent every page it had.
 */
async function pagesBeforePostcopy(passes: number): Promise<number> {
  const guest = new SimulatedGuest({
    ramBytes: PAGES * 4096,
    running: false,
    prefill: true,
  });
  const block = guest.memory.blocks[0]!.idstr;
  const source = new SourceMigration(guest, {
    capabilities: { events: true, "postcopy-ram": true },
    parameters: {
      "avail-switchover-bandwidth": 4096 * 1000,
      "downtime-limit": 1,
    },
    clock: createFakeClock(),
    postcopyAfterPasses: passes,
  });
  let dirtied = 0;
  source.addEventListener("pass", () => {
    if (source.status !== "setup" && source.status !== "active") return;
    const page = (dirtied++ * 16) % PAGES;
    guest.memory.write(
      block,
      page * 4096,
      new Uint8Array(16 * 4096).fill(dirtied),
    );
  });
  let before: number | undefined;
  source.addEventListener("status", (event) => {
    if ((event as CustomEvent).detail.status !== "postcopy-active") return;
    const ram = source.query().ram!;
    before = ram.normal + ram.duplicate;
  });
  const [a, b] = createMemoryTransportPair();
  const [info, result] = await Promise.all([
    source.migrate(a),
    new DestinationMigration({ postcopy: true, autostart: false }).incoming(b),
  ]);
  assert.equal(info.status, "completed");
  assert.ok(
    equalBytes(
      result.guest.memory.blocks[0]!.bytes,
      guest.memory.blocks[0]!.bytes,
    ),
    "the destination has the source's RAM",
  );
  assert.ok(before !== undefined, "postcopy started");
  return before;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((byte, i) => byte === b[i]);
}

Deno.test("SourceMigration starts postcopy after postcopyAfterPasses complete passes over RAM", async () => {
  // 0: before any page; 1: after every page went once; then 16 more a pass.
  assert.equal(await pagesBeforePostcopy(0), 0);
  assert.equal(await pagesBeforePostcopy(1), PAGES);
  assert.equal(await pagesBeforePostcopy(2), PAGES + 16);
  assert.equal(await pagesBeforePostcopy(3), PAGES + 32);
});

/**
 * A tcp: destination that reads what a source sends without answering,
 * and closes the connection after `bytes` (never, with `Infinity`).
 */
async function readingDestination(
  bytes: number,
): Promise<{ address: string; close(): Promise<void> }> {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const accepted = listener.accept();
  const done = (async () => {
    const transport = await accepted;
    let read = 0;
    for await (const chunk of transport.readable) {
      read += chunk.byteLength;
      if (read >= bytes) break;
    }
    await transport.close();
  })();
  done.catch(() => {});
  return {
    address: listener.address,
    async close() {
      await listener.close();
      await (await accepted).close();
      await done.catch(() => {});
    },
  };
}

/** A source that switches to postcopy before sending any page. */
function postcopySource(guest: SimulatedGuest): SourceMigration {
  return new SourceMigration(guest, {
    capabilities: { "postcopy-ram": true },
    parameters: { "max-postcopy-bandwidth": 4 * 1024 * 1024 },
    postcopyAfterPasses: 0,
  });
}

function statusReached(
  source: SourceMigration,
  status: string,
): Promise<void> {
  return new Promise((resolve) => {
    source.addEventListener("status", (event) => {
      if ((event as CustomEvent).detail.status === status) resolve();
    });
  });
}

Deno.test("SourceMigration.abandon() gives up a paused postcopy and stays postcopy-paused", async () => {
  const destination = await readingDestination(256 * 1024);
  const guest = new SimulatedGuest({ ramBytes: 16 << 20, prefill: true });
  const source = postcopySource(guest);
  try {
    const paused = statusReached(source, "postcopy-paused");
    const migrating = migrateToUri(source, destination.address);
    migrating.catch(() => {});
    await paused;
    const cause = source.query()["error-desc"];
    assert.match(String(cause), /Broken pipe|Connection reset by peer/);
    const statuses: string[] = [];
    source.addEventListener("status", (event) => {
      statuses.push((event as CustomEvent).detail.status);
    });
    source.abandon();
    const error = await migrating.then(
      () => assert.fail("completed"),
      (error) => error,
    );
    assert.ok(error instanceof MigrationAbortedError);
    assert.equal(error.reason, "abandoned");
    assert.equal(
      error.message,
      `Cannot complete migration: abandoned in postcopy-paused (${cause}); the destination runs the guest without all of its RAM`,
    );
    assert.deepEqual(statuses, []);
    assert.equal(source.status, "postcopy-paused");
    const info = source.query();
    assert.equal(info.status, "postcopy-paused");
    assert.equal(info["error-desc"], error.message);
    assert.equal(info.downtime, undefined);
    assert.equal(guest.running, false);
    assert.equal(guest.memory.dirtyLogging, false);
    const [a] = createMemoryTransportPair();
    assert.throws(() => source.resume(a), /must be in "postcopy-paused"/);
    await assert.rejects(
      source.migrate(a),
      /one is already in "postcopy-paused"/,
    );
  } finally {
    guest.pause();
    await destination.close();
  }
});

Deno.test("SourceMigration.abandon() in postcopy-active breaks the connection and ends postcopy-paused", async () => {
  const destination = await readingDestination(Infinity);
  const guest = new SimulatedGuest({ ramBytes: 16 << 20, prefill: true });
  const source = postcopySource(guest);
  try {
    const active = statusReached(source, "postcopy-active");
    const migrating = migrateToUri(source, destination.address);
    migrating.catch(() => {});
    await active;
    source.abandon();
    await assert.rejects(migrating, (error) => {
      assert.ok(error instanceof MigrationAbortedError);
      assert.equal(error.reason, "abandoned");
      assert.equal(
        error.message,
        "Cannot complete migration: abandoned in postcopy; the destination runs the guest without all of its RAM",
      );
      return true;
    });
    assert.equal(source.status, "postcopy-paused");
    assert.equal(guest.running, false);
  } finally {
    guest.pause();
    await destination.close();
  }
});

Deno.test("SourceMigration with a return path completes only once SHUT 0 arrived", async () => {
  const [a, b] = createMemoryTransportPair();
  // The destination's answers reach the source only when the test says.
  const gate = Promise.withResolvers<void>();
  const held: Transport = {
    description: a.description,
    writable: a.writable,
    close: () => a.close(),
    readable: a.readable.pipeThrough(
      new TransformStream({
        async transform(chunk, controller) {
          await gate.promise;
          controller.enqueue(chunk);
        },
      }),
    ),
  };
  const source = sourceOf(idleGuest(), { "return-path": true });
  const destination = new DestinationMigration({ autostart: false });
  const sent = source.migrate(held);
  await destination.incoming(b);
  assert.equal(destination.status, "completed"); // it has sent SHUT 0
  for (let i = 0; i < 10; i++) await new Promise((r) => setTimeout(r, 0));
  assert.equal(source.status, "device");
  gate.resolve();
  assert.equal((await sent).status, "completed");
});

Deno.test("SourceMigration refuses commands outside their status", async () => {
  const source = sourceOf(idleGuest());
  assert.deepEqual(source.query(), { status: "none" });
  source.cancel(); // nothing to cancel: no effect
  assert.equal(source.status, "none");
  assert.throws(() => source.startPostcopy(), /postcopy-ram capability/);
  assert.throws(
    () => source.continue("pre-switchover"),
    /it is in "none", not "pre-switchover"/,
  );
  assert.throws(() => source.pause(), /only supported during postcopy-active/);
  const [a] = createMemoryTransportPair();
  assert.throws(() => source.resume(a), /it must be in "postcopy-paused"/);
  assert.throws(
    () => source.setParameters({ bogus: 1 } as never),
    /"bogus": it is not a migration parameter/,
  );
  const running = source.migrate(a);
  await assert.rejects(
    source.migrate(a),
    /Cannot start a migration: one is already in "setup"/,
  );
  source.cancel();
  await assert.rejects(running, MigrationAbortedError);
  assert.equal(source.status, "cancelled");
});
