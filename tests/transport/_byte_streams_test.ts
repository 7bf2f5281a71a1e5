import assert from "node:assert/strict";
import { concatBytes } from "../../lib/bytes/concat_bytes.ts";
import {
  type ByteSink,
  createSinkStream,
  createSourceStream,
} from "../../lib/transport/_byte_streams.ts";
import { TransportError } from "../../lib/transport/transport_error.ts";
import { createPrng } from "../_helpers/prng.ts";
import { assertSameBytes, readAll } from "../_helpers/transport_conformance.ts";

/** A sink that records what it got, a few bytes per call at most. */
function recordingSink(maxBytesPerWrite = Infinity) {
  const writes: Uint8Array[] = [];
  const events: string[] = [];
  let gate: PromiseWithResolvers<void> | undefined;
  const sink: ByteSink = {
    description: "test:sink",
    async write(bytes) {
      await gate?.promise;
      const count = Math.min(bytes.byteLength, maxBytesPerWrite);
      writes.push(bytes.slice(0, count));
      return count;
    },
    close() {
      events.push("close");
      return Promise.resolve();
    },
    abort(reason) {
      events.push(`abort: ${(reason as Error).message}`);
    },
  };
  return {
    sink,
    writes,
    events,
    bytes: () => concatBytes(writes),
    hold() {
      gate = Promise.withResolvers();
    },
    release() {
      gate?.resolve();
      gate = undefined;
    },
  };
}

Deno.test("createSinkStream() keeps byte order across short writes, small and large chunks", async () => {
  const target = recordingSink(3);
  const writer = createSinkStream(target.sink, {
    coalesceBytes: 16,
    stagingBytes: 64,
  }).getWriter();
  const prng = createPrng(31);
  const data = prng.fill(new Uint8Array(20_000));
  for (let offset = 0; offset < data.byteLength;) {
    const size = 1 + prng.nextInt(prng.nextInt(2) === 0 ? 16 : 200);
    await writer.ready;
    writer.write(data.subarray(offset, offset + size));
    offset += size;
  }
  await writer.close();
  assertSameBytes(target.bytes(), data);
  assert.deepEqual(target.events, ["close"]);
});

Deno.test("createSinkStream() sends small chunks written during a write as one write", async () => {
  const target = recordingSink();
  const writer = createSinkStream(target.sink, {
    coalesceBytes: 16,
    stagingBytes: 64,
  }).getWriter();
  target.hold();
  await writer.write(new Uint8Array([0])); // copied; its write is now held
  for (let i = 1; i <= 5; i++) await writer.write(new Uint8Array([i]));
  target.release();
  await writer.close();
  assert.deepEqual(target.writes, [
    new Uint8Array([0]),
    new Uint8Array([1, 2, 3, 4, 5]),
  ]);
});

Deno.test("createSinkStream() holds the writer once both staging buffers are full", async () => {
  const target = recordingSink();
  const writer = createSinkStream(target.sink, {
    coalesceBytes: 16,
    stagingBytes: 8,
  }).getWriter();
  target.hold();
  await writer.write(new Uint8Array(8)); // in flight
  await writer.write(new Uint8Array(8)); // fills the other buffer
  let accepted = false;
  const third = writer.write(new Uint8Array(8)).then(() => accepted = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(accepted, false);
  assert.equal(writer.desiredSize, 0);
  target.release();
  await third;
  await writer.close();
  assert.equal(target.bytes().byteLength, 24);
});

Deno.test("createSinkStream() copies small chunks, so they may be reused once written", async () => {
  const target = recordingSink();
  const writer = createSinkStream(target.sink, {
    coalesceBytes: 16,
    stagingBytes: 64,
  }).getWriter();
  const chunk = new Uint8Array([1, 2, 3]);
  target.hold();
  await writer.write(chunk);
  chunk.fill(9);
  target.release();
  await writer.close();
  assertSameBytes(target.bytes(), new Uint8Array([1, 2, 3]));
});

Deno.test("createSinkStream() errors the stream with a TransportError when a write fails", async () => {
  const cause = new Error("Connection reset by peer");
  const target = recordingSink();
  target.sink.write = () => Promise.reject(cause);
  const writer = createSinkStream(target.sink, {
    coalesceBytes: 16,
    stagingBytes: 64,
  }).getWriter();
  writer.write(new Uint8Array(4)).catch(() => {}); // staged, fails later
  await assert.rejects(writer.closed, (error: TransportError) => {
    assert.ok(error instanceof TransportError);
    assert.equal(
      error.message,
      'Cannot write to "test:sink": Connection reset by peer',
    );
    assert.equal(error.uri, "test:sink");
    assert.equal(error.cause, cause);
    return true;
  });
  assert.deepEqual(target.events, [
    'abort: Cannot write to "test:sink": Connection reset by peer',
  ]);
});

Deno.test("createSinkStream() says the transport is closed when a write fails after its owner closed it", async () => {
  const target = recordingSink();
  target.sink.write = () => Promise.reject(new Error("Bad resource ID"));
  target.sink.isClosed = () => true;
  const writer = createSinkStream(target.sink).getWriter();
  await assert.rejects(
    writer.write(new Uint8Array(64 * 1024)),
    (error: TransportError) => {
      assert.ok(error instanceof TransportError);
      assert.equal(
        error.message,
        'Cannot write to "test:sink": the transport is closed',
      );
      return true;
    },
  );
});

Deno.test("createSinkStream() reports the error wrapError gives, or the default when it gives none", async () => {
  const own = new Error("the command failed");
  for (
    const [wrapped, message] of [[own, own.message], [
      undefined,
      'Cannot write to "test:sink": Broken pipe',
    ]] as const
  ) {
    const target = recordingSink();
    target.sink.write = () => Promise.reject(new Error("Broken pipe"));
    target.sink.wrapError = () => Promise.resolve(wrapped);
    const writer = createSinkStream(target.sink).getWriter();
    await assert.rejects(writer.write(new Uint8Array(64 * 1024)), (error) => {
      assert.equal((error as Error).message, message);
      if (wrapped) assert.equal(error, wrapped);
      return true;
    });
    assert.deepEqual(target.events, [`abort: ${message}`]);
  }
});

Deno.test("createSinkStream() coalesces chunks below 16 KiB by default and writes larger ones as they are", async () => {
  const target = recordingSink();
  const writer = createSinkStream(target.sink).getWriter();
  target.hold();
  await writer.write(new Uint8Array(16 * 1024 - 1)); // staged; its write is held
  await writer.write(new Uint8Array(100).fill(1));
  await writer.write(new Uint8Array(200).fill(2));
  target.release();
  await writer.write(new Uint8Array(16 * 1024).fill(3));
  await writer.close();
  assert.deepEqual(
    target.writes.map((bytes) => bytes.byteLength),
    [16 * 1024 - 1, 300, 16 * 1024],
  );
});

Deno.test("createSourceStream() treats a read of 0 bytes as no end", async () => {
  const reads = [0, 2, 0, 0, 1, null];
  let finished = 0;
  const readable = createSourceStream({
    description: "test:source",
    read(buffer) {
      const count = reads.shift()!;
      if (count !== null) buffer.fill(7, 0, count);
      return Promise.resolve(count);
    },
    isClosed: () => false,
    finished: () => finished++,
  }, 16);
  assertSameBytes(await readAll(readable), new Uint8Array([7, 7, 7]));
  assert.equal(finished, 1);
});

Deno.test("createSourceStream() reads straight into a BYOB reader's buffer", async () => {
  let seen: ArrayBufferLike | undefined;
  const readable = createSourceStream({
    description: "test:source",
    read(buffer) {
      if (seen !== undefined) return Promise.resolve(null);
      seen = buffer.buffer;
      buffer.set([1, 2]);
      return Promise.resolve(2);
    },
    isClosed: () => false,
    finished: () => {},
  }, 16);
  const reader = readable.getReader({ mode: "byob" });
  const { value } = await reader.read(new Uint8Array(100));
  assert.deepEqual(value, new Uint8Array([1, 2]));
  assert.equal(value!.buffer.byteLength, 100);
  assert.equal((await reader.read(new Uint8Array(value!.buffer))).done, true);
});

Deno.test("createSourceStream() errors with a TransportError when a read fails", async () => {
  const cause = new Error("Connection reset by peer");
  const readable = createSourceStream({
    description: "test:source",
    read: () => Promise.reject(cause),
    isClosed: () => false,
    finished: () => {},
  }, 16);
  await assert.rejects(readAll(readable), {
    name: "TransportError",
    message: 'Cannot read from "test:source": Connection reset by peer',
  });
});

Deno.test("createSourceStream() ends cleanly when a read fails because its owner closed it", async () => {
  const readable = createSourceStream({
    description: "test:source",
    read: () => Promise.reject(new Error("Bad resource ID")),
    isClosed: () => true,
    finished: () => {},
  }, 16);
  assert.equal((await readAll(readable)).byteLength, 0);
});
