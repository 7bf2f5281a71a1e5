import assert from "node:assert/strict";
import { ByteWriter } from "../../mod.ts";

Deno.test("ByteWriter writes big-endian integers", () => {
  const writer = new ByteWriter(1);
  writer.uint8(0xab).uint16(0x1234).uint32(0xdeadbeef).uint64(2 ** 40 + 5)
    .bigUint64(0xfedcba9876543210n);
  assert.deepEqual(
    writer.bytes(),
    new Uint8Array([
      0xab,
      0x12,
      0x34,
      0xde,
      0xad,
      0xbe,
      0xef,
      0,
      0,
      1,
      0,
      0,
      0,
      0,
      5,
      0xfe,
      0xdc,
      0xba,
      0x98,
      0x76,
      0x54,
      0x32,
      0x10,
    ]),
  );
});

Deno.test("ByteWriter grows and keeps what was written", () => {
  const writer = new ByteWriter(2);
  const data = new Uint8Array(5000).map((_, i) => i & 255);
  writer.write(data.subarray(0, 3)).write(data.subarray(3));
  assert.deepEqual(writer.bytes(), data);
});

Deno.test("ByteWriter writes counted strings and refuses long ones", () => {
  const writer = new ByteWriter();
  writer.countedString("pc.ram");
  assert.deepEqual(
    writer.bytes(),
    new Uint8Array([6, 0x70, 0x63, 0x2e, 0x72, 0x61, 0x6d]),
  );
  assert.throws(() => writer.countedString("x".repeat(256)), RangeError);
});

Deno.test("ByteWriter takeBytes() hands the bytes over and starts afresh", () => {
  const writer = new ByteWriter(8);
  writer.uint32(1);
  const taken = writer.takeBytes();
  writer.uint32(2);
  assert.deepEqual(taken, new Uint8Array([0, 0, 0, 1]));
  assert.deepEqual(writer.bytes(), new Uint8Array([0, 0, 0, 2]));
});

Deno.test("ByteWriter patchUint32() back-patches a length", () => {
  const writer = new ByteWriter();
  writer.uint32(0).write(new Uint8Array(3));
  writer.patchUint32(0, 3);
  assert.deepEqual(writer.bytes(), new Uint8Array([0, 0, 0, 3, 0, 0, 0]));
  assert.throws(() => writer.patchUint32(5, 1), RangeError);
});

Deno.test("ByteWriter rejects a bad capacity", () => {
  assert.throws(() => new ByteWriter(0), RangeError);
});
