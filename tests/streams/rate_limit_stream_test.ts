import assert from "node:assert/strict";
import { type Clock, RateLimitStream, type RateWindow } from "../../mod.ts";
import { createFakeClock } from "../_helpers/fake_clock.ts";

const chunk = (size: number) => new Uint8Array(size);

Deno.test("RateLimitStream holds bytes to bytesPerSecond in 100 ms windows", async () => {
  const clock = createFakeClock();
  const windows: RateWindow[] = [];
  const limiter = new RateLimitStream({
    bytesPerSecond: 100_000, // 10 000 bytes per window
    clock,
    onWindow: (w) => windows.push(w),
  });
  const chunks = Array.from({ length: 50 }, () => chunk(2_000)); // 100 000 bytes
  await ReadableStream.from(chunks).pipeThrough(limiter).pipeTo(
    new WritableStream(),
  );
  // Every 5 chunks spend a window; the last window is still open at the end.
  assert.equal(clock.slept.length, 10);
  assert.ok(
    clock.now() >= 900 && clock.now() <= 1000,
    `took ${clock.now()} ms`,
  );
  assert.equal(limiter.bytesPassed, 100_000);
  assert.deepEqual(
    windows.slice(0, 3).map((w) => [w.bytes, w.ms, w.bytesPerMs]),
    [
      [10_000, 100, 100],
      [10_000, 100, 100],
      [10_000, 100, 100],
    ],
  );
});

Deno.test("RateLimitStream never splits a chunk", async () => {
  const limiter = new RateLimitStream({
    bytesPerSecond: 1000,
    clock: createFakeClock(),
  });
  const out = await Array.fromAsync(
    ReadableStream.from([chunk(5000), chunk(7)]).pipeThrough(limiter),
  );
  assert.deepEqual(out.map((c) => c.byteLength), [5000, 7]);
});

Deno.test("RateLimitStream with no limit never waits and still measures", async () => {
  const clock = createFakeClock();
  const limiter = new RateLimitStream({ clock });
  const writer = limiter.writable.getWriter();
  const drained = limiter.readable.pipeTo(new WritableStream());
  await writer.write(chunk(3000));
  clock.advance(150);
  assert.deepEqual(limiter.measure(), { bytes: 3000, ms: 150, bytesPerMs: 20 });
  await writer.close();
  await drained;
  assert.deepEqual(clock.slept, []);
});

Deno.test("RateLimitStream lets urgent bytes pass without waiting", async () => {
  const clock = createFakeClock();
  const limiter = new RateLimitStream({ bytesPerSecond: 10_000, clock }); // 1000 per window
  limiter.passUntil(5000);
  await ReadableStream.from([chunk(2000), chunk(2000), chunk(1000), chunk(10)])
    .pipeThrough(limiter).pipeTo(new WritableStream());
  // Nothing waited for the first 5000 bytes; the next chunk found the
  // window spent and waited once.
  assert.equal(clock.slept.length, 1);
});

Deno.test("RateLimitStream.passUntil() ends a wait in progress", async () => {
  let release!: () => void;
  let waits = 0;
  const clock: Clock = {
    now: () => 0,
    sleep(_ms, signal) {
      waits++;
      return new Promise((resolve, reject) => {
        release = resolve;
        signal?.addEventListener("abort", () => reject(signal.reason), {
          once: true,
        });
      });
    },
  };
  const limiter = new RateLimitStream({ bytesPerSecond: 1000, clock });
  const writer = limiter.writable.getWriter();
  const reader = limiter.readable.getReader();
  const first = writer.write(chunk(500)); // spends the 100-byte window and waits
  await reader.read();
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(waits, 1);
  limiter.passUntil(1000);
  await first;
  void release;
  const next = reader.read();
  await writer.write(chunk(100));
  assert.equal((await next).value?.byteLength, 100);
  assert.equal(waits, 1, "urgent bytes did not wait");
});

Deno.test("RateLimitStream applies a new limit from the current window", async () => {
  const clock = createFakeClock();
  const limiter = new RateLimitStream({ bytesPerSecond: 1000, clock });
  limiter.bytesPerSecond = 0;
  await ReadableStream.from([chunk(10_000), chunk(10_000)]).pipeThrough(limiter)
    .pipeTo(new WritableStream());
  assert.deepEqual(clock.slept, []);
  assert.throws(() => (limiter.bytesPerSecond = -1), RangeError);
});

Deno.test("RateLimitStream errors with the abort reason", async () => {
  const controller = new AbortController();
  const clock: Clock = {
    now: () => 0,
    sleep: (_ms, signal) =>
      new Promise((_, reject) =>
        signal?.addEventListener("abort", () => reject(signal.reason))
      ),
  };
  const limiter = new RateLimitStream({
    bytesPerSecond: 1000,
    clock,
    signal: controller.signal,
  });
  const done = ReadableStream.from([chunk(1000), chunk(1)]).pipeThrough(limiter)
    .pipeTo(
      new WritableStream(),
    );
  setTimeout(() => controller.abort(new Error("cancelled")), 0);
  await assert.rejects(done, /cancelled/);
});

Deno.test("RateLimitStream rejects bad options", () => {
  assert.throws(() => new RateLimitStream({ bytesPerSecond: -5 }), RangeError);
  assert.throws(() => new RateLimitStream({ windowMs: 0 }), RangeError);
});

Deno.test("RateLimitStream pays off chunks larger than a window and measures the true rate", async () => {
  const clock = createFakeClock();
  const windows: RateWindow[] = [];
  const limiter = new RateLimitStream({
    bytesPerSecond: 1_000_000, // 100 000 bytes per window
    clock,
    onWindow: (w) => windows.push(w),
  });
  await ReadableStream.from([chunk(1 << 20), chunk(1 << 20)]).pipeThrough(
    limiter,
  )
    .pipeTo(new WritableStream());
  // 2 MiB at 1 MB/s take 2.1 s, not two windows of 100 ms.
  assert.ok(clock.now() >= 2000, `took ${clock.now()} ms`);
  for (const window of windows) {
    assert.ok(
      Math.abs(window.bytesPerMs - 1000) < 1,
      `measured ${window.bytesPerMs} bytes/ms`,
    );
  }
});

Deno.test("RateLimitStream lets urgent bytes pass but still holds the average afterwards", async () => {
  const clock = createFakeClock();
  const limiter = new RateLimitStream({ bytesPerSecond: 10_000, clock }); // 1000 per window
  const writer = limiter.writable.getWriter();
  const done = limiter.readable.pipeTo(new WritableStream());
  limiter.passUntil(5000);
  await writer.write(chunk(3000)); // urgent: passes and nothing waits
  assert.deepEqual(clock.slept, []);
  limiter.passUntil(0); // the urgent bytes are through
  await writer.write(chunk(2000)); // pays for all 5000 bytes: 500 ms
  await writer.close();
  await done;
  assert.ok(
    clock.now() >= 500,
    `5000 bytes at 10 000 B/s took ${clock.now()} ms`,
  );
});
