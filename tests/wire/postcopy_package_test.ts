import assert from "node:assert/strict";
import {
  decodePostcopyPackage,
  encodeMigrationRecords,
  encodePostcopyPackage,
  MigrationDecoderStream,
  type MigrationRecord,
  StreamFormatError,
} from "../../mod.ts";

const DEVICE = {
  name: "livemig-guest",
  "instance_id": 0,
  fields: [{ name: "state", type: "buffer", size: 3 }],
};

const NESTED: MigrationRecord[] = [
  { type: "command", command: "POSTCOPY_LISTEN" },
  {
    type: "section-full",
    sectionId: 1,
    idstr: "livemig-guest",
    instanceId: 0,
    versionId: 1,
  },
  {
    type: "device-state",
    sectionId: 1,
    idstr: "livemig-guest",
    instanceId: 0,
    data: new Uint8Array([1, 2, 3]),
  },
  { type: "section-footer", sectionId: 1 },
  { type: "command", command: "PING", value: 3 },
  { type: "command", command: "POSTCOPY_RUN" },
];

Deno.test("encodePostcopyPackage() and decodePostcopyPackage() round-trip LISTEN, device state, PING, RUN", async () => {
  const packaged = encodePostcopyPackage(NESTED);
  assert.deepEqual(
    await decodePostcopyPackage(packaged.data, { deviceLayouts: [DEVICE] }),
    NESTED,
  );
});

Deno.test("a PACKAGED command travels in the main stream with its be32 length", async () => {
  const packaged = encodePostcopyPackage(NESTED);
  const stream = encodeMigrationRecords([
    { type: "header", version: 3 },
    packaged,
    { type: "eof" },
  ]);
  assert.deepEqual([...stream.subarray(8, 17)], [8, 0, 7, 0, 4, ...[
    0,
    0,
    0,
    packaged.data.byteLength,
  ]]);
  const records = (await Array.fromAsync(
    ReadableStream.from([stream]).pipeThrough(
      new MigrationDecoderStream({ vmdesc: false }),
    ),
  )).flat();
  assert.deepEqual(records[1], packaged);
});

Deno.test("the package size cap holds on both sides", async () => {
  assert.throws(
    () => encodePostcopyPackage(NESTED, { maxBytes: 10 }),
    /exceed the limit of 10 bytes/,
  );
  const packaged = encodePostcopyPackage(NESTED);
  await assert.rejects(
    decodePostcopyPackage(packaged.data, { maxBytes: 10 }),
    RangeError,
  );
  const stream = encodeMigrationRecords([
    { type: "header", version: 3 },
    packaged,
    { type: "eof" },
  ]);
  await assert.rejects(
    Array.fromAsync(
      ReadableStream.from([stream]).pipeThrough(
        new MigrationDecoderStream({ vmdesc: false, maxPackagedBytes: 10 }),
      ),
    ),
    (error) => error instanceof StreamFormatError && error.offset === 13,
  );
});

Deno.test("decodePostcopyPackage() refuses a package that is not a stream", async () => {
  await assert.rejects(
    decodePostcopyPackage(new Uint8Array([0x09])),
    StreamFormatError,
  );
});
