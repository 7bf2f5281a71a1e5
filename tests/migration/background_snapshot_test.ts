import assert from "node:assert/strict";
import {
  createMemoryTransportPair,
  DestinationMigration,
  GuestMemory,
  HostedGuest,
  MigrationAbortedError,
  type MigrationInfo,
  ramSha256,
  SimulatedGuest,
  SourceMigration,
  type SourceMigrationOptions,
} from "../../mod.ts";

const PAGE = 4096;
const PAGES = 256;

/**
 * An app whose writer rewrites every page again and again, a generation
 * at a time, each page filled with a value derived from the generation
 * and the page, in a scrambled page order; it goes through the memory's
 * write hook (`prepareWrite()`) before each write in place. Its pause
 * callback is the snapshot point: the reference copy is taken there.
 */
class GenerationApp {
  readonly state = new Uint8Array(PAGES * PAGE);
  readonly memory = new GuestMemory([{
    idstr: "app.state",
    bytes: this.state,
  }]);
  readonly guest: HostedGuest;
  reference: Uint8Array | undefined;
  generation = 0;
  writesAfterSnapshot = 0;
  #running = false;
  #loop: Promise<void> | undefined;
  #stopped = false;

  constructor(readonly options: { prepare: boolean }) {
    for (let page = 0; page < PAGES; page++) this.#fill(page, 0);
    this.guest = new HostedGuest({
      memory: this.memory,
      pause: async () => {
        this.#running = false;
        await this.#loop;
        this.reference ??= this.state.slice();
      },
      resume: () => this.start(),
      saveState: () => new Uint8Array([this.generation & 0xff]),
    });
  }

  start(): void {
    if (this.#running || this.#stopped) return;
    this.#running = true;
    this.#loop = this.#write();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#running = false;
    await this.#loop;
  }

  async #write(): Promise<void> {
    while (this.#running) {
      this.generation++;
      for (let i = 0; i < PAGES && this.#running; i++) {
        const page = (i * 97 + this.generation * 31) % PAGES;
        if (this.options.prepare) {
          await this.memory.prepareWrite("app.state", page * PAGE, PAGE);
          if (!this.#running) return;
        }
        this.#fill(page, this.generation);
        this.memory.markDirty("app.state", page * PAGE, PAGE);
        if (this.reference) this.writesAfterSnapshot++;
        if (i % 16 === 15) await new Promise((r) => setTimeout(r, 0));
      }
    }
  }

  #fill(page: number, generation: number): void {
    const view = new DataView(this.state.buffer, page * PAGE, PAGE);
    for (let at = 0; at < PAGE; at += 4) {
      view.setUint32(at, (generation * 0x9e3779b1 + page * 4099 + at) >>> 0);
    }
  }
}

/** The first page where `a` and `b` differ, or -1 (a cheap failure report). */
function firstDifferentPage(a: Uint8Array, b: Uint8Array): number {
  assert.equal(a.byteLength, b.byteLength);
  for (let at = 0; at < a.byteLength; at += PAGE) {
    for (let i = at; i < at + PAGE; i++) if (a[i] !== b[i]) return at / PAGE;
  }
  return -1;
}

/** Takes a snapshot of `guest` into a destination in this process. */
async function snapshot(
  guest: HostedGuest | SimulatedGuest,
  options: SourceMigrationOptions = {},
): Promise<{ info: MigrationInfo; loaded: GuestMemory }> {
  const [a, b] = createMemoryTransportPair();
  const source = new SourceMigration(guest, {
    ...options,
    capabilities: { "background-snapshot": true, ...options.capabilities },
  });
  const destination = new DestinationMigration({
    autostart: false,
    // The app's device state is its own: a guest that keeps it.
    ...(guest instanceof HostedGuest
      ? {
        createGuest: (blocks) =>
          new HostedGuest({
            memory: new GuestMemory(
              blocks.map((b) => ({ idstr: b.idstr, size: b.usedLength })),
            ),
          }),
      }
      : {}),
  });
  const [info, received] = await Promise.all([
    source.migrate(a),
    destination.incoming(b),
  ]);
  return { info, loaded: received.guest.memory };
}

Deno.test("background snapshot: the loaded RAM is the RAM at the snapshot point while every page is rewritten during it", async () => {
  const app = new GenerationApp({ prepare: true });
  app.start();
  await new Promise((r) => setTimeout(r, 20));
  const { info, loaded } = await snapshot(app.guest, {
    // 1 MiB at 2 MB/s: the pass takes about half a second of rewriting.
    parameters: { "max-bandwidth": 2_000_000 },
    snapshotCopyBytes: 16 * PAGE,
  });
  const generationAtEnd = app.generation;
  await app.stop();
  const reference = app.reference!;
  assert.equal(info.status, "completed");
  assert.ok(app.guest.running, "the source guest still runs");
  assert.equal(firstDifferentPage(loaded.blocks[0]!.bytes, reference), -1);
  const referenceSha = await ramSha256(
    new GuestMemory([{ idstr: "app.state", bytes: reference }]),
  );
  assert.deepEqual(info["x-livemig-snapshot-ram-sha256"], referenceSha);
  assert.deepEqual(await ramSha256(loaded), referenceSha);
  // The writer kept going during the whole snapshot: whole generations,
  // so every page changed after the snapshot point.
  assert.ok(generationAtEnd >= 3, `generations: ${generationAtEnd}`);
  assert.ok(app.writesAfterSnapshot > 2 * PAGES);
  for (let page = 0; page < PAGES; page++) {
    const at = page * PAGE;
    assert.notDeepEqual(
      app.state.subarray(at, at + 4),
      reference.subarray(at, at + 4),
      `page ${page} was rewritten`,
    );
  }
  // One pass: every page went once, nothing twice.
  const ram = info.ram!;
  assert.equal(ram.normal + ram.duplicate, PAGES);
  assert.equal(ram["dirty-sync-count"], 1);
  assert.ok(info.downtime! < 100, `downtime ${info.downtime} ms`);
});

Deno.test("background snapshot: a SimulatedGuest's workload goes through the hook, also when the copy budget is full", async () => {
  const guest = new SimulatedGuest({
    ramBytes: PAGES * PAGE,
    workload: { kind: "random", bytesPerSecond: 64 * PAGES * PAGE },
    prefill: true,
    tickMs: 2,
  });
  let reference: Uint8Array | undefined;
  const pause = guest.pause.bind(guest);
  guest.pause = () => {
    pause();
    reference ??= guest.memory.blocks[0]!.bytes.slice();
  };
  const { info, loaded } = await snapshot(guest, {
    parameters: { "max-bandwidth": 2_000_000 },
    snapshotCopyBytes: 8 * PAGE,
  });
  const written = guest.workload.progress.written;
  guest.pause();
  assert.equal(info.status, "completed");
  assert.equal(firstDifferentPage(loaded.blocks[0]!.bytes, reference!), -1);
  assert.notEqual(
    firstDifferentPage(guest.memory.blocks[0]!.bytes, reference!),
    -1,
  );
  assert.ok(guest.blockedMs > 0, "writes waited for the pass");
  assert.ok(written > PAGES, `pages written: ${written}`);
});

Deno.test("background snapshot: a write in place that skips the hook fails the snapshot, and the guest keeps running", async () => {
  const app = new GenerationApp({ prepare: false });
  app.start();
  const error = await snapshot(app.guest, {
    parameters: { "max-bandwidth": 2_000_000 },
  }).catch((error) => error);
  await app.stop();
  assert.ok(error instanceof MigrationAbortedError, String(error));
  assert.match(
    error.message,
    /^Cannot complete background snapshot: page \d+ of RAM block "app.state" was written before the snapshot saved it/,
  );
  assert.ok(app.guest.running);
});
