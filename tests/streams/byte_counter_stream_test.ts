import assert from "node:assert/strict";
import { ByteCounterStream } from "../../lib/streams/byte_counter_stream.ts";

Deno.test("ByteCounterStream passes chunks on unchanged and counts them", async () => {
  const a = new Uint8Array([1, 2, 3]);
  const b = new Uint8Array([4]);
  const counter = new ByteCounterStream();
  const out = await Array.fromAsync(
    ReadableStream.from([a, b]).pipeThrough(counter),
  );
  assert.equal(out[0], a, "the same chunk object, not a copy");
  assert.equal(out[1], b);
  assert.equal(counter.bytes, 4);
});

Deno.test("ByteCounterStream reports at most once per everyBytes", async () => {
  const totals: number[] = [];
  const counter = new ByteCounterStream({
    everyBytes: 10,
    onCount: (bytes) => totals.push(bytes),
  });
  const chunks = Array.from({ length: 7 }, () => new Uint8Array(4));
  await ReadableStream.from(chunks).pipeThrough(counter).pipeTo(
    new WritableStream(),
  );
  assert.deepEqual(totals, [12, 24]);
  assert.equal(counter.bytes, 28);
});

Deno.test("ByteCounterStream rejects a negative everyBytes", () => {
  assert.throws(() => new ByteCounterStream({ everyBytes: -1 }), RangeError);
});
