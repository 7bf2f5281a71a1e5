import assert from "node:assert/strict";
import {
  encodeReturnPathMessage,
  ReturnPathDecoderStream,
  type ReturnPathMessage,
  StreamFormatError,
} from "../../mod.ts";
import { chunked, CHUNKINGS } from "../_helpers/chunking.ts";

const decode = (
  bytes: Uint8Array,
  chunking: "whole" | "bytewise" | "random" = "whole",
  options = {},
) =>
  Array.fromAsync(
    chunked(bytes, chunking).pipeThrough(new ReturnPathDecoderStream(options)),
  );

const hex = (text: string) =>
  new Uint8Array(
    text.replace(/\s+/g, "").match(/../g)!.map((b) => parseInt(b, 16)),
  );

Deno.test("encodeReturnPathMessage() writes QEMU 7.2's observed bytes", () => {
  const name = Array.from(
    new TextEncoder().encode("pc.ram"),
    (b) => b.toString(16),
  ).join("");
  const cases: [ReturnPathMessage, string][] = [
    [{ type: "PONG", value: 1 }, "0002 0004 00000001"],
    [
      { type: "REQ_PAGES_ID", start: 0xc0000, length: 0x1000, block: "pc.ram" },
      `0003 0013 00000000000c0000 00001000 06 ${name}`,
    ],
    [
      { type: "REQ_PAGES", start: 0x4e000, length: 0x1000 },
      "0004 000c 000000000004e000 00001000",
    ],
    [{ type: "RESUME_ACK", value: 1 }, "0006 0004 00000001"],
    [{ type: "SHUT", value: 0 }, "0001 0004 00000000"],
    [
      {
        type: "RECV_BITMAP",
        block: "pc.ram",
        bitmap: new Uint8Array(8).fill(0xff),
      },
      `0005 0007 06 ${name} 0000000000000008 ffffffffffffffff 0123456789abcdef`,
    ],
  ];
  for (const [message, bytes] of cases) {
    assert.deepEqual(
      encodeReturnPathMessage(message),
      hex(bytes),
      message.type,
    );
  }
});

const ALL: ReturnPathMessage[] = [
  { type: "PONG", value: 3 },
  {
    type: "REQ_PAGES_ID",
    start: 0x2000,
    length: 4096,
    block: "/rom@etc/acpi/tables",
  },
  { type: "REQ_PAGES", start: 0x3000, length: 4096 },
  {
    type: "RECV_BITMAP",
    block: "pc.ram",
    bitmap: new Uint8Array(1024).map((_, i) => i),
  },
  { type: "RESUME_ACK", value: 1 },
  { type: "SWITCHOVER_ACK" },
  { type: "SHUT", value: 1 },
];
const ALL_BYTES = new Uint8Array(
  ALL.flatMap((m) => [...encodeReturnPathMessage(m)]),
);

for (const chunking of CHUNKINGS) {
  Deno.test(`ReturnPathDecoderStream round-trips every message (${chunking} chunks)`, async () => {
    assert.deepEqual(await decode(ALL_BYTES, chunking), ALL);
  });
}

async function rejectsAt(
  bytes: Uint8Array,
  offset: number,
  message: RegExp,
  options = {},
) {
  await assert.rejects(decode(bytes, "whole", options), (error) => {
    assert.ok(error instanceof StreamFormatError);
    assert.match(error.message, message);
    assert.equal(error.offset, offset);
    return true;
  });
}

Deno.test("ReturnPathDecoderStream applies QEMU's source-side checks", async () => {
  await rejectsAt(hex("0000 0000"), 0, /type 0 is INVALID/);
  await rejectsAt(hex("0008 0000"), 0, /type 8 is unknown/);
  await rejectsAt(hex("0002 0005 0000000000"), 0, /length 5 differs from 4/);
  await rejectsAt(hex("0005 0201"), 0, /length 513 exceeds 512/);
  await rejectsAt(
    hex("0003 000e 0000000000000000 00001000 05 61"),
    0,
    /does not match its block name/,
  );
  const bitmap = encodeReturnPathMessage({
    type: "RECV_BITMAP",
    block: "pc.ram",
    bitmap: new Uint8Array(16),
  });
  await rejectsAt(bitmap, 11, /bitmap size 16 for "pc.ram" differs from 8/, {
    bitmapBytes: () => 8,
  });
  await rejectsAt(bitmap, 0, /unknown block "pc.ram"/, {
    bitmapBytes: () => undefined,
  });
  const broken = bitmap.slice();
  broken[broken.length - 1] = 0;
  await rejectsAt(broken, broken.length - 8, /lacks its end mark/);
  await assert.rejects(decode(hex("0002 0004 0000")), /stream ended/);
});
