import assert from "node:assert/strict";
import {
  decideIteration,
  type MigrationModelInput,
  predictMigration,
  switchoverThreshold,
} from "../../mod.ts";

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

const BASE: MigrationModelInput = {
  ramBytes: 256 * MIB,
  dirtyBytesPerSecond: 0,
  linkBytesPerSecond: 1 * GIB,
};

Deno.test("predictMigration() sends an idle guest once, the rest in the downtime", () => {
  const p = predictMigration(BASE);
  assert.equal(p.converges, true);
  assert.equal(p.ending, "precopy");
  assert.equal(p.precopyBytesPerSecond, 128 * MIB); // QEMU's default limit
  assert.equal(p.thresholdBytes, Math.round(128 * MIB / 1000 * 300));
  // Precopy stops once less than the threshold is left; that rest goes
  // with the guest stopped, at the link's full 1 GiB/s.
  assert.ok(p.finalPendingBytes < p.thresholdBytes);
  assert.ok(p.finalPendingBytes > p.thresholdBytes - 8 * MIB);
  const rest = p.finalPendingBytes * (4104 / 4096) / GIB * 1000;
  assert.ok(Math.abs(p.downtimeMs - (rest + 10)) <= 1, `${p.downtimeMs}`);
  const precopyMs = (256 * MIB - p.finalPendingBytes) * (4104 / 4096) /
    (128 * MIB) * 1000;
  assert.ok(
    Math.abs(p.totalTimeMs - precopyMs - p.downtimeMs) < 5,
    `${p.totalTimeMs}`,
  );
  assert.ok(p.bytesSent >= 256 * MIB && p.bytesSent < 258 * MIB);
});

Deno.test("predictMigration() uses the engine's threshold", () => {
  const p = predictMigration({
    ...BASE,
    parameters: { "downtime-limit": 500 },
  });
  assert.equal(
    p.thresholdBytes,
    switchoverThreshold({
      measuredBytesPerMs: 128 * MIB / 1000,
      downtimeLimitMs: 500,
      availSwitchoverBandwidth: 0,
    }),
  );
  const avail = predictMigration({
    ...BASE,
    parameters: { "avail-switchover-bandwidth": 10 * MIB },
  });
  assert.equal(avail.thresholdBytes, Math.round(10 * MIB / 1000 * 300));
});

Deno.test("predictMigration() switches over exactly when the engine's decision does", () => {
  const p = predictMigration({
    ...BASE,
    dirtyBytesPerSecond: 40 * MIB,
  });
  assert.equal(p.ending, "precopy");
  // Every sync but the last left more than the threshold pending: the
  // decision iterated there, and completed at the last.
  const log = p.passLog;
  for (const pass of log.slice(0, -1)) {
    const decision = decideIteration({
      pendingBytes: pass.remainingBytes,
      exact: true,
      thresholdBytes: p.thresholdBytes,
      postcopyRequested: false,
      inPostcopy: false,
      mustPrecopyBytes: 0,
    });
    assert.deepEqual(decision, { step: "iterate" });
  }
  assert.ok(log.at(-1)!.remainingBytes < p.thresholdBytes);
  assert.equal(p.passes, log.length + 2); // setup sync, these, final sync
  // The last pages go at the link's rate: 1 GiB/s.
  const expected = p.finalPendingBytes * (4104 / 4096) / GIB * 1000 + 10;
  assert.ok(Math.abs(p.downtimeMs - expected) <= 1);
});

Deno.test("predictMigration() says a guest that dirties faster than the link does not converge", () => {
  const p = predictMigration({ ...BASE, dirtyBytesPerSecond: 300 * MIB });
  assert.equal(p.converges, false);
  assert.equal(p.ending, "none");
  assert.ok(p.finalPendingBytes > p.thresholdBytes);
  // Five syncs in a row did not get below the lowest pending.
  assert.ok(p.passLog.length >= 6);
});

Deno.test("predictMigration() caps the dirtying at the hot set", () => {
  const everywhere = predictMigration({
    ...BASE,
    ramBytes: 1 * GIB,
    dirtyBytesPerSecond: 1 * GIB,
  });
  assert.equal(everywhere.converges, false);
  // 16 MiB written at 1 GiB/s is still at most 16 MiB per pass: under the
  // 38.4 MiB threshold.
  const hot = predictMigration({
    ...BASE,
    ramBytes: 1 * GIB,
    dirtyBytesPerSecond: 1 * GIB,
    hotSetBytes: 16 * MIB,
  });
  assert.equal(hot.converges, true);
  assert.ok(hot.finalPendingBytes < hot.thresholdBytes);
});

Deno.test("predictMigration() starts postcopy after the passes asked for", () => {
  const p = predictMigration({
    ...BASE,
    dirtyBytesPerSecond: 300 * MIB,
    capabilities: { "postcopy-ram": true },
    postcopyAfterPasses: 1,
  });
  assert.equal(p.ending, "postcopy");
  assert.equal(p.converges, true);
  assert.equal(p.downtimeMs, 10);
  assert.equal(p.passes, 2);
  // Postcopy is not rate limited by default: the rest goes at the link,
  // 1 GiB/s, after a pass at 128 MiB/s.
  const postcopyMs = p.finalPendingBytes * (4104 / 4096) / GIB * 1000;
  assert.ok(p.finalPendingBytes > 0);
  assert.ok(
    Math.abs(p.totalTimeMs - p.passLog[0]!.atMs - 10 - postcopyMs) < 2,
    `${p.totalTimeMs}`,
  );
  // Without postcopy-ram, postcopyAfterPasses does nothing.
  const off = predictMigration({
    ...BASE,
    dirtyBytesPerSecond: 300 * MIB,
    postcopyAfterPasses: 1,
  });
  assert.equal(off.ending, "none");
});

Deno.test("predictMigration() lets XBZRLE converge a hot set that fits its cache", () => {
  const input: MigrationModelInput = {
    ...BASE,
    dirtyBytesPerSecond: 1 * GIB,
    hotSetBytes: 64 * MIB,
  };
  assert.equal(predictMigration(input).converges, false);
  const xbzrle = predictMigration({
    ...input,
    capabilities: { xbzrle: true },
  });
  assert.equal(xbzrle.converges, true);
  assert.ok(xbzrle.downtimeMs < 20);
  // With a cache too small for the hot set, most re-sends are whole pages.
  const small = predictMigration({
    ...input,
    capabilities: { xbzrle: true },
    parameters: { "xbzrle-cache-size": 4 * MIB },
  });
  assert.equal(small.converges, false);
});

Deno.test("predictMigration() takes a guest throttle through dirtyRateFactor", () => {
  const input = { ...BASE, dirtyBytesPerSecond: 300 * MIB };
  const seen: number[] = [];
  const p = predictMigration({
    ...input,
    dirtyRateFactor: (passes) => {
      seen.push(passes);
      return passes >= 2 ? 0.1 : 1;
    },
  });
  assert.equal(p.converges, true);
  assert.ok(seen.includes(0) && seen.includes(2));
});

Deno.test("predictMigration() gives up after maxTimeMs", () => {
  const p = predictMigration(
    { ...BASE, dirtyBytesPerSecond: 300 * MIB },
    { maxTimeMs: 1000, stallPasses: 1000 },
  );
  assert.equal(p.ending, "none");
  assert.ok(p.totalTimeMs <= 1100);
});

Deno.test("predictMigration() refuses sizes and rates that are not numbers", () => {
  assert.throws(
    () => predictMigration({ ...BASE, ramBytes: -1 }),
    RangeError,
  );
  assert.throws(
    () => predictMigration({ ...BASE, dirtyBytesPerSecond: NaN }),
    RangeError,
  );
  assert.throws(
    () => predictMigration({ ...BASE, linkBytesPerSecond: 0 }),
    /Cannot predict migration as linkBytesPerSecond must be > 0: received 0/,
  );
});
