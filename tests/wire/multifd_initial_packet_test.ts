import assert from "node:assert/strict";
import {
  decodeMultifdInitialPacket,
  encodeMultifdInitialPacket,
  MULTIFD_INITIAL_PACKET_SIZE,
  type MultifdInitialPacket,
  StreamFormatError,
  UnexpectedEndOfStreamError,
} from "../../mod.ts";

const ZERO_UUID = "00000000-0000-0000-0000-000000000000";

/** The 64 bytes QEMU 7.2 sends first on channel 3 of a VM with this UUID. */
const VECTOR = new Uint8Array([
  ...[0x11, 0x22, 0x33, 0x44], // magic
  ...[0x00, 0x00, 0x00, 0x01], // version
  ...[0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x40, 0x02],
  ...[0x80, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04], // uuid
  0x03, // channel id
  ...new Array(7 + 32).fill(0), // reserved
]);
const PACKET: MultifdInitialPacket = {
  type: "multifd-initial",
  uuid: "deadbeef-0001-4002-8003-000000000004",
  channelId: 3,
};

Deno.test("encodeMultifdInitialPacket() writes the hand-written vector", () => {
  assert.equal(VECTOR.byteLength, MULTIFD_INITIAL_PACKET_SIZE);
  assert.deepEqual(encodeMultifdInitialPacket(PACKET), VECTOR);
});

Deno.test("decodeMultifdInitialPacket() reads the hand-written vector", () => {
  assert.deepEqual(decodeMultifdInitialPacket(VECTOR), PACKET);
});

Deno.test("decodeMultifdInitialPacket() reads upper-case UUIDs back in lower case", () => {
  const bytes = encodeMultifdInitialPacket({
    ...PACKET,
    uuid: "DEADBEEF-0001-4002-8003-000000000004",
  });
  assert.deepEqual(bytes, VECTOR);
  assert.equal(decodeMultifdInitialPacket(bytes).uuid, PACKET.uuid);
});

Deno.test("decodeMultifdInitialPacket() round-trips every channel id", () => {
  for (let channelId = 0; channelId <= 255; channelId++) {
    const packet = {
      type: "multifd-initial",
      uuid: ZERO_UUID,
      channelId,
    } as const;
    assert.deepEqual(
      decodeMultifdInitialPacket(encodeMultifdInitialPacket(packet)),
      packet,
    );
  }
});

Deno.test("decodeMultifdInitialPacket() ignores the reserved bytes, as QEMU 7.2 does", () => {
  const bytes = VECTOR.slice();
  bytes.fill(0xff, 25);
  assert.deepEqual(decodeMultifdInitialPacket(bytes), PACKET);
});

Deno.test("decodeMultifdInitialPacket() refuses a wrong magic at its offset", () => {
  const bytes = VECTOR.slice();
  bytes[0] = 0x12;
  assert.throws(
    () => decodeMultifdInitialPacket(bytes, 100),
    (error) =>
      error instanceof StreamFormatError && error.offset === 100 &&
      error.message ===
        "Cannot decode multifd initial packet at offset 100: magic 0x12223344 is not 0x11223344",
  );
});

Deno.test("decodeMultifdInitialPacket() refuses another version at its offset", () => {
  const bytes = VECTOR.slice();
  bytes[7] = 2;
  assert.throws(
    () => decodeMultifdInitialPacket(bytes, 100),
    (error) =>
      error instanceof StreamFormatError && error.offset === 104 &&
      /version 2 is not 1/.test(error.message),
  );
});

Deno.test("decodeMultifdInitialPacket() refuses fewer than 64 bytes", () => {
  assert.throws(
    () => decodeMultifdInitialPacket(VECTOR.subarray(0, 63), 8),
    (error) =>
      error instanceof UnexpectedEndOfStreamError && error.offset === 8 &&
      /received 63 of 64 bytes/.test(error.message),
  );
});

Deno.test("encodeMultifdInitialPacket() refuses a channel id that is not a byte", () => {
  for (const channelId of [-1, 256, 1.5]) {
    assert.throws(
      () => encodeMultifdInitialPacket({ ...PACKET, channelId }),
      RangeError,
    );
  }
});

Deno.test("encodeMultifdInitialPacket() refuses a UUID not in its text form", () => {
  for (
    const uuid of [
      "",
      "deadbeef00014002800300000000004",
      "{deadbeef-0001-4002-8003-000000000004}",
    ]
  ) {
    assert.throws(
      () => encodeMultifdInitialPacket({ ...PACKET, uuid }),
      TypeError,
    );
  }
});
