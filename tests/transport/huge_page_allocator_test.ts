import assert from "node:assert/strict";
import { createHugePageAllocator } from "../../lib/transport/huge_page_allocator.ts";

const HUGE_PAGE = 2 * 1024 * 1024;
const ffi = Deno.permissions.querySync({ name: "ffi" }).state === "granted";

Deno.test({
  name: "createHugePageAllocator() says why when FFI is not allowed",
  ignore: ffi,
  fn() {
    const hugePages = createHugePageAllocator({ populate: true });
    assert.ok(!hugePages.available);
    assert.match(hugePages.reason, /--allow-ffi/);
  },
});

for (const populate of [false, true]) {
  Deno.test({
    name: `createHugePageAllocator() allocates zeroed RAM aligned to 2 MiB${
      populate ? ", populated on another thread" : ""
    }`,
    ignore: !ffi || Deno.build.os !== "linux",
    fn() {
      const hugePages = createHugePageAllocator({ populate });
      assert.ok(hugePages.available);
      const bytes = hugePages.allocate(3 * HUGE_PAGE);
      assert.equal(bytes.byteLength, 3 * HUGE_PAGE);
      const address = Deno.UnsafePointer.value(Deno.UnsafePointer.of(bytes));
      assert.equal(BigInt(address) % BigInt(HUGE_PAGE), 0n);
      assert.ok(bytes.every((byte) => byte === 0));
      bytes.fill(0xa5);
      assert.equal(bytes[3 * HUGE_PAGE - 1], 0xa5);
    },
  });
}
