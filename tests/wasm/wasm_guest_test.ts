/**
 * The Wasm guest, end to end: the demo program (Game of Life) runs N steps
 * without a migration and with a live migration in its middle — precopy,
 * postcopy, postcopy with a cut and a recovery — and its checksum after N
 * steps is the same on the destination. Also: a destination refuses another
 * module, memory.grow and tables are refused by name, and the stream
 * analyses as a normal livemig stream.
 */
import assert from "node:assert/strict";
import {
  analyzeMigrationStream,
  connectTransport,
  DestinationMigration,
  listenTransport,
  migrateToUri,
  type MigrationCapabilities,
  type MigrationParameters,
  type MigrationStatus,
  ramSha256,
  SourceMigration,
  type TransportListener,
  type WasmGuest,
  WasmProgram,
} from "../../mod.ts";
import { buildModule, I32 } from "./_wasm_module.ts";

const LIFE = await Deno.readFile(
  new URL("../../examples/wasm/life.wasm", import.meta.url),
);
const program = await WasmProgram.compile(LIFE);
const BUDGET = 8 * 4096; // eight rows of cells per step
const STEPS = 4000;
const MIB = 1 << 20;

function lifeGuest(mib: number, running = true): WasmGuest {
  return program.createGuest({
    budget: BUDGET,
    stepLimit: STEPS,
    running,
    setup: (exports) => (exports.init as (mib: number) => void)(mib),
  });
}

function checksum(guest: WasmGuest): bigint {
  return (guest.exports.checksum as () => bigint)();
}

const expected = new Map<number, bigint>();
async function checksumWithoutMigration(mib: number): Promise<bigint> {
  if (!expected.has(mib)) {
    const guest = lifeGuest(mib);
    await guest.finished();
    assert.equal(guest.steps, STEPS);
    expected.set(mib, checksum(guest));
  }
  return expected.get(mib)!;
}

async function stepsReached(guest: WasmGuest, steps: number): Promise<void> {
  while (guest.steps < steps) {
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
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

interface Run {
  guest: WasmGuest;
  source: SourceMigration;
  destination: DestinationMigration;
  listener: TransportListener;
  sent: Promise<unknown>;
  received: ReturnType<DestinationMigration["incoming"]>;
}

async function startMigration(options: {
  mib: number;
  capabilities?: Partial<MigrationCapabilities>;
  parameters?: Partial<MigrationParameters>;
  postcopyAfterPasses?: number;
  destinationProgram?: WasmProgram;
  guest?: WasmGuest;
}): Promise<Run> {
  const guest = options.guest ?? lifeGuest(options.mib);
  await stepsReached(guest, 100);
  const capabilities = {
    events: true,
    "return-path": true,
    ...options.capabilities,
  };
  const postcopy = capabilities["postcopy-ram"] ?? false;
  const source = new SourceMigration(guest, {
    capabilities,
    parameters: { "max-bandwidth": 1024 * MIB, ...options.parameters },
    ...(postcopy
      ? { postcopyAfterPasses: options.postcopyAfterPasses ?? 0 }
      : {}),
  });
  const destination = new DestinationMigration({
    postcopy,
    events: true,
    ramSha256Received: true,
    createGuest: (options.destinationProgram ?? program).guestFactory({
      budget: BUDGET,
      stepLimit: STEPS,
    }),
  });
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const [outgoing, incoming] = await Promise.all([
    connectTransport(listener.address),
    listener.accept(),
  ]);
  const sent = source.migrate(outgoing);
  const received = destination.incoming(incoming, {
    accept: () => listener.accept(),
  });
  sent.catch(() => {});
  received.catch(() => {});
  return { guest, source, destination, listener, sent, received };
}

async function assertSameChecksum(run: Run, mib: number): Promise<void> {
  const [, result] = await Promise.all([run.sent, run.received]);
  assert.equal(run.source.status, "completed");
  assert.equal(run.destination.status, "completed");
  assert.ok(
    run.guest.steps < STEPS,
    `the source stopped mid-run (${run.guest.steps} of ${STEPS} steps)`,
  );
  assert.deepEqual(
    result.ramSha256Received,
    await ramSha256(run.guest.memory),
    "the destination received the RAM the source stopped with",
  );
  const loaded = result.guest as WasmGuest;
  await loaded.finished();
  assert.equal(loaded.steps, STEPS);
  assert.equal(checksum(loaded), await checksumWithoutMigration(mib));
}

Deno.test("WasmGuest: the demo's checksum after N steps is the same with a precopy migration in the middle", async () => {
  const run = await startMigration({ mib: 2 });
  try {
    await assertSameChecksum(run, 2);
  } finally {
    await run.listener.close();
  }
});

Deno.test("WasmGuest: the demo's checksum after N steps is the same with a postcopy migration in the middle", async () => {
  const run = await startMigration({
    mib: 2,
    capabilities: { "postcopy-ram": true },
    parameters: { "max-postcopy-bandwidth": 4 * MIB },
  });
  const postcopy = statusReached(run.destination, "postcopy-active");
  try {
    await postcopy;
    await assertSameChecksum(run, 2);
  } finally {
    await run.listener.close();
  }
});

Deno.test("WasmGuest: the demo's checksum after N steps is the same after a postcopy cut and recovery", async () => {
  const run = await startMigration({
    mib: 4,
    capabilities: { "postcopy-ram": true },
    parameters: { "max-postcopy-bandwidth": 2 * MIB },
  });
  try {
    await Promise.all([
      statusReached(run.source, "postcopy-active"),
      statusReached(run.destination, "postcopy-active"),
    ]);
    const missing = run.destination.guest!.memory.missingPages;
    const paused = Promise.all([
      statusReached(run.source, "postcopy-paused"),
      statusReached(run.destination, "postcopy-paused"),
    ]);
    run.destination.pause(); // cuts the connection
    await paused;
    assert.ok(missing > 0, "the cut came while pages were missing");
    const [outgoing, incoming] = await Promise.all([
      connectTransport(run.listener.address),
      run.listener.accept(),
    ]);
    run.destination.recover(incoming);
    run.source.resume(outgoing);
    await assertSameChecksum(run, 4);
  } finally {
    await run.listener.close();
  }
});

Deno.test("WasmGuest: a destination running another module refuses the migration", async () => {
  const other = await WasmProgram.compile(
    buildModule({
      memory: [1],
      functions: [{ name: "step", params: [I32], code: [] }],
    }),
  );
  const run = await startMigration({ mib: 2, destinationProgram: other });
  try {
    await assert.rejects(
      run.received,
      new RegExp(`another Wasm module \\(sha256 ${program.sha256}\\)`),
    );
    await assert.rejects(run.sent);
    assert.equal(run.guest.running, true, "the source keeps running");
  } finally {
    run.guest.pause();
    await run.listener.close();
  }
});

Deno.test("WasmGuest: memory.grow during a migration fails it with the reason", async () => {
  // step: memory.grow(0), dropped. 4 MiB of non-zero pages (zero pages
  // take no time) to a file at 16 MiB/s: the program steps while it goes.
  const growing = await WasmProgram.compile(buildModule({
    memory: [64],
    functions: [{
      name: "step",
      params: [I32],
      code: [0x41, 0, 0x40, 0, 0x1a],
    }],
  }));
  const guest = growing.createGuest();
  guest.memory.blocks[0]!.bytes.fill(1);
  const path = await Deno.makeTempFile({ suffix: ".bin" });
  try {
    await stepsReached(guest, 10);
    const source = new SourceMigration(guest, {
      parameters: { "max-bandwidth": 16 * MIB },
    });
    await assert.rejects(
      migrateToUri(source, `file:${path}`),
      /memory\.grow of memory 0 is refused during a migration/,
    );
    await assert.rejects(
      guest.finished(),
      /Cannot run the Wasm program: memory\.grow of memory 0/,
    );
  } finally {
    guest.pause();
    await Deno.remove(path);
  }
});

Deno.test("WasmGuest: a program that changes a table is refused at migration start, by name", async () => {
  const tabled = await WasmProgram.compile(buildModule({
    memory: [1],
    table: 1,
    functions: [{
      name: "step",
      params: [I32],
      code: [0x41, 0, 0xd0, 0x70, 0x26, 0],
    }],
  }));
  const guest = tabled.createGuest();
  const run = await startMigration({
    mib: 1,
    guest,
    destinationProgram: tabled,
  });
  try {
    await assert.rejects(
      run.sent,
      /livemig cannot carry the Wasm program's table 0 \(changed by table\.set\)/,
    );
    assert.equal(guest.running, true, "the program keeps running");
  } finally {
    guest.pause();
    await run.listener.close();
  }
});

Deno.test("WasmGuest: analyze shows the Wasm memory block and the device state", async () => {
  const path = await Deno.makeTempFile({ suffix: ".bin" });
  try {
    const guest = lifeGuest(1, false);
    await migrateToUri(new SourceMigration(guest), `file:${path}`);
    using file = await Deno.open(path);
    const { analysis, state } = await analyzeMigrationStream(file.readable, {
      dumpState: true,
    });
    assert.deepEqual(analysis.ram.blocks.map((b) => [b.name, b.size]), [
      [`wasm:${program.sha256}:memory0`, MIB],
    ]);
    assert.deepEqual(analysis.devices.map((d) => d.name), ["livemig-guest"]);
    const fields = Object.values(state!)[0] as Record<string, unknown>;
    assert.deepEqual(Object.keys(fields).slice(0, 3), [
      "version",
      "module-sha256",
      "steps",
    ]);
    assert.equal(Object.keys(fields).length, 3 + 6, "the six mutable globals");
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("WasmGuest: auto-converge's CPU throttle slows the program, and lifting it lets it run at full speed", async () => {
  const free = program.createGuest({
    budget: BUDGET,
    setup: (exports) => (exports.init as (mib: number) => void)(1),
  });
  const slowed = program.createGuest({
    budget: BUDGET,
    setup: (exports) => (exports.init as (mib: number) => void)(1),
  });
  slowed.setThrottle({ cpuPercentage: 90, dirtyLimit: 0 });
  try {
    const [free0, slowed0] = [free.steps, slowed.steps];
    await new Promise((resolve) => setTimeout(resolve, 400));
    const freeSteps = free.steps - free0;
    const slowedSteps = slowed.steps - slowed0;
    // At 90 % it runs a tenth of the time; both share one thread, so
    // assert only a clear gap.
    assert.ok(freeSteps > 20, `free: ${freeSteps} steps`);
    assert.ok(
      slowedSteps * 3 < freeSteps,
      `throttled ${slowedSteps} vs free ${freeSteps} steps`,
    );
    slowed.setThrottle({ cpuPercentage: 0, dirtyLimit: 0 });
    const [free1, slowed1] = [free.steps, slowed.steps];
    await new Promise((resolve) => setTimeout(resolve, 400));
    const ratio = (slowed.steps - slowed1) / (free.steps - free1);
    assert.ok(ratio > 0.5, `unthrottled again: ratio ${ratio}`);
  } finally {
    free.pause();
    slowed.pause();
  }
});
