import assert from "node:assert/strict";
import {
  encodeMigrationRecords,
  type MigrationDecoderOptions,
  MigrationDecoderStream,
  type MigrationRecord,
  StreamFormatError,
  UnexpectedEndOfStreamError,
} from "../../mod.ts";
import { chunked, CHUNKINGS, neverEnding } from "../_helpers/chunking.ts";

const PAGE = 4096;

async function decode(
  bytes: Uint8Array | ReadableStream<Uint8Array>,
  options: MigrationDecoderOptions = {},
): Promise<MigrationRecord[]> {
  const input = bytes instanceof Uint8Array
    ? ReadableStream.from([bytes])
    : bytes;
  const batches = await Array.fromAsync(
    input.pipeThrough(new MigrationDecoderStream(options)),
  );
  return batches.flat();
}

/** Asserts decoding fails with a StreamFormatError at `offset`. */
async function rejectsAt(
  bytes: Uint8Array,
  offset: number,
  message: RegExp,
  options: MigrationDecoderOptions = {},
): Promise<void> {
  await assert.rejects(decode(bytes, options), (error) => {
    assert.ok(error instanceof StreamFormatError, `got ${error}`);
    assert.match(error.message, message);
    assert.equal(error.offset, offset, error.message);
    return true;
  });
}

const page = (fill: number) => new Uint8Array(PAGE).fill(fill);

const DEVICE_DESC = {
  name: "livemig-test",
  "instance_id": 0,
  "vmsd_name": "livemig-test",
  version: 1,
  fields: [
    { name: "counter", type: "uint32", size: 4 },
    { name: "regs", type: "uint64", size: 8, "array_len": 2 },
  ],
  subsections: [{
    "vmsd_name": "livemig-test/extra",
    version: 1,
    fields: [{ name: "flag", type: "bool", size: 1 }],
  }],
};
const VMDESC = new TextEncoder().encode(
  JSON.stringify({ "page_size": PAGE, devices: [DEVICE_DESC] }),
);
const DEVICE_BODY = new Uint8Array([
  0,
  0,
  0,
  7, // counter
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  1, // regs[0]
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  2, // regs[1]
  5,
  18,
  ...new TextEncoder().encode("livemig-test/extra"),
  0,
  0,
  0,
  1, // subsection
  1, // flag
]);

/** A stream that uses every record kind the decoder knows. */
function sampleRecords(): MigrationRecord[] {
  return [
    { type: "header", version: 3 },
    { type: "configuration", machine: "pc-i440fx-7.2" },
    { type: "command", command: "OPEN_RETURN_PATH" },
    { type: "command", command: "PING", value: 1 },
    {
      type: "section-start",
      sectionId: 2,
      idstr: "ram",
      instanceId: 0,
      versionId: 4,
    },
    {
      type: "ram-mem-size",
      blocks: [{ idstr: "pc.ram", usedLength: 4 * PAGE }, {
        idstr: "pc.bios",
        usedLength: PAGE,
      }],
    },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "section-part", sectionId: 2 },
    {
      type: "ram-page",
      block: "pc.ram",
      offset: 0,
      data: page(1),
      continued: false,
    },
    {
      type: "ram-zero",
      block: "pc.ram",
      offset: PAGE,
      fill: 0,
      continued: true,
    },
    {
      type: "ram-page",
      block: "pc.bios",
      offset: 0,
      data: page(0xff),
      continued: false,
    },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "section-part", sectionId: 2 },
    // CONTINUE carries across sections: the current block is still pc.bios.
    { type: "ram-zero", block: "pc.bios", offset: 0, fill: 0, continued: true },
    {
      type: "ram-xbzrle",
      block: "pc.ram",
      offset: 0,
      delta: new Uint8Array([0x10, 0x01, 0xaa]),
      continued: false,
    },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "section-end", sectionId: 2 },
    {
      type: "ram-page",
      block: "pc.ram",
      offset: 3 * PAGE,
      data: page(3),
      continued: true,
    },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    {
      type: "section-full",
      sectionId: 5,
      idstr: "livemig-test",
      instanceId: 0,
      versionId: 1,
    },
    {
      type: "device-state",
      sectionId: 5,
      idstr: "livemig-test",
      instanceId: 0,
      data: DEVICE_BODY,
    },
    { type: "section-footer", sectionId: 5 },
    { type: "eof" },
    {
      type: "vmdesc",
      data: VMDESC,
      document: JSON.parse(new TextDecoder().decode(VMDESC)),
    },
  ];
}

const SAMPLE = encodeMigrationRecords(sampleRecords());

for (const chunking of CHUNKINGS) {
  Deno.test(`MigrationDecoderStream decodes every record kind (${chunking} chunks)`, async () => {
    const records = await decode(chunked(SAMPLE, chunking, 7), {
      deviceState: "walk",
    });
    assert.deepEqual(records, sampleRecords());
  });
}

Deno.test("MigrationDecoderStream round-trips its records to identical bytes", async () => {
  const records = await decode(SAMPLE, { deviceState: "walk" });
  assert.deepEqual(encodeMigrationRecords(records), SAMPLE);
});

Deno.test("MigrationDecoderStream passes the device tail on opaque and validates it", async () => {
  const stream = new MigrationDecoderStream();
  const records =
    (await Array.fromAsync(ReadableStream.from([SAMPLE]).pipeThrough(stream)))
      .flat();
  const tail = records.filter((r) => r.type === "device-tail");
  assert.ok(tail.length >= 1);
  assert.deepEqual(encodeMigrationRecords(records), SAMPLE);
  const summary = stream.decoder.deviceTail!;
  assert.equal(summary.validated, true);
  assert.equal(summary.offset + summary.bytes, SAMPLE.byteLength);
  assert.equal(stream.decoder.vmdesc?.devices[0]?.name, "livemig-test");
});

Deno.test("MigrationDecoderStream finishes at the vmdesc while the connection stays open", async () => {
  for (const mode of ["opaque", "walk"] as const) {
    const input = neverEnding(SAMPLE);
    const records = await decode(input.readable, { deviceState: mode });
    assert.equal(encodeMigrationRecords(records).byteLength, SAMPLE.byteLength);
    input.close();
  }
});

Deno.test("MigrationDecoderStream rejects device state that does not walk through its vmdesc", async () => {
  const records = sampleRecords();
  const broken = records.map((r) =>
    r.type === "device-state" ? { ...r, data: DEVICE_BODY.subarray(0, 20) } : r
  );
  const bytes = encodeMigrationRecords(broken);
  await assert.rejects(
    decode(bytes, { deviceState: "walk" }),
    StreamFormatError,
  );
  await assert.rejects(decode(bytes), StreamFormatError);
});

Deno.test("MigrationDecoderStream walks with a known layout when vmdesc is absent", async () => {
  const records = sampleRecords().filter((r) => r.type !== "vmdesc");
  const bytes = encodeMigrationRecords(records);
  const walked = await decode(bytes, {
    deviceState: "walk",
    vmdesc: false,
    deviceLayouts: [DEVICE_DESC],
  });
  assert.deepEqual(walked, records);
  // Without a layout the tail stays opaque but still round-trips.
  const opaque = await decode(bytes, { deviceState: "walk", vmdesc: false });
  assert.equal(opaque.at(-1)?.type, "device-tail");
  assert.deepEqual(encodeMigrationRecords(opaque), bytes);
});

Deno.test("MigrationDecoderStream truncated at any byte fails with UnexpectedEndOfStreamError", async () => {
  for (let cut = 0; cut < SAMPLE.byteLength; cut++) {
    await assert.rejects(
      decode(SAMPLE.subarray(0, cut), { deviceState: "walk" }),
      (error) => {
        assert.ok(error instanceof StreamFormatError, `cut ${cut}: ${error}`);
        assert.ok(error.offset <= cut, `cut ${cut}: offset ${error.offset}`);
        return true;
      },
      `cut at ${cut}`,
    );
  }
});

Deno.test("MigrationDecoderStream reports a truncated page as the record that was cut", async () => {
  const cut = SAMPLE.indexOf(1, 100); // first byte of page(1)'s data
  await assert.rejects(decode(SAMPLE.subarray(0, cut + 100)), (error) => {
    assert.ok(error instanceof UnexpectedEndOfStreamError);
    assert.match(error.message, /a RAM record/);
    return true;
  });
});

// ---- bad input, each with the offset it must name ----

const HEADER = [0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3];
const bytesOf = (...parts: (number | number[] | Uint8Array)[]) =>
  new Uint8Array(parts.flatMap((p) => typeof p === "number" ? [p] : [...p]));
const be32 = (
  n: number,
) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
const be64 = (
  n: number,
) => [...be32(Math.floor(n / 2 ** 32)), ...be32(n >>> 0)];
const str = (s: string) => [s.length, ...new TextEncoder().encode(s)];
const START_RAM = [1, ...be32(2), ...str("ram"), ...be32(0), ...be32(4)];
const MEM_SIZE = [...be64(2 * PAGE + 4), ...str("pc.ram"), ...be64(2 * PAGE)];
const EOS = be64(0x10);
const FOOTER = [0x7e, ...be32(2)];
/** Header, ram START with one 2-page block, EOS, footer, then `rest`. */
const withRam = (...rest: (number | number[] | Uint8Array)[]) =>
  bytesOf(HEADER, START_RAM, MEM_SIZE, EOS, FOOTER, ...rest);
const RAM_BODY_AT = HEADER.length + START_RAM.length + MEM_SIZE.length +
  EOS.length +
  FOOTER.length;

Deno.test("MigrationDecoderStream rejects a wrong magic at offset 0", async () => {
  await rejectsAt(bytesOf(0x51, 0x45, 0x56, 0x4e, 0, 0, 0, 3), 0, /not "QEVM"/);
});

Deno.test("MigrationDecoderStream rejects versions other than 3 at offset 4", async () => {
  await rejectsAt(bytesOf(HEADER.slice(0, 4), be32(2)), 4, /obsolete v2/);
  await rejectsAt(bytesOf(HEADER.slice(0, 4), be32(4)), 4, /not supported/);
});

Deno.test("MigrationDecoderStream rejects an empty stream", async () => {
  await assert.rejects(decode(new Uint8Array(0)), UnexpectedEndOfStreamError);
});

Deno.test("MigrationDecoderStream rejects unknown and misplaced section types", async () => {
  await rejectsAt(
    bytesOf(HEADER, 0x09),
    8,
    /type byte 0x09 is not a top-level/,
  );
  await rejectsAt(bytesOf(HEADER, 0x05), 8, /SUBSECTION belongs inside/);
  await rejectsAt(bytesOf(HEADER, 0x7e), 8, /SECTION_FOOTER/);
  await rejectsAt(
    bytesOf(HEADER, 0x06),
    8,
    /VMDESCRIPTION may only follow EOF/,
  );
  await rejectsAt(
    bytesOf(HEADER, 8, 0, 1, 0, 0, 7),
    13,
    /CONFIGURATION section may only/,
  );
});

Deno.test("MigrationDecoderStream rejects a bad CONFIGURATION", async () => {
  await rejectsAt(
    bytesOf(HEADER, 7, be32(5000)),
    9,
    /machine name length 5000/,
  );
  const sub = str("configuration/whatever");
  await rejectsAt(
    bytesOf(HEADER, 7, be32(1), 0x41, 5, sub, be32(1)),
    14,
    /"configuration\/whatever" is unknown/,
  );
  const bits = str("configuration/target-page-bits");
  await rejectsAt(
    bytesOf(HEADER, 7, be32(1), 0x41, 5, bits, be32(2)),
    46,
    /version 2/,
  );
  await rejectsAt(
    bytesOf(HEADER, 7, be32(1), 0x41, 5, bits, be32(1), be32(40)),
    50,
    /out of range/,
  );
});

Deno.test("MigrationDecoderStream applies target-page-bits from CONFIGURATION", async () => {
  const bits = str("configuration/target-page-bits");
  const records = await decode(
    bytesOf(HEADER, 7, be32(1), 0x41, 5, bits, be32(1), be32(13), 0),
    { vmdesc: false },
  );
  assert.deepEqual(records[1], {
    type: "configuration",
    machine: "A",
    targetPageBits: 13,
  });
});

Deno.test("MigrationDecoderStream refuses iterative sections other than ram", async () => {
  const start = [1, ...be32(3), ...str("block"), ...be32(0), ...be32(1)];
  await rejectsAt(
    bytesOf(HEADER, start),
    8,
    /iterative section "block" is not supported/,
  );
  const v3 = [1, ...be32(2), ...str("ram"), ...be32(0), ...be32(3)];
  await rejectsAt(bytesOf(HEADER, v3), 8 + 13, /version 3 is not supported/);
});

Deno.test("MigrationDecoderStream rejects sections that were never started", async () => {
  await rejectsAt(
    bytesOf(HEADER, 2, be32(9)),
    8,
    /section id 9 was never started/,
  );
  await rejectsAt(
    bytesOf(HEADER, 3, be32(9)),
    8,
    /section id 9 was never started/,
  );
});

Deno.test("MigrationDecoderStream rejects bad section footers", async () => {
  const at = HEADER.length + START_RAM.length + MEM_SIZE.length + EOS.length;
  await rejectsAt(
    bytesOf(HEADER, START_RAM, MEM_SIZE, EOS, 0x7f, be32(2)),
    at,
    /expected byte 0x7e/,
  );
  await rejectsAt(
    bytesOf(HEADER, START_RAM, MEM_SIZE, EOS, 0x7e, be32(3)),
    at,
    /does not match section 2/,
  );
});

Deno.test("MigrationDecoderStream rejects bad RAM flag combinations", async () => {
  const part = [2, ...be32(2)];
  const at = RAM_BODY_AT + part.length;
  await rejectsAt(
    withRam(part, be64(0x0a), str("pc.ram")),
    at,
    /flags 0x00a \(ZERO\|PAGE\)/,
  );
  await rejectsAt(withRam(part, be64(0x01)), at, /flags 0x001 \(FULL\)/);
  await rejectsAt(withRam(part, be64(0x80)), at, /HOOK belongs to RDMA/);
  await rejectsAt(withRam(part, be64(0x30)), at, /EOS\|CONTINUE/);
  await rejectsAt(withRam(part, be64(0x400)), at, /0x400/);
  await rejectsAt(
    withRam(part, be64(0x1010)),
    at,
    /EOS record carries address 0x1000/,
  );
});

Deno.test("MigrationDecoderStream rejects CONTINUE without a named block", async () => {
  const part = [2, ...be32(2)];
  await rejectsAt(
    withRam(part, be64(0x22), 0),
    RAM_BODY_AT + 5,
    /CONTINUE is set but no block/,
  );
});

Deno.test("MigrationDecoderStream rejects a block that was never announced", async () => {
  const part = [2, ...be32(2)];
  await rejectsAt(
    withRam(part, be64(0x08), str("pc.rom")),
    RAM_BODY_AT + 13,
    /"pc.rom" was never announced/,
  );
});

Deno.test("MigrationDecoderStream rejects a page offset past the block's end", async () => {
  const part = [2, ...be32(2)];
  await rejectsAt(
    withRam(part, be64(2 * PAGE + 2), str("pc.ram"), 0),
    RAM_BODY_AT + 5,
    /0x2000 lies past the end of block "pc.ram"/,
  );
});

Deno.test("MigrationDecoderStream rejects bad XBZRLE records", async () => {
  const part = [2, ...be32(2)];
  const name = str("pc.ram");
  const body = RAM_BODY_AT + part.length + 8 + name.length;
  await rejectsAt(
    withRam(part, be64(0x40), name, 2, 0, 1, 0),
    body,
    /encoding byte 0x02/,
  );
  await rejectsAt(
    withRam(part, be64(0x40), name, 1, 0x10, 0x01),
    body + 1,
    /length 4097 exceeds the page size/,
  );
  // A zero run of 0 after the first pair (xbzrle.md §4).
  await rejectsAt(
    withRam(part, be64(0x40), name, 1, 0, 6, 0, 1, 0xaa, 0, 1, 0xbb),
    body + 6,
    /XBZRLE/,
  );
  // A delta that runs past the page.
  await rejectsAt(
    withRam(part, be64(0x40), name, 1, 0, 4, 0xff, 0x1f, 2, 0xaa),
    body + 5,
    /past the 4096-byte page/,
  );
});

Deno.test("MigrationDecoderStream rejects a bad block list", async () => {
  const at = HEADER.length + START_RAM.length + 8 + 7;
  await rejectsAt(
    bytesOf(HEADER, START_RAM, be64(PAGE + 4), str("pc.ram"), be64(2 * PAGE)),
    at,
    /past the announced total 4096/,
  );
  await rejectsAt(
    bytesOf(HEADER, START_RAM, be64(PAGE + 4), str("pc.ram"), be64(100)),
    at,
    /not a positive multiple of the page size/,
  );
});

Deno.test("MigrationDecoderStream rejects unknown and misshapen commands", async () => {
  await rejectsAt(bytesOf(HEADER, 8, 0, 12, 0, 0), 8, /command 12 is unknown/);
  await rejectsAt(bytesOf(HEADER, 8, 0, 0, 0, 0), 8, /command 0 is INVALID/);
  await rejectsAt(
    bytesOf(HEADER, 8, 0, 2, 0, 3, 1, 2, 3),
    8,
    /PING .* payload length 3 differs from 4/,
  );
  await rejectsAt(
    bytesOf(HEADER, 8, 0, 3, 0, 8, be64(PAGE)),
    8,
    /neither 0 nor 16/,
  );
  await rejectsAt(
    bytesOf(HEADER, 8, 0, 10, 0, 3, 5, 0x61, 0x62),
    8,
    /RECV_BITMAP .* does not match/,
  );
});

Deno.test("MigrationDecoderStream rejects bad POSTCOPY_RAM_DISCARD commands", async () => {
  const good = [0, ...str("pc.ram"), 0, ...be64(0), ...be64(PAGE)];
  await rejectsAt(
    bytesOf(HEADER, 8, 0, 6, 0, good.length, 1, good.slice(1)),
    13,
    /version 1/,
  );
  await rejectsAt(
    bytesOf(HEADER, 8, 0, 6, 0, good.length - 1, good.slice(0, -1)),
    8,
    /not a multiple of 16/,
  );
  const nil = [...good];
  nil[8] = 9;
  await rejectsAt(
    bytesOf(HEADER, 8, 0, 6, 0, nil.length, nil),
    13 + 8,
    /not 0/,
  );
  const records = await decode(
    bytesOf(HEADER, 8, 0, 6, 0, good.length, good, 0),
    { vmdesc: false },
  );
  assert.deepEqual(records[1], {
    type: "command",
    command: "POSTCOPY_RAM_DISCARD",
    block: "pc.ram",
    ranges: [{ start: 0, length: PAGE }],
  });
});

Deno.test("MigrationDecoderStream caps PACKAGED and vmdesc lengths", async () => {
  await rejectsAt(
    bytesOf(HEADER, 8, 0, 7, 0, 4, be32(0xffff_fff0)),
    13,
    /PACKAGED .* exceeds the limit/,
  );
  await rejectsAt(
    bytesOf(HEADER, 8, 0, 7, 0, 4, be32(2000)),
    13,
    /exceeds the limit of 1000/,
    {
      maxPackagedBytes: 1000,
    },
  );
  await rejectsAt(
    bytesOf(HEADER, 0, 6, be32(0xffff_ffff)),
    10,
    /vmdesc length .* exceed the limit/,
  );
});

Deno.test("MigrationDecoderStream does not allocate from an announced PACKAGED length", async () => {
  // 60 MiB announced, 10 bytes sent: it must fail as truncated, not allocate.
  await assert.rejects(
    decode(
      bytesOf(
        HEADER,
        8,
        0,
        7,
        0,
        4,
        be32(60 * 1024 * 1024),
        new Array(10).fill(0),
      ),
    ),
    UnexpectedEndOfStreamError,
  );
});

Deno.test("MigrationDecoderStream exposes a PACKAGED blob as a nested stream", async () => {
  const inner = encodeMigrationRecords([
    { type: "command", command: "POSTCOPY_LISTEN" },
    { type: "command", command: "PING", value: 3 },
    { type: "command", command: "POSTCOPY_RUN" },
  ]);
  const records = await decode(
    bytesOf(HEADER, 8, 0, 7, 0, 4, be32(inner.length), inner, 0),
    {
      vmdesc: false,
    },
  );
  const packaged = records[1];
  assert.ok(packaged?.type === "command" && packaged.command === "PACKAGED");
  const nested = await decode(packaged.data, { kind: "packaged" });
  assert.deepEqual(
    nested.map((r) => r.type === "command" ? r.command : r.type),
    [
      "POSTCOPY_LISTEN",
      "PING",
      "POSTCOPY_RUN",
    ],
  );
});

Deno.test("MigrationDecoderStream expects no vmdesc after a PACKAGED stream ends", async () => {
  // A packaged stream is postcopy (its LISTEN is inside the package), and
  // QEMU writes no vmdesc after a postcopy EOF.
  const inner = encodeMigrationRecords([
    { type: "command", command: "POSTCOPY_LISTEN" },
    { type: "command", command: "POSTCOPY_RUN" },
  ]);
  // The byte after EOF is not read as a vmdesc type: the decoder stops at
  // EOF instead of waiting on a connection that stays open.
  const records = await decode(
    bytesOf(HEADER, 8, 0, 7, 0, 4, be32(inner.length), inner, 0, 0x99),
  );
  assert.deepEqual(records.map((r) => r.type), ["header", "command", "eof"]);
});

Deno.test("MigrationDecoderStream rejects a bad vmdesc and bytes after it", async () => {
  await rejectsAt(
    bytesOf(HEADER, 0, 6, be32(3), 0x7b, 0x7b, 0x7d),
    14,
    /JSON does not parse/,
  );
  await rejectsAt(
    bytesOf(HEADER, 0, 6, be32(2), 0x7b, 0x7d),
    14,
    /"devices" is not an array/,
  );
  const ok = new TextEncoder().encode('{"page_size":4096,"devices":[]}');
  await rejectsAt(
    bytesOf(HEADER, 0, 6, be32(ok.length), ok, 0x99),
    14 + ok.length,
    /bytes follow the end/,
    { kind: "file" },
  );
  await rejectsAt(bytesOf(HEADER, 0, 0x99), 9, /follows EOF/);
});

Deno.test("MigrationDecoderStream inflates COMPRESS_PAGE records and rejects corrupt ones", async () => {
  const data = new Uint8Array(
    await new Response(
      ReadableStream.from([page(0x42)]).pipeThrough(
        new CompressionStream("deflate"),
      ),
    ).arrayBuffer(),
  );
  const part = [2, ...be32(2)];
  const records = await decode(
    withRam(
      part,
      be64(0x100),
      str("pc.ram"),
      be32(data.length),
      data,
      EOS,
      FOOTER,
      0,
    ),
    { vmdesc: false },
  );
  const compressed = records.find((r) => r.type === "ram-compressed");
  assert.ok(compressed?.type === "ram-compressed");
  assert.deepEqual(compressed.page, page(0x42));
  const corrupt = data.slice();
  corrupt[5]! ^= 0xff;
  await assert.rejects(
    decode(
      withRam(
        part,
        be64(0x100),
        str("pc.ram"),
        be32(corrupt.length),
        corrupt,
        EOS,
        FOOTER,
        0,
      ),
    ),
    StreamFormatError,
  );
  await rejectsAt(
    withRam(part, be64(0x100), str("pc.ram"), be32(5000)),
    RAM_BODY_AT + 5 + 15,
    /exceeds zlib's bound/,
  );
});

Deno.test("MigrationDecoderStream cancels the producer when the bytes are bad", async () => {
  let cancelled: unknown;
  const source = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(bytesOf(HEADER, 0x09));
    },
    cancel(reason) {
      cancelled = reason;
    },
  });
  const stream = new MigrationDecoderStream();
  const pipe = source.pipeTo(stream.writable);
  await assert.rejects(Array.fromAsync(stream.readable), StreamFormatError);
  await assert.rejects(pipe, StreamFormatError);
  assert.ok(cancelled instanceof StreamFormatError);
});
