import assert from "node:assert/strict";
import {
  createMemoryTransportPair,
  DestinationMigration,
  MigrationAbortedError,
  MigrationEncoderStream,
  MigrationProtocolError,
  type MigrationRecord,
  MigrationState,
  SYSTEM_CLOCK,
} from "../../mod.ts";
import { RecordLoader } from "../../lib/migration/_record_loader.ts";

const PAGE = 4096;

const BLOCKS: MigrationRecord = {
  type: "ram-mem-size",
  blocks: [{ idstr: "pc.ram", usedLength: 2 * PAGE }],
};

function newLoader(): RecordLoader {
  const state = new MigrationState("destination");
  state.moveTo("active");
  return new RecordLoader({
    state,
    clock: SYSTEM_CLOCK,
    maxRamBytes: 1 << 20,
    autostart: false,
    postcopy: false,
    preempt: false,
    connection: () => undefined,
    onResume: () => {},
  });
}

async function* batches(
  ...list: MigrationRecord[][]
): AsyncGenerator<MigrationRecord[]> {
  yield* list;
}

Deno.test("RecordLoader loads records from any async iterable, without a connection", async () => {
  const loader = newLoader();
  await loader.load(batches(
    [{ type: "configuration", machine: "pc-i440fx-7.2" }, BLOCKS],
    [
      {
        type: "ram-page",
        block: "pc.ram",
        offset: 0,
        data: new Uint8Array(PAGE).fill(7),
      },
      { type: "ram-zero", block: "pc.ram", offset: PAGE, fill: 0 },
    ],
  ));
  const guest = await loader.finish();
  assert.equal(loader.machine, "pc-i440fx-7.2");
  assert.equal(loader.livemig, false);
  const ram = guest.memory.blocks[0]!.bytes;
  assert.deepEqual(ram.subarray(0, PAGE), new Uint8Array(PAGE).fill(7));
  assert.deepEqual(ram.subarray(PAGE), new Uint8Array(PAGE));
  const stats = loader.ramStats();
  assert.equal(stats.normal, 1);
  assert.equal(stats.duplicate, 1);
  assert.equal(stats.total, 2 * PAGE);
  assert.equal(stats.transferred, 0, "no position given: no bytes counted");
});

Deno.test("RecordLoader counts the bytes the position moved by per batch", async () => {
  const loader = newLoader();
  let position = 0;
  async function* counted(): AsyncGenerator<MigrationRecord[]> {
    position = 100;
    yield [BLOCKS];
    position = 250;
    yield [{ type: "ram-zero", block: "pc.ram", offset: 0, fill: 0 }];
  }
  await loader.load(counted(), { position: () => position });
  assert.equal(loader.ramStats().transferred, 250);
  assert.equal(loader.ramStats()["precopy-bytes"], 250);
});

const REFUSED: [string, MigrationRecord[], RegExp][] = [
  ["a page before the block list", [
    { type: "ram-zero", block: "pc.ram", offset: 0, fill: 0 },
  ], /Cannot load a page before the block list/],
  ["a second, different block list", [BLOCKS, {
    type: "ram-mem-size",
    blocks: [{ idstr: "pc.ram", usedLength: 4 * PAGE }],
  }], /Cannot load a second, different block list/],
  ["POSTCOPY_LISTEN outside its package", [
    BLOCKS,
    { type: "command", command: "POSTCOPY_LISTEN" },
  ], /Cannot load command POSTCOPY_LISTEN outside its postcopy package/],
  ["POSTCOPY_ADVISE with postcopy-ram off", [
    {
      type: "command",
      command: "POSTCOPY_ADVISE",
      pageSizeSummary: PAGE,
      targetPageSize: PAGE,
    },
  ], /postcopy-ram is off on this destination/],
  ["a discard of part of a page", [BLOCKS, {
    type: "command",
    command: "POSTCOPY_RAM_DISCARD",
    block: "pc.ram",
    ranges: [{ start: 0, length: 100 }],
  }], /Cannot discard pc\.ram@0\+100: not whole pages/],
  ["POSTCOPY_RESUME outside a recovery", [
    BLOCKS,
    { type: "command", command: "POSTCOPY_RESUME" },
  ], /Cannot resume postcopy in "active"/],
  ["a PING with no return path", [
    { type: "command", command: "PING", value: 1 },
  ], /Cannot answer PONG: the source never opened the return path/],
];

for (const [what, records, message] of REFUSED) {
  Deno.test(`RecordLoader refuses ${what} with a MigrationProtocolError`, async () => {
    const loader = newLoader();
    const error = await loader.load(batches(records)).then(
      () => assert.fail("loaded"),
      (error: unknown) => error,
    );
    assert.ok(error instanceof MigrationProtocolError, String(error));
    assert.match(error.message, message);
  });
}

Deno.test("RecordLoader.finish() refuses a stream that held no RAM", async () => {
  const loader = newLoader();
  await loader.load(batches([{ type: "configuration", machine: "pc" }]));
  await assert.rejects(
    loader.finish(),
    MigrationProtocolError,
    "Cannot complete the incoming migration: the stream held no RAM",
  );
});

Deno.test("DestinationMigration fails with the MigrationProtocolError as the cause", async () => {
  const [source, destinationEnd] = createMemoryTransportPair();
  const records: MigrationRecord[] = [
    { type: "header", version: 3 },
    { type: "configuration", machine: "pc" },
    { type: "eof" },
  ];
  const sent = ReadableStream.from([records])
    .pipeThrough(new MigrationEncoderStream())
    .pipeTo(source.writable);
  const destination = new DestinationMigration();
  const error = await destination.incoming(destinationEnd).then(
    () => assert.fail("completed"),
    (error: unknown) => error,
  );
  await sent.catch(() => {});
  assert.ok(error instanceof MigrationAbortedError);
  assert.ok(error.cause instanceof MigrationProtocolError);
  assert.equal(
    error.message,
    "Cannot complete the incoming migration: Cannot complete the incoming migration: the stream held no RAM",
  );
  assert.equal(destination.status, "failed");
});
