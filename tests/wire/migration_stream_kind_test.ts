/**
 * Each kind of stream decodes what its preset says, whatever the chunking:
 * where it starts, where it may end, and what may follow.
 */
import assert from "node:assert/strict";
import {
  encodeMigrationRecords,
  MIGRATION_STREAM_KINDS,
  type MigrationDecoderOptions,
  MigrationDecoderStream,
  type MigrationRecord,
  type MigrationStreamKind,
  StreamFormatError,
  UnexpectedEndOfStreamError,
} from "../../mod.ts";
import { chunked, CHUNKINGS } from "../_helpers/chunking.ts";

const PAGE = 4096;
const BLOCKS = [{ idstr: "pc.ram", usedLength: 4 * PAGE }];
const SECTIONS = [{ sectionId: 2, idstr: "ram", instanceId: 0, versionId: 4 }];

async function decode(
  bytes: Uint8Array,
  options: MigrationDecoderOptions,
  chunking: (typeof CHUNKINGS)[number] = "whole",
): Promise<MigrationRecord[]> {
  return (await Array.fromAsync(
    chunked(bytes, chunking, 5).pipeThrough(
      new MigrationDecoderStream(options),
    ),
  )).flat();
}

const HEAD: MigrationRecord[] = [
  { type: "header", version: 3 },
  {
    type: "configuration",
    machine: "pc-q35-10.0",
    targetPageBits: 12,
    capabilities: ["x-ignore-shared", "switchover-ack"],
    uuid: new Uint8Array(16).fill(0xab),
  },
  { type: "command", command: "OPEN_RETURN_PATH" },
];
const RAM: MigrationRecord[] = [
  { type: "section-part", sectionId: 2 },
  {
    type: "ram-page",
    block: "pc.ram",
    offset: PAGE,
    data: new Uint8Array(PAGE).fill(1),
    continued: false,
  },
  { type: "ram-eos" },
  { type: "section-footer", sectionId: 2 },
];

for (const chunking of CHUNKINGS) {
  Deno.test(`MigrationDecoder "prefix" stops between sections (${chunking} chunks)`, async () => {
    // A CONFIGURATION with every subsection, then a command: no EOF.
    const records = await decode(
      encodeMigrationRecords(HEAD),
      { kind: "prefix" },
      chunking,
    );
    assert.deepEqual(records, HEAD);
  });

  Deno.test(`MigrationDecoder "postcopy-recovery" continues a stream without header (${chunking} chunks)`, async () => {
    const stream: MigrationRecord[] = [
      { type: "command", command: "POSTCOPY_RESUME" },
      ...RAM,
      { type: "eof" },
    ];
    const records = await decode(encodeMigrationRecords(stream), {
      kind: "postcopy-recovery",
      blocks: BLOCKS,
      sections: SECTIONS,
    }, chunking);
    assert.deepEqual(records, stream);
  });

  Deno.test(`MigrationDecoder "postcopy-preempt" reads RAM records up to EOS (${chunking} chunks)`, async () => {
    const stream = RAM.slice(1, 3);
    const records = await decode(
      // Bytes after the EOS belong to no one: the channel is done.
      new Uint8Array([...encodeMigrationRecords(stream), 0x99]),
      { kind: "postcopy-preempt", blocks: BLOCKS },
      chunking,
    );
    assert.deepEqual(records, stream);
  });
}

Deno.test('MigrationDecoder "packaged" needs neither header nor EOF', async () => {
  const stream: MigrationRecord[] = [
    { type: "command", command: "POSTCOPY_LISTEN" },
    { type: "command", command: "PING", value: 3 },
  ];
  assert.deepEqual(
    await decode(encodeMigrationRecords(stream), { kind: "packaged" }),
    stream,
  );
});

Deno.test('MigrationDecoder "live" and "file" need EOF, "prefix" does not', async () => {
  const bytes = encodeMigrationRecords(HEAD);
  for (const kind of ["live", "file"] as const) {
    await assert.rejects(
      decode(bytes, { kind }),
      (error) =>
        error instanceof UnexpectedEndOfStreamError &&
        error.offset === bytes.byteLength,
      kind,
    );
  }
  assert.equal((await decode(bytes, { kind: "prefix" })).length, HEAD.length);
});

Deno.test('MigrationDecoder "file" refuses bytes after the end, "live" leaves them', async () => {
  const json = new TextEncoder().encode('{"page_size":4096,"devices":[]}');
  const bytes = new Uint8Array([
    ...encodeMigrationRecords([...HEAD, { type: "eof" }]),
    0x06,
    ...[0, 0, 0, json.byteLength],
    ...json,
    0x00,
  ]);
  await assert.rejects(
    decode(bytes, { kind: "file" }),
    (error) =>
      error instanceof StreamFormatError &&
      error.offset === bytes.byteLength - 1 &&
      /bytes follow the end of the stream \(after the vmdesc\)/.test(
        error.message,
      ),
  );
  const live = await decode(bytes, { kind: "live" });
  assert.equal(live.at(-1)?.type, "vmdesc");
});

Deno.test("MIGRATION_STREAM_KINDS gives every kind a shape", () => {
  assert.deepEqual(Object.keys(MIGRATION_STREAM_KINDS).sort(), [
    "file",
    "live",
    "packaged",
    "postcopy-preempt",
    "postcopy-recovery",
    "prefix",
  ]);
  assert.equal(MIGRATION_STREAM_KINDS.live.deviceState, "opaque");
  assert.equal(MIGRATION_STREAM_KINDS.file.deviceState, "walk");
});

Deno.test("MigrationDecoder refuses an unknown kind", () => {
  assert.throws(
    () =>
      new MigrationDecoderStream({
        kind: "socket" as MigrationStreamKind,
      }),
    TypeError,
  );
});
