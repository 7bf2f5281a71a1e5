import assert from "node:assert/strict";
import { SYSTEM_CLOCK } from "../../mod.ts";
import { ProxyPacer } from "../../lib/migration/_proxy_pacer.ts";

function newPacer(bytesPerSecond: number, postcopy = 0): ProxyPacer {
  return new ProxyPacer({
    bytesPerSecond,
    postcopyBytesPerSecond: postcopy,
    pageSize: () => 4096,
    blockLength: () => undefined,
    clock: SYSTEM_CLOCK,
    signal: new AbortController().signal,
  });
}

Deno.test("ProxyPacer sizes chunks for the lowest limit", () => {
  assert.equal(newPacer(0).chunkBytes, 1024 * 1024);
  assert.equal(newPacer(400_000).chunkBytes, 10_000);
  assert.equal(newPacer(0, 400_000).chunkBytes, 10_000);
  assert.equal(newPacer(100).chunkBytes, 4096);
  assert.equal(newPacer(1e9).chunkBytes, 1024 * 1024);
});

Deno.test("ProxyPacer lifts the limit until the chunk with a command passed", () => {
  const pacer = newPacer(1000);
  const before = pacer.chunk(new Uint8Array(10));
  assert.equal(
    pacer.encoded({ type: "command", command: "PING", value: 1 }),
    true,
  );
  const urgent = pacer.chunk(new Uint8Array(20));
  assert.equal(pacer.limiter.bytesPerSecond, 0);
  assert.equal(pacer.size(before), 0);
  assert.equal(pacer.limiter.bytesPerSecond, 0, "still before the command");
  assert.equal(pacer.size(urgent), 0);
  assert.equal(pacer.limiter.bytesPerSecond, 1000, "back once it passed");
  assert.equal(pacer.size(pacer.chunk(new Uint8Array(30))), 30);
});
