import assert from "node:assert/strict";
import {
  concatBytes,
  encodeMultifdChannelRecord,
  MULTIFD_FLAG,
  MultifdChannelDecoderStream,
  MultifdChannelEncoderStream,
  type MultifdChannelRecord,
  StreamFormatError,
  UnexpectedEndOfStreamError,
} from "../../mod.ts";
import { chunked, CHUNKINGS } from "../_helpers/chunking.ts";

const RECORDS: MultifdChannelRecord[] = [
  {
    type: "multifd-initial",
    uuid: "00000000-0000-0000-0000-000000000000",
    channelId: 1,
  },
  {
    type: "multifd-packet",
    flags: MULTIFD_FLAG.SYNC,
    pagesAlloc: 128,
    nextPacketSize: 0,
    packetNum: 1n,
    ramBlock: "",
    offsets: [],
    data: new Uint8Array(0),
  },
  {
    type: "multifd-packet",
    flags: MULTIFD_FLAG.NOCOMP,
    pagesAlloc: 128,
    nextPacketSize: 8192,
    packetNum: 5n,
    ramBlock: "pc.bios",
    offsets: [0xe000, 0xf000],
    data: new Uint8Array(8192).map((_, i) => i % 253),
  },
  {
    type: "multifd-packet",
    flags: MULTIFD_FLAG.SYNC,
    pagesAlloc: 128,
    nextPacketSize: 8192,
    packetNum: 7n,
    ramBlock: "pc.bios",
    offsets: [],
    unusedOffsetSlots: new Uint8Array(1024).fill(0xe0, 6, 7).fill(0xf0, 14, 15),
    data: new Uint8Array(0),
  },
];

function channelBytes(records: MultifdChannelRecord[]): Uint8Array {
  return concatBytes(
    records.map((record) => encodeMultifdChannelRecord(record)),
  );
}

const BYTES = channelBytes(RECORDS);

for (const chunking of CHUNKINGS) {
  Deno.test(`MultifdChannelDecoderStream decodes a channel (${chunking} chunks)`, async () => {
    const records = await Array.fromAsync(
      chunked(BYTES, chunking, 3).pipeThrough(
        new MultifdChannelDecoderStream(),
      ),
    );
    assert.deepEqual(records, RECORDS);
  });
}

Deno.test("MultifdChannelEncoderStream writes what MultifdChannelDecoderStream reads", async () => {
  const chunks = await Array.fromAsync(
    ReadableStream.from(RECORDS).pipeThrough(new MultifdChannelEncoderStream()),
  );
  assert.equal(chunks.length, RECORDS.length);
  assert.deepEqual(channelBytes(RECORDS), BYTES);
  const records = await Array.fromAsync(
    ReadableStream.from(chunks).pipeThrough(new MultifdChannelDecoderStream()),
  );
  assert.deepEqual(records, RECORDS);
});

Deno.test("MultifdChannelDecoderStream reads headers sized for the page size", async () => {
  const records: MultifdChannelRecord[] = [
    RECORDS[0]!,
    {
      type: "multifd-packet",
      flags: 0,
      pagesAlloc: 8,
      nextPacketSize: 65536,
      packetNum: 0n,
      ramBlock: "pc.ram",
      offsets: [0x30000],
      data: new Uint8Array(65536).fill(4),
    },
  ];
  const bytes = await Array.fromAsync(
    ReadableStream.from(records).pipeThrough(
      new MultifdChannelEncoderStream({ pageSize: 65536 }),
    ),
  );
  assert.equal(bytes[1]!.byteLength, 384 + 65536);
  assert.deepEqual(
    await Array.fromAsync(
      ReadableStream.from(bytes).pipeThrough(
        new MultifdChannelDecoderStream({ pageSize: 65536 }),
      ),
    ),
    records,
  );
});

async function decodeError(
  bytes: Uint8Array,
  options = {},
): Promise<StreamFormatError> {
  try {
    await Array.fromAsync(
      ReadableStream.from([bytes]).pipeThrough(
        new MultifdChannelDecoderStream(options),
      ),
    );
  } catch (error) {
    assert.ok(error instanceof StreamFormatError, String(error));
    return error;
  }
  assert.fail("the channel decoded");
}

Deno.test("MultifdChannelDecoderStream refuses an empty channel", async () => {
  const error = await decodeError(new Uint8Array(0));
  assert.ok(error instanceof UnexpectedEndOfStreamError);
  assert.equal(error.offset, 0);
  assert.match(error.message, /a multifd initial packet/);
});

Deno.test("MultifdChannelDecoderStream refuses a main channel (QEVM) at offset 0", async () => {
  const bytes = BYTES.slice();
  bytes.set([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3]);
  const error = await decodeError(bytes);
  assert.equal(error.offset, 0);
  assert.match(error.message, /magic 0x5145564d is not 0x11223344/);
});

Deno.test("MultifdChannelDecoderStream names the offset of a bad field in a later packet", async () => {
  const bytes = BYTES.slice();
  const third = 64 + 1344 + 1344 + 8192;
  new DataView(bytes.buffer).setUint32(third + 16, 129);
  const error = await decodeError(bytes, { startOffset: 10 });
  assert.equal(error.offset, 10 + third + 16);
  assert.match(
    error.message,
    new RegExp(`at offset ${10 + third}: normal_pages 129`),
  );
});

Deno.test("MultifdChannelDecoderStream refuses pages of an unexpected method", async () => {
  const error = await decodeError(BYTES, { compression: "zstd" });
  assert.equal(error.offset, 64 + 1344 + 8);
});

Deno.test("MultifdChannelDecoderStream refuses a channel cut inside a header or inside data", async () => {
  const inHeader = await decodeError(BYTES.subarray(0, 64 + 100));
  assert.ok(inHeader instanceof UnexpectedEndOfStreamError);
  assert.equal(inHeader.offset, 64);
  const dataAt = 64 + 1344 + 1344;
  const inData = await decodeError(BYTES.subarray(0, dataAt + 4000));
  assert.ok(inData instanceof UnexpectedEndOfStreamError);
  assert.equal(inData.offset, dataAt);
  assert.match(inData.message, /multifd packet data/);
});

Deno.test("MultifdChannelDecoderStream ends cleanly between packets", async () => {
  const records = await Array.fromAsync(
    ReadableStream.from([BYTES.subarray(0, 64 + 1344)]).pipeThrough(
      new MultifdChannelDecoderStream(),
    ),
  );
  assert.deepEqual(records, RECORDS.slice(0, 2));
});

Deno.test("MultifdChannelDecoderStream errors the producer's pipe with the decoding error", async () => {
  const bytes = BYTES.slice();
  bytes[64 + 3] = 0;
  const decoder = new MultifdChannelDecoderStream();
  const piped = ReadableStream.from([
    bytes.subarray(0, 100),
    bytes.subarray(100),
  ])
    .pipeTo(decoder.writable);
  const read = Array.fromAsync(decoder.readable);
  await assert.rejects(
    read,
    (e) => e instanceof StreamFormatError && e.offset === 64,
  );
  await assert.rejects(
    piped,
    (e) => e instanceof StreamFormatError && e.offset === 64,
  );
});

Deno.test("MultifdChannelDecoderStream refuses an impossible page size at once", () => {
  assert.throws(
    () => new MultifdChannelDecoderStream({ pageSize: 3000 }),
    RangeError,
  );
});
