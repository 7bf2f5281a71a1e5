import assert from "node:assert/strict";
import { fitHotSet } from "../../lib/migration/_hot_set_fit.ts";

const MIB = 1024 * 1024;

/** What a sync of `seconds` counts for writes at `rate` over `set` bytes. */
function count(set: number, rate: number, seconds: number) {
  return { seconds, dirtiedBytes: set * (1 - Math.exp(-rate * seconds / set)) };
}

Deno.test("fitHotSet finds a hot set from syncs of different lengths", () => {
  const ram = 512 * MIB;
  const fit = fitHotSet(
    [8, 4, 4.2, 3.9].map((s) => count(256 * MIB, 244 * MIB, s)),
    ram,
  );
  assert.ok(fit, "a hot set fits");
  assert.ok(
    Math.abs(fit.hotSetBytes - 256 * MIB) < 8 * MIB,
    `${fit.hotSetBytes / MIB} MiB`,
  );
  assert.ok(fit.bytesPerSecond > 150 * MIB, `${fit.bytesPerSecond / MIB}`);
});

Deno.test("fitHotSet keeps all of RAM for writes spread over it, or when it cannot tell", () => {
  const ram = 64 * MIB;
  const spread = [1.7, 1, 1.1, 0.9].map((s) => count(ram, 24 * MIB, s));
  assert.equal(fitHotSet(spread, ram), undefined);
  // Syncs alike in length cannot tell a hot set from all of RAM.
  const alike = [1, 1.05, 0.95].map((s) => count(8 * MIB, 64 * MIB, s));
  assert.equal(fitHotSet(alike, ram), undefined);
  assert.equal(fitHotSet([count(8 * MIB, 64 * MIB, 2)], ram), undefined);
  assert.equal(fitHotSet([], ram), undefined);
});
