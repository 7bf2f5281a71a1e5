import assert from "node:assert/strict";
import { ByteReader, UnexpectedEndOfStreamError } from "../../mod.ts";
import { chunked, CHUNKINGS, chunks } from "../_helpers/chunking.ts";
import { createPrng } from "../_helpers/prng.ts";

const BYTES = createPrng(5).fill(new Uint8Array(10_000));

for (const chunking of CHUNKINGS) {
  Deno.test(`ByteReader reads exact sizes across ${chunking} chunks`, async () => {
    const reader = new ByteReader(chunked(BYTES, chunking, 3));
    const prng = createPrng(9);
    let at = 0;
    while (at < BYTES.byteLength) {
      const size = Math.min(1 + prng.nextInt(700), BYTES.byteLength - at);
      const bytes = await reader.readExact(size);
      assert.deepEqual(bytes, BYTES.subarray(at, at + size));
      at += size;
      assert.equal(reader.offset, at);
    }
    assert.equal(await reader.readExactOrEnd(1), undefined);
    assert.ok(await reader.atEnd());
  });
}

Deno.test("ByteReader reads big-endian integers across chunk edges", async () => {
  const reader = new ByteReader(chunked(
    new Uint8Array([
      0x12,
      0x34,
      0xde,
      0xad,
      0xbe,
      0xef,
      1,
      2,
      3,
      4,
      5,
      6,
      7,
      8,
      0xff,
    ]),
    "bytewise",
  ));
  assert.equal(await reader.readUint16(), 0x1234);
  assert.equal(await reader.readUint32(), 0xdeadbeef);
  assert.equal(await reader.readBigUint64(), 0x0102030405060708n);
  assert.equal(await reader.readUint8(), 0xff);
});

Deno.test("ByteReader tells a clean end from a truncated value", async () => {
  const reader = new ByteReader(chunked(new Uint8Array([1, 2, 3]), "bytewise"));
  await assert.rejects(reader.readExactOrEnd(4, "a test value"), (error) => {
    assert.ok(error instanceof UnexpectedEndOfStreamError);
    assert.equal(error.offset, 0);
    assert.match(
      error.message,
      /a test value at offset 0 .*received 3 of 4 bytes/,
    );
    return true;
  });
});

Deno.test("ByteReader returns views without copying when a value lies in one chunk", async () => {
  const chunk = new Uint8Array(100);
  const reader = new ByteReader(ReadableStream.from([chunk]));
  const bytes = await reader.readExact(10);
  assert.equal(bytes.buffer, chunk.buffer);
});

Deno.test("ByteReader peek() merges chunks once and does not consume", async () => {
  const reader = new ByteReader(chunked(BYTES.subarray(0, 64), "bytewise"));
  await reader.require(16);
  assert.deepEqual(reader.peek(16), BYTES.subarray(0, 16));
  assert.equal(reader.offset, 0);
  assert.equal(reader.peekUint8(15), BYTES[15]);
  assert.deepEqual(reader.take(16), BYTES.subarray(0, 16));
});

Deno.test("ByteReader skip() discards without buffering the whole run", async () => {
  const reader = new ByteReader(chunked(BYTES, "random", 4));
  await reader.skip(9_000);
  assert.equal(reader.offset, 9_000);
  assert.deepEqual(await reader.readExact(4), BYTES.subarray(9_000, 9_004));
  await assert.rejects(reader.skip(5_000), UnexpectedEndOfStreamError);
});

Deno.test("ByteReader readChunk() hands over bytes as they arrived", async () => {
  const reader = new ByteReader(
    ReadableStream.from([BYTES.subarray(0, 10), BYTES.subarray(10, 30)]),
  );
  await reader.readExact(4);
  assert.deepEqual(await reader.readChunk(), BYTES.subarray(4, 10));
  assert.deepEqual(await reader.readChunk(5), BYTES.subarray(10, 15));
  assert.deepEqual(await reader.readChunk(), BYTES.subarray(15, 30));
  assert.equal(await reader.readChunk(), undefined);
});

Deno.test("ByteReader cancel() cancels the underlying stream", async () => {
  let reason: unknown;
  const reader = new ByteReader(
    new ReadableStream({ cancel: (r) => void (reason = r) }),
  );
  await reader.cancel("stop");
  assert.equal(reason, "stop");
});

Deno.test("ByteReader take() refuses bytes that are not buffered", () => {
  const reader = new ByteReader(ReadableStream.from([]));
  assert.throws(() => reader.take(1), RangeError);
});

/** A byte stream (`type: "bytes"`) that hands out `parts` one per pull. */
function byteStream(parts: Uint8Array[]): ReadableStream<Uint8Array> {
  const queue = parts.map((part) => part.slice());
  return new ReadableStream({
    type: "bytes",
    pull(controller) {
      const part = queue.shift();
      if (part !== undefined) return controller.enqueue(part);
      controller.close();
      controller.byobRequest?.respond(0);
    },
  });
}

/**
 * Reads all of BYTES with a seeded mix of every reading call and checks each
 * value against the source, copying what it keeps (BYOB views move).
 */
async function readMixed(reader: ByteReader, seed: number): Promise<void> {
  const prng = createPrng(seed);
  const view = new DataView(BYTES.buffer);
  let at = 0;
  while (BYTES.byteLength - at >= 8) {
    const left = BYTES.byteLength - at;
    switch (prng.nextInt(7)) {
      case 0: {
        const size = Math.min(1 + prng.nextInt(700), left);
        assert.deepEqual(
          (await reader.readExact(size)).slice(),
          BYTES.subarray(at, at + size),
        );
        at += size;
        break;
      }
      case 1:
        assert.equal(await reader.readUint32(), view.getUint32(at));
        at += 4;
        break;
      case 2:
        assert.equal(await reader.readBigUint64(), view.getBigUint64(at));
        at += 8;
        break;
      case 3: {
        const size = Math.min(1 + prng.nextInt(300), left);
        await reader.require(size);
        assert.deepEqual(
          reader.peek(size).slice(),
          BYTES.subarray(at, at + size),
        );
        assert.equal(reader.peekUint8(size - 1), BYTES[at + size - 1]);
        if (size >= 4) {
          assert.equal(
            reader.peekUint32(size - 4),
            view.getUint32(at + size - 4),
          );
        }
        assert.equal(reader.takeUint16(), view.getUint16(at));
        at += 2;
        break;
      }
      case 4: {
        const size = Math.min(prng.nextInt(900), left);
        await reader.skip(size);
        at += size;
        break;
      }
      case 5: {
        const bytes = (await reader.readChunk(1 + prng.nextInt(500)))!.slice();
        assert.deepEqual(bytes, BYTES.subarray(at, at + bytes.byteLength));
        at += bytes.byteLength;
        break;
      }
      default:
        assert.equal(await reader.readUint8(), BYTES[at]);
        at += 1;
    }
    assert.equal(reader.offset, at);
  }
  assert.deepEqual(
    (await reader.readExact(BYTES.byteLength - at)).slice(),
    BYTES.subarray(at),
  );
  assert.equal(await reader.readExactOrEnd(1), undefined);
  assert.ok(reader.ended);
  assert.ok(await reader.atEnd());
}

for (const chunking of CHUNKINGS) {
  Deno.test(`ByteReader reads a mix of values across ${chunking} chunks`, async () => {
    await readMixed(new ByteReader(chunked(BYTES, chunking, 3)), 11);
  });

  for (const bufferBytes of [16, 1024, 65_536]) {
    Deno.test(`ByteReader reads a mix of values from a byte stream of ${chunking} chunks into one reused ${bufferBytes}-byte buffer`, async () => {
      const reader = new ByteReader(
        byteStream(chunks(BYTES, chunking, 3)),
        0,
        { bufferBytes },
      );
      await readMixed(reader, 11);
    });
  }
}

Deno.test("ByteReader in BYOB mode tells a clean end from a truncated value", async () => {
  const reader = new ByteReader(
    byteStream([new Uint8Array([1, 2]), new Uint8Array([3])]),
    100,
    { bufferBytes: 2 },
  );
  await assert.rejects(reader.readExactOrEnd(4, "a test value"), (error) => {
    assert.ok(error instanceof UnexpectedEndOfStreamError);
    assert.equal(error.offset, 100);
    assert.match(error.message, /received 3 of 4 bytes/);
    return true;
  });
  const empty = new ByteReader(byteStream([]), 0, { bufferBytes: 8 });
  assert.equal(await empty.readExactOrEnd(4), undefined);
});

Deno.test("ByteReader in BYOB mode reads into its buffer and detaches old views on the next wait", async () => {
  const reader = new ByteReader(
    byteStream([BYTES.subarray(0, 10), BYTES.subarray(10, 20)]),
    0,
    { bufferBytes: 64 },
  );
  const first = await reader.readExact(4);
  const second = reader.take(4);
  assert.equal(first.buffer, second.buffer);
  assert.deepEqual(await reader.readExact(8), BYTES.subarray(8, 16));
  assert.equal(first.byteLength, 0);
});

Deno.test("ByteReader reads a stream that is not a byte stream as usual despite bufferBytes", async () => {
  const chunk = BYTES.subarray(0, 100);
  const reader = new ByteReader(ReadableStream.from([chunk]), 0, {
    bufferBytes: 16,
  });
  const bytes = await reader.readExact(10);
  assert.equal(bytes.buffer, chunk.buffer);
});

Deno.test("ByteReader rejects a negative bufferBytes", () => {
  assert.throws(
    () => new ByteReader(ReadableStream.from([]), 0, { bufferBytes: -1 }),
    RangeError,
  );
});
