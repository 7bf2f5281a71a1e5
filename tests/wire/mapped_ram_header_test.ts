import assert from "node:assert/strict";
import {
  decodeMappedRamHeader,
  encodeMappedRamHeader,
  MAPPED_RAM_HEADER_SIZE,
  StreamFormatError,
  UnexpectedEndOfStreamError,
} from "../../mod.ts";

const HEADER = {
  version: 1,
  pageSize: 4096,
  bitmapOffset: 0x60,
  pagesOffset: 0x100000,
};

Deno.test("encodeMappedRamHeader() writes big-endian fields at 0, 4, 12, 20", () => {
  const bytes = encodeMappedRamHeader({
    version: 1,
    pageSize: 0x1000,
    bitmapOffset: 0x0102030405,
    pagesOffset: 0x2100000,
  });
  assert.deepEqual(
    bytes,
    new Uint8Array([
      ...[0, 0, 0, 1],
      ...[0, 0, 0, 0, 0, 0, 0x10, 0],
      ...[0, 0, 0, 0x01, 0x02, 0x03, 0x04, 0x05],
      ...[0, 0, 0, 0, 0x02, 0x10, 0, 0],
    ]),
  );
});

Deno.test("decodeMappedRamHeader() inverts encodeMappedRamHeader()", () => {
  const header = {
    version: 7,
    pageSize: 65536,
    bitmapOffset: 2 ** 53 - 1,
    pagesOffset: 123 * 4096,
  };
  const padded = new Uint8Array(40);
  padded.set(encodeMappedRamHeader(header), 5);
  assert.deepEqual(decodeMappedRamHeader(padded.subarray(5)), header);
});

Deno.test("decodeMappedRamHeader() names the field offset of a value past 2^53", () => {
  const bytes = encodeMappedRamHeader({
    version: 1,
    pageSize: 4096,
    bitmapOffset: 0,
    pagesOffset: 0,
  });
  bytes[20] = 0x80;
  assert.throws(
    () => decodeMappedRamHeader(bytes, 1000),
    (error) =>
      error instanceof StreamFormatError && error.offset === 1020 &&
      /pages offset/.test(error.message),
  );
});

Deno.test("encodeMappedRamHeader() writes MAPPED_RAM_HEADER_SIZE bytes", () => {
  assert.equal(
    encodeMappedRamHeader(HEADER).byteLength,
    MAPPED_RAM_HEADER_SIZE,
  );
});

Deno.test("decodeMappedRamHeader() rejects a header cut short", () => {
  assert.throws(
    () => decodeMappedRamHeader(new Uint8Array(27), 64),
    (error) =>
      error instanceof UnexpectedEndOfStreamError && error.offset === 64,
  );
});

Deno.test("encodeMappedRamHeader() rejects values that do not fit", () => {
  assert.throws(
    () => encodeMappedRamHeader({ ...HEADER, version: 2 ** 32 }),
    RangeError,
  );
  assert.throws(
    () => encodeMappedRamHeader({ ...HEADER, pagesOffset: -1 }),
    RangeError,
  );
  assert.throws(
    () => encodeMappedRamHeader({ ...HEADER, bitmapOffset: 2 ** 53 }),
    RangeError,
  );
});
