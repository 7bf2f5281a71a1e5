import assert from "node:assert/strict";
import {
  POPULATE_CHUNK,
  populateInChunks,
} from "../../lib/transport/_populate_in_chunks.ts";

Deno.test("populateInChunks() faults a block in one 8 MiB piece after the other", async () => {
  const calls: { address: bigint; size: number }[] = [];
  let pending = 0;
  let mostPending = 0;
  const size = 3 * POPULATE_CHUNK + 4096;
  await populateInChunks(
    async (address, length) => {
      calls.push({ address, size: length });
      mostPending = Math.max(mostPending, ++pending);
      await Promise.resolve();
      pending--;
      return 0;
    },
    { address: 0x4000_0000n, size },
    new ArrayBuffer(0),
  );
  assert.equal(mostPending, 1, "one piece at a time");
  assert.deepEqual(calls, [
    { address: 0x4000_0000n, size: POPULATE_CHUNK },
    { address: 0x4000_0000n + BigInt(POPULATE_CHUNK), size: POPULATE_CHUNK },
    {
      address: 0x4000_0000n + 2n * BigInt(POPULATE_CHUNK),
      size: POPULATE_CHUNK,
    },
    { address: 0x4000_0000n + 3n * BigInt(POPULATE_CHUNK), size: 4096 },
  ]);
  assert.equal(POPULATE_CHUNK, 8 << 20);
});

Deno.test("populateInChunks() stops at the first refusal", async () => {
  let calls = 0;
  await populateInChunks(
    () => {
      calls++;
      return Promise.resolve(-1); // EINVAL before Linux 5.14
    },
    { address: 0n, size: 4 * POPULATE_CHUNK },
    undefined,
  );
  assert.equal(calls, 1);
});
