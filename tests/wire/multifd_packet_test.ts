import assert from "node:assert/strict";
import {
  decodeMultifdPacketHeader,
  encodeMultifdPacket,
  encodeMultifdPacketHeader,
  MULTIFD_FLAG,
  MULTIFD_MAX_COMPRESSED_SIZE,
  multifdCompressionFlag,
  multifdCompressionOf,
  type MultifdPacket,
  multifdPacketDataLength,
  multifdPacketHeaderSize,
  multifdPageSlots,
  StreamFormatError,
  UnexpectedEndOfStreamError,
} from "../../mod.ts";

/**
 * A packet for 64 KiB pages (8 offset slots, 384-byte header): SYNC | zlib,
 * 2 of 8 slots used, a leftover offset in slot 3, 5 bytes of data.
 */
const VECTOR = new Uint8Array([
  ...[0x11, 0x22, 0x33, 0x44], // magic
  ...[0, 0, 0, 1], // version
  ...[0, 0, 0, 0x03], // flags: SYNC | ZLIB
  ...[0, 0, 0, 8], // pages_alloc
  ...[0, 0, 0, 2], // normal_pages
  ...[0, 0, 0, 5], // next_packet_size
  ...[0, 0, 0, 0, 0, 0, 0x01, 0x02], // packet_num 258
  ...new Array(32).fill(0), // reserved
  ...[0x70, 0x63, 0x2e, 0x72, 0x61, 0x6d], // "pc.ram"
  ...new Array(250).fill(0),
  ...[0, 0, 0, 0, 0, 0x01, 0, 0], // offset 0x10000
  ...[0, 0, 0, 0x01, 0, 0, 0, 0], // offset 0x100000000
  ...[0, 0, 0, 0, 0, 0, 0, 0], // unused slot
  ...[0, 0, 0, 0, 0, 0x07, 0, 0], // unused slot with a leftover offset
  ...new Array(32).fill(0), // unused slots
  ...[1, 2, 3, 4, 5], // data
]);
const PACKET: MultifdPacket = {
  type: "multifd-packet",
  flags: MULTIFD_FLAG.SYNC | MULTIFD_FLAG.ZLIB,
  pagesAlloc: 8,
  nextPacketSize: 5,
  packetNum: 258n,
  ramBlock: "pc.ram",
  offsets: [0x10000, 0x100000000],
  unusedOffsetSlots: new Uint8Array([
    ...new Array(8).fill(0),
    ...[0, 0, 0, 0, 0, 0x07, 0, 0],
    ...new Array(32).fill(0),
  ]),
  data: new Uint8Array([1, 2, 3, 4, 5]),
};
const OPTIONS = { pageSize: 65536 };

function base(overrides: Partial<MultifdPacket> = {}): MultifdPacket {
  return {
    type: "multifd-packet",
    flags: 0,
    pagesAlloc: 128,
    nextPacketSize: 0,
    packetNum: 0n,
    ramBlock: "pc.ram",
    offsets: [],
    data: new Uint8Array(0),
    ...overrides,
  };
}

Deno.test("multifdPacketHeaderSize() is 320 + 8 bytes per slot of 512 KiB / page size", () => {
  assert.equal(multifdPacketHeaderSize(4096), 1344);
  assert.equal(multifdPacketHeaderSize(65536), 384);
  assert.equal(multifdPageSlots(512), 1024);
  for (const pageSize of [0, 256, 1000, 1 << 20]) {
    assert.throws(() => multifdPacketHeaderSize(pageSize), RangeError);
  }
});

Deno.test("encodeMultifdPacket() writes the hand-written vector", () => {
  assert.deepEqual(encodeMultifdPacket(PACKET, OPTIONS), VECTOR);
});

Deno.test("decodeMultifdPacketHeader() reads the hand-written vector", () => {
  const { data: _, ...header } = PACKET;
  assert.deepEqual(decodeMultifdPacketHeader(VECTOR, OPTIONS), header);
  assert.equal(multifdPacketDataLength(header, 65536), 5);
});

Deno.test("decodeMultifdPacketHeader() leaves unusedOffsetSlots out when they are zero", () => {
  const bytes = encodeMultifdPacketHeader(base({ offsets: [4096] }));
  assert.equal("unusedOffsetSlots" in decodeMultifdPacketHeader(bytes), false);
});

Deno.test("encodeMultifdPacket() round-trips packets of every method with and without pages", () => {
  const page = new Uint8Array(4096).fill(9);
  const packets = [
    base({ flags: MULTIFD_FLAG.SYNC, nextPacketSize: 188416 }), // stale size, no data
    base({
      offsets: [0, 8192],
      nextPacketSize: 8192,
      data: new Uint8Array(8192).fill(3),
    }),
    base({
      flags: MULTIFD_FLAG.ZLIB,
      offsets: [4096],
      nextPacketSize: 3,
      data: new Uint8Array([7, 8, 9]),
    }),
    base({
      flags: MULTIFD_FLAG.ZSTD | MULTIFD_FLAG.SYNC,
      offsets: Array.from({ length: 128 }, (_, i) => i * 4096),
      nextPacketSize: 1,
      data: new Uint8Array([1]),
    }),
    base({
      offsets: Array.from({ length: 128 }, (_, i) => (127 - i) * 4096),
      nextPacketSize: 128 * 4096,
      data: new Uint8Array(128 * 4096).fill(1),
      packetNum: 2n ** 64n - 1n,
    }),
    base({
      flags: 0xf0_00_00_01,
      ramBlock: "/rom@etc/acpi/tables",
      offsets: [4096],
      nextPacketSize: 4096,
      data: page,
    }),
  ];
  for (const packet of packets) {
    const bytes = encodeMultifdPacket(packet);
    const header = decodeMultifdPacketHeader(bytes);
    const length = multifdPacketDataLength(header);
    assert.deepEqual(
      { ...header, data: bytes.subarray(1344, 1344 + length) },
      packet,
    );
    assert.equal(bytes.byteLength, 1344 + length);
  }
});

Deno.test("multifdPacketDataLength() ignores next_packet_size for none and for packets without pages", () => {
  assert.equal(
    multifdPacketDataLength(
      base({ offsets: [0, 4096, 8192], nextPacketSize: 7 }),
    ),
    3 * 4096,
  );
  assert.equal(
    multifdPacketDataLength(
      base({ flags: MULTIFD_FLAG.ZSTD, nextPacketSize: 99 }),
    ),
    0,
  );
  assert.equal(
    multifdPacketDataLength(base({ flags: 5 << 1, nextPacketSize: 99 })),
    0,
  );
  assert.equal(
    multifdPacketDataLength(
      base({ flags: MULTIFD_FLAG.ZSTD, offsets: [0], nextPacketSize: 99 }),
    ),
    99,
  );
  assert.throws(
    () => multifdPacketDataLength(base({ flags: 5 << 1, offsets: [0] })),
    TypeError,
  );
});

Deno.test("multifdCompressionOf() and multifdCompressionFlag() agree with QEMU 7.2's bits", () => {
  for (const [name, bits] of [["none", 0], ["zlib", 2], ["zstd", 4]] as const) {
    assert.equal(multifdCompressionFlag(name), bits);
    assert.equal(multifdCompressionOf(bits | MULTIFD_FLAG.SYNC), name);
  }
  for (const bits of [3, 4, 5, 6, 7]) {
    assert.equal(multifdCompressionOf(bits << 1), undefined);
  }
});

const BAD_HEADERS: [string, (view: DataView) => void, number, RegExp][] = [
  [
    "a wrong magic",
    (v) => v.setUint32(0, 0x5145564d),
    0,
    /magic 0x5145564d is not 0x11223344/,
  ],
  ["another version", (v) => v.setUint32(4, 2), 4, /version 2 is not 1/],
  [
    "pages_alloc above the slot count",
    (v) => v.setUint32(12, 129),
    12,
    /pages_alloc 129 is more than 128/,
  ],
  [
    "normal_pages above pages_alloc",
    (v) => {
      v.setUint32(12, 2);
      v.setUint32(16, 3);
    },
    16,
    /normal_pages 3 is more than pages_alloc 2/,
  ],
  [
    "unknown compression bits with pages",
    (v) => {
      v.setUint32(8, 3 << 1);
      v.setUint32(16, 1);
    },
    8,
    /compression bits 0x6 name no method/,
  ],
  [
    "compressed data too large for QEMU 7.2's buffer",
    (v) => {
      v.setUint32(8, MULTIFD_FLAG.ZLIB);
      v.setUint32(16, 1);
      v.setUint32(20, MULTIFD_MAX_COMPRESSED_SIZE + 1);
    },
    20,
    /next_packet_size 1048577 is more than 1048576/,
  ],
  [
    "an offset beyond 2^53",
    (v) => {
      v.setUint32(16, 2);
      v.setUint32(328, 0x200000);
    },
    328,
    /page offset 0x20000000000000 is too large/,
  ],
];

for (const [name, corrupt, at, message] of BAD_HEADERS) {
  Deno.test(`decodeMultifdPacketHeader() refuses ${name} at its offset`, () => {
    const bytes = encodeMultifdPacketHeader(base());
    corrupt(new DataView(bytes.buffer));
    assert.throws(
      () => decodeMultifdPacketHeader(bytes, { offset: 1000 }),
      (error) =>
        error instanceof StreamFormatError && error.offset === 1000 + at &&
        message.test(error.message) &&
        error.message.startsWith(
          "Cannot decode multifd packet at offset 1000: ",
        ),
    );
  });
}

Deno.test("decodeMultifdPacketHeader() accepts what a 7.2 receiver accepts", () => {
  // SYNC-only packets keep leftover size and compression-free flags; bits
  // QEMU does not know outside the compression mask are kept.
  for (
    const packet of [
      base({ flags: MULTIFD_FLAG.SYNC, nextPacketSize: 0xffff_ffff }),
      base({ flags: (6 << 1) | MULTIFD_FLAG.SYNC }),
      base({
        flags: 2 ** 31,
        offsets: [0],
        nextPacketSize: 4096,
        data: new Uint8Array(4096),
      }),
      base({ pagesAlloc: 0 }),
    ]
  ) {
    const { data: _, ...header } = packet;
    assert.deepEqual(
      decodeMultifdPacketHeader(encodeMultifdPacket(packet)),
      header,
    );
  }
});

Deno.test("decodeMultifdPacketHeader() refuses another method than the expected one", () => {
  const bytes = encodeMultifdPacketHeader(
    base({ flags: MULTIFD_FLAG.NOCOMP, offsets: [0], nextPacketSize: 4096 }),
  );
  assert.throws(
    () => decodeMultifdPacketHeader(bytes, { compression: "zlib" }),
    (error) =>
      error instanceof StreamFormatError && error.offset === 8 &&
      /its pages are none-compressed, the receiver expects zlib/.test(
        error.message,
      ),
  );
  // Without pages the bits mean nothing: a zlib receiver takes them.
  const sync = encodeMultifdPacketHeader(base({ flags: MULTIFD_FLAG.SYNC }));
  assert.equal(
    decodeMultifdPacketHeader(sync, { compression: "zlib" }).flags,
    1,
  );
});

Deno.test("decodeMultifdPacketHeader() refuses a header cut short", () => {
  assert.throws(
    () => decodeMultifdPacketHeader(new Uint8Array(1343), { offset: 64 }),
    (error) =>
      error instanceof UnexpectedEndOfStreamError && error.offset === 64 &&
      /received 1343 of 1344 bytes/.test(error.message),
  );
});

Deno.test("decodeMultifdPacketHeader() cuts an unterminated block name at 255 bytes, as QEMU 7.2 does", () => {
  const bytes = encodeMultifdPacketHeader(base());
  bytes.fill(0x61, 64, 320);
  assert.equal(decodeMultifdPacketHeader(bytes).ramBlock, "a".repeat(255));
});

Deno.test("encodeMultifdPacketHeader() refuses fields that do not fit", () => {
  const cases: Partial<MultifdPacket>[] = [
    { flags: -1 },
    { flags: 2 ** 32 },
    { pagesAlloc: 129 },
    { pagesAlloc: 1, offsets: [0, 4096] },
    { nextPacketSize: 1.5 },
    { packetNum: -1n },
    { packetNum: 2n ** 64n },
    { ramBlock: "x".repeat(256) },
    { offsets: [-4096] },
    { offsets: [2 ** 53] },
    { offsets: [0], unusedOffsetSlots: new Uint8Array(8) },
  ];
  for (const overrides of cases) {
    assert.throws(
      () => encodeMultifdPacketHeader(base(overrides)),
      (error) =>
        error instanceof RangeError &&
        error.message.startsWith("Cannot encode multifd packet as "),
      JSON.stringify(overrides, (_, v) => typeof v === "bigint" ? `${v}n` : v),
    );
  }
});

Deno.test("encodeMultifdPacket() refuses data of another length than the header announces", () => {
  for (
    const packet of [
      base({ data: new Uint8Array(1) }),
      base({ offsets: [0], nextPacketSize: 4096, data: new Uint8Array(4095) }),
      base({
        flags: MULTIFD_FLAG.ZSTD,
        offsets: [0],
        nextPacketSize: 10,
        data: new Uint8Array(9),
      }),
    ]
  ) {
    assert.throws(() => encodeMultifdPacket(packet), RangeError);
  }
});
