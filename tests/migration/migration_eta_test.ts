import assert from "node:assert/strict";
import { type EtaSample, MigrationEta, SeededRandom } from "../../mod.ts";

const MIB = 1024 * 1024;

const BASE: EtaSample = {
  atMs: 0,
  remainingBytes: 256 * MIB,
  ramBytes: 256 * MIB,
  pageSize: 4096,
  bytesPerSecond: 64 * MIB,
  dirtyBytesPerSecond: 0,
  passes: 1,
  transferredBytes: 0,
  parameters: {},
};

/**
 * A converging migration with noisy measurements, sampled every 100 ms:
 * at each sync (once less than 24 MiB is left) up to 12 MiB dirtied comes
 * back, four times, then it completes.
 */
function* noisyRun(seed: number): Generator<EtaSample> {
  const random = new SeededRandom(seed);
  const noise = () => random.nextInt(1000) / 1000;
  let remaining = 256 * MIB;
  let sent = 0;
  let passes = 1;
  for (let at = 100; passes < 5 || remaining > 24 * MIB; at += 100) {
    const rate = 64 * MIB * (0.7 + 0.6 * noise());
    sent += rate / 10;
    remaining = Math.max(0, remaining - rate / 10);
    if (remaining < 24 * MIB && passes < 5) {
      remaining += 12 * MIB * noise();
      passes++;
    }
    yield {
      ...BASE,
      atMs: at,
      remainingBytes: remaining,
      bytesPerSecond: rate,
      dirtyBytesPerSecond: passes > 1 ? 24 * MIB * noise() : 0,
      passes,
      transferredBytes: sent,
    };
  }
}

Deno.test("MigrationEta never moves its deadline later than the noise it stated", () => {
  for (let seed = 1; seed <= 20; seed++) {
    const eta = new MigrationEta();
    let last: { deadline: number; noise: number } | undefined;
    let estimates = 0;
    for (const sample of noisyRun(seed)) {
      const estimate = eta.update(sample);
      assert.equal(estimate.restated, undefined);
      if (estimate.etaMs === undefined) {
        last = undefined;
        continue;
      }
      estimates++;
      const deadline = sample.atMs + estimate.etaMs;
      if (last) {
        assert.ok(
          deadline <= last.deadline + last.noise,
          `seed ${seed} at ${sample.atMs} ms: deadline ${deadline} after ${last.deadline} + ${last.noise}`,
        );
      }
      last = { deadline, noise: estimate.noiseMs };
    }
    assert.ok(estimates > 10);
  }
});

Deno.test("MigrationEta states a noise as large as the ETA during the first pass", () => {
  const eta = new MigrationEta();
  const first = eta.update({ ...BASE, atMs: 100, remainingBytes: 200 * MIB });
  // 200 MiB at 64 MiB/s: about 3 s, but how fast the guest dirties RAM is
  // not known before a sync.
  assert.ok(first.etaMs! > 2500 && first.etaMs! < 3300, `${first.etaMs}`);
  assert.equal(first.noiseMs, first.etaMs);
  // The first pass is done (a sync brought back 4 MiB): the noise now
  // comes from how the estimates moved.
  const second = eta.update({
    ...BASE,
    atMs: 3300,
    remainingBytes: 12 * MIB,
    passes: 2,
    transferredBytes: 192 * MIB,
    dirtyBytesPerSecond: 2 * MIB,
  });
  assert.ok(second.etaMs! > 100, `${second.etaMs}`);
  // Twice how far the deadline moved, no longer the whole ETA.
  const moved = (3300 + second.etaMs!) - (100 + first.etaMs!);
  assert.ok(Math.abs(second.noiseMs - 2 * Math.abs(moved)) <= 2);
});

Deno.test("MigrationEta says not converging once pending stopped falling for 3 passes, and what to do", () => {
  const eta = new MigrationEta();
  let at = 0;
  let sent = 0;
  const pendings = [200, 120, 100, 104, 101, 108];
  const results = pendings.map((mib, i) => {
    at += 1000;
    sent += 64 * MIB;
    return eta.update({
      ...BASE,
      atMs: at,
      remainingBytes: mib * MIB,
      passes: i + 2,
      transferredBytes: sent,
      // Slow enough that the model sees an end: the stall says otherwise.
      dirtyBytesPerSecond: 8 * MIB,
    });
  });
  assert.deepEqual(
    results.map((r) => r.converging),
    [true, true, true, true, true, false],
  );
  assert.deepEqual(results.map((r) => r.stalledPasses), [0, 0, 0, 1, 2, 3]);
  const stuck = results.at(-1)!;
  assert.equal(stuck.etaMs, undefined);
  assert.match(
    stuck.advice!,
    /^not converging: 108\.0 MiB pending has not fallen for 3 passes; try .*postcopy/,
  );
  // Falling again: converging again, no advice.
  const back = eta.update({
    ...BASE,
    atMs: at + 1000,
    remainingBytes: 50 * MIB,
    passes: 8,
    transferredBytes: sent + 64 * MIB,
  });
  assert.equal(back.converging, true);
  assert.equal(back.advice, undefined);
});

Deno.test("MigrationEta gives no ETA before a bandwidth is measured", () => {
  const eta = new MigrationEta();
  const estimate = eta.update({ ...BASE, bytesPerSecond: 0 });
  assert.equal(estimate.etaMs, undefined);
  assert.equal(estimate.converging, true);
});

Deno.test("MigrationEta reads a dirty rate as writes over the time between syncs", () => {
  // 16 MiB of distinct pages per second, counted over 2 s syncs, is 32 MiB
  // of distinct pages per sync: more rewrites hidden than over 1 s syncs.
  const sample: EtaSample = {
    ...BASE,
    atMs: 5000,
    remainingBytes: 96 * MIB,
    dirtyBytesPerSecond: 16 * MIB,
    passes: 3,
    transferredBytes: 300 * MIB,
  };
  const oneSecond = new MigrationEta().update({
    ...sample,
    dirtySyncIntervalMs: 1000,
  });
  const unstated = new MigrationEta().update(sample);
  const twoSeconds = new MigrationEta().update({
    ...sample,
    dirtySyncIntervalMs: 2000,
  });
  assert.equal(unstated.etaMs, oneSecond.etaMs, "1 s is the default");
  assert.ok(
    twoSeconds.etaMs! > oneSecond.etaMs!,
    `${twoSeconds.etaMs} > ${oneSecond.etaMs}`,
  );
});

Deno.test("MigrationEta says not converging after 3 passes when the model sees no end", () => {
  const eta = new MigrationEta();
  const sample = (passes: number): EtaSample => ({
    ...BASE,
    atMs: passes * 1000,
    remainingBytes: (210 - passes) * MIB,
    passes,
    transferredBytes: passes * 64 * MIB,
    // Writes over all of RAM faster than the 64 MiB/s link.
    dirtyBytesPerSecond: 100 * MIB,
  });
  const early = eta.update(sample(2));
  assert.equal(early.converging, true, "too early to say");
  assert.equal(early.etaMs, undefined);
  const third = eta.update(sample(3));
  assert.equal(third.converging, false);
  assert.equal(third.stalledPasses, 0, "pending still falls");
  assert.match(
    third.advice!,
    /^not converging: the guest writes [\d.]+ MiB\/s over RAM, faster than the passes can send it; try /,
  );
});
