import assert from "node:assert/strict";
import {
  decodeUleb128,
  encodeUleb128,
  ULEB128_MAX,
} from "../../lib/bytes/uleb128.ts";

const VECTORS: [number, number[]][] = [
  [0, [0x00]],
  [1, [0x01]],
  [0x7f, [0x7f]],
  [0x80, [0x80, 0x01]],
  [0xc8, [0xc8, 0x01]],
  [0x123, [0xa3, 0x02]],
  [0xefa, [0xfa, 0x1d]],
  [0xfff, [0xff, 0x1f]],
  [0x1000, [0x80, 0x20]],
  [0x3fff, [0xff, 0x7f]],
];

for (const [value, bytes] of VECTORS) {
  Deno.test(`encodeUleb128() writes ${value} as ${hex(bytes)}`, () => {
    const output = new Uint8Array(4).fill(0xee);
    assert.equal(encodeUleb128(value, output, 1), 1 + bytes.length);
    assert.deepEqual(
      [...output],
      [0xee, ...bytes, ...new Array(3 - bytes.length).fill(0xee)],
    );
  });

  Deno.test(`decodeUleb128() reads ${hex(bytes)} as ${value}`, () => {
    assert.deepEqual(decodeUleb128(new Uint8Array([0x55, ...bytes]), 1), {
      kind: "value",
      value,
      size: bytes.length,
    });
  });
}

Deno.test("encodeUleb128() and decodeUleb128() round-trip every value", () => {
  const output = new Uint8Array(2);
  for (let value = 0; value <= ULEB128_MAX; value++) {
    const size = encodeUleb128(value, output);
    assert.equal(size, value < 0x80 ? 1 : 2);
    const decoded = decodeUleb128(output.subarray(0, size));
    assert.deepEqual(decoded, { kind: "value", value, size });
  }
});

Deno.test("encodeUleb128() defaults to position 0", () => {
  const output = new Uint8Array(2);
  assert.equal(encodeUleb128(0x80, output), 2);
  assert.deepEqual(output, new Uint8Array([0x80, 0x01]));
});

for (const value of [-1, 0x4000, 1.5, NaN, Infinity]) {
  Deno.test(`encodeUleb128() rejects ${value}`, () => {
    assert.throws(
      () => encodeUleb128(value, new Uint8Array(4)),
      (error) =>
        error instanceof RangeError &&
        error.message.startsWith(`Cannot encode ${value} as a 2-byte ULEB128`),
    );
  });
}

Deno.test("encodeUleb128() rejects a value that does not fit the output", () => {
  assert.throws(() => encodeUleb128(5, new Uint8Array(2), 2), RangeError);
  assert.throws(() => encodeUleb128(0x80, new Uint8Array(2), 1), RangeError);
  assert.throws(() => encodeUleb128(5, new Uint8Array(2), -1), RangeError);
});

Deno.test("encodeUleb128() leaves the output unchanged when it throws", () => {
  const output = new Uint8Array([1, 2]);
  assert.throws(() => encodeUleb128(0x80, output, 1), RangeError);
  assert.deepEqual(output, new Uint8Array([1, 2]));
});

Deno.test("decodeUleb128() rejects a second byte with bit 7 set", () => {
  for (let second = 0x80; second <= 0xff; second++) {
    assert.deepEqual(decodeUleb128(new Uint8Array([0x81, second])), {
      kind: "invalid",
    });
  }
});

Deno.test("decodeUleb128() reports truncation", () => {
  assert.deepEqual(decodeUleb128(new Uint8Array([])), { kind: "truncated" });
  assert.deepEqual(decodeUleb128(new Uint8Array([0x80])), {
    kind: "truncated",
  });
  assert.deepEqual(decodeUleb128(new Uint8Array([0x05]), 1), {
    kind: "truncated",
  });
  assert.deepEqual(decodeUleb128(new Uint8Array([0x05]), -1), {
    kind: "truncated",
  });
});

Deno.test("decodeUleb128() accepts non-canonical two-byte forms, as QEMU does", () => {
  assert.deepEqual(decodeUleb128(new Uint8Array([0x85, 0x00])), {
    kind: "value",
    value: 5,
    size: 2,
  });
  assert.deepEqual(decodeUleb128(new Uint8Array([0x80, 0x00])), {
    kind: "value",
    value: 0,
    size: 2,
  });
});

function hex(bytes: number[]): string {
  return bytes.map((byte) => byte.toString(16).padStart(2, "0")).join(" ");
}
