/**
 * Stream codec throughput on a RAM-heavy stream: 64 MiB of guest RAM sent
 * as PAGE records (random data) plus ZERO records, cut into 64 KiB chunks
 * as a socket delivers them. Each benchmark handles {@linkcode STREAM}
 * bytes per iteration, so MB/s = STREAM.byteLength / 1e6 / (time in s);
 * `deno task bench` prints the time, tests/bench/README-style numbers are in
 * the project README.
 *
 * Run: deno bench --allow-read tests/bench/codec_bench.ts
 */
import {
  applyRamRecord,
  ByteReader,
  encodeMigrationRecords,
  MigrationDecoder,
  MigrationDecoderStream,
  MigrationEncoderStream,
  type MigrationRecord,
  RamImage,
} from "../../mod.ts";
import { createPrng } from "../_helpers/prng.ts";

const PAGE = 4096;
const RAM = 64 << 20;
const CHUNK = 64 << 10;

function buildRecords(): MigrationRecord[] {
  const prng = createPrng(1);
  const ram = prng.fill(new Uint8Array(RAM));
  const records: MigrationRecord[] = [
    { type: "header", version: 3 },
    { type: "configuration", machine: "pc-i440fx-7.2" },
    {
      type: "section-start",
      sectionId: 2,
      idstr: "ram",
      instanceId: 0,
      versionId: 4,
    },
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: RAM }] },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "section-part", sectionId: 2 },
  ];
  for (let offset = 0; offset < RAM; offset += PAGE) {
    // One page in eight is zero, as in a lightly used guest.
    if ((offset / PAGE) % 8 === 7) {
      records.push({ type: "ram-zero", block: "pc.ram", offset, fill: 0 });
    } else {
      records.push({
        type: "ram-page",
        block: "pc.ram",
        offset,
        data: ram.subarray(offset, offset + PAGE),
      });
    }
  }
  records.push(
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "eof" },
  );
  return records;
}

const RECORDS = buildRecords();
const STREAM = encodeMigrationRecords(RECORDS);
const CHUNKS: Uint8Array[] = [];
for (let at = 0; at < STREAM.byteLength; at += CHUNK) {
  CHUNKS.push(STREAM.subarray(at, at + CHUNK));
}
const MB = (STREAM.byteLength / 1e6).toFixed(1);

Deno.bench({
  name: `decode ${MB} MB stream (64 KiB chunks)`,
  group: "decode",
  baseline: true,
  async fn() {
    const decoder = new MigrationDecoderStream({ vmdesc: false });
    for await (
      const batch of ReadableStream.from(CHUNKS).pipeThrough(decoder)
    ) {
      void batch;
    }
  },
});

/**
 * A byte stream over CHUNKS, as a socket transport's: each pull copies one
 * chunk into the reader's view (BYOB) or into a new chunk.
 */
function byteStream(): ReadableStream<Uint8Array> {
  let index = 0;
  let at = 0;
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: CHUNK,
    pull(controller) {
      const request = controller.byobRequest!;
      const chunk = CHUNKS[index];
      if (chunk === undefined) {
        controller.close();
        request.respond(0);
        return;
      }
      const view = new Uint8Array(
        request.view!.buffer,
        request.view!.byteOffset,
        request.view!.byteLength,
      );
      const count = Math.min(view.byteLength, chunk.byteLength - at);
      view.set(chunk.subarray(at, at + count));
      at += count;
      if (at === chunk.byteLength) {
        index++;
        at = 0;
      }
      request.respond(count);
    },
  });
}

Deno.bench({
  name: `decode ${MB} MB byte stream, fresh 64 KiB chunks`,
  group: "decode-byte-stream",
  baseline: true,
  async fn() {
    const reader = new ByteReader(byteStream());
    for await (
      const batch of new MigrationDecoder({ vmdesc: false }).decode(reader)
    ) {
      void batch;
    }
  },
});

Deno.bench({
  name: `decode ${MB} MB byte stream, one reused 1 MiB buffer (BYOB)`,
  group: "decode-byte-stream",
  async fn() {
    const reader = new ByteReader(byteStream(), 0, { bufferBytes: 1 << 20 });
    for await (
      const batch of new MigrationDecoder({ vmdesc: false }).decode(reader)
    ) {
      void batch;
    }
  },
});

// One image for all iterations: the destination's RAM is allocated once,
// so the page faults of first touch stay out of the steady-state number.
const IMAGE = new RamImage();

Deno.bench({
  name: `decode + apply to a RAM image, ${MB} MB stream`,
  group: "decode",
  async fn() {
    const decoder = new MigrationDecoderStream({ vmdesc: false });
    const image = IMAGE;
    for await (
      const batch of ReadableStream.from(CHUNKS).pipeThrough(decoder)
    ) {
      for (const record of batch) {
        if (record.type === "ram-mem-size") image.apply(record);
        else if (record.type === "ram-page" || record.type === "ram-zero") {
          applyRamRecord(record, image);
        }
      }
    }
  },
});

const BATCHES: MigrationRecord[][] = [];
for (let i = 0; i < RECORDS.length; i += 256) {
  BATCHES.push(RECORDS.slice(i, i + 256));
}

Deno.bench({
  name: `encode ${MB} MB stream (256-record batches)`,
  group: "encode",
  async fn() {
    await ReadableStream.from(BATCHES).pipeThrough(new MigrationEncoderStream())
      .pipeTo(new WritableStream());
  },
});
