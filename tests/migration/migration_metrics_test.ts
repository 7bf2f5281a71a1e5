import assert from "node:assert/strict";
import { MigrationMetrics, type RamScanState } from "../../mod.ts";
import { createFakeClock } from "../_helpers/fake_clock.ts";

const PAGE = 4096;
const SCAN: RamScanState = {
  remainingPages: 0,
  dirtySyncCount: 1,
  postcopyRequests: 0,
};

function metricsAt(start = 1000) {
  const clock = createFakeClock(start);
  const metrics = new MigrationMetrics({
    pageSize: PAGE,
    totalBytes: 256 * PAGE,
    clock,
  });
  return { clock, metrics };
}

Deno.test("MigrationMetrics times setup and the whole run, and stops at the end", () => {
  const { clock, metrics } = metricsAt();
  assert.equal(metrics.setupTime, undefined);
  clock.advance(12.4);
  metrics.setupDone();
  assert.equal(metrics.setupTime, 12);
  clock.advance(100);
  assert.equal(metrics.totalTime(), 112);
  metrics.ended();
  clock.advance(500);
  assert.equal(metrics.totalTime(), 112, "the time stops when the run ends");
});

Deno.test("MigrationMetrics takes bandwidth, mbps and pages per second from each window", () => {
  const { metrics } = metricsAt();
  assert.equal(metrics.bytesPerMs, 0);
  metrics.counters.normal = 40;
  metrics.counters.duplicate = 10;
  metrics.recordWindow({ bytes: 200_000, ms: 100, bytesPerMs: 2000 });
  assert.equal(metrics.bytesPerMs, 2000);
  let ram = metrics.ramStats(SCAN);
  assert.equal(ram.mbps, 16);
  assert.equal(ram["pages-per-second"], 500);
  metrics.counters.xbzrle = 5;
  metrics.recordWindow({ bytes: 50_000, ms: 50, bytesPerMs: 1000 });
  ram = metrics.ramStats(SCAN);
  assert.equal(metrics.bytesPerMs, 1000);
  assert.equal(ram.mbps, 8);
  assert.equal(ram["pages-per-second"], 100, "only the pages of this window");
});

Deno.test("MigrationMetrics closes a dirty-rate period only after a second", () => {
  const { clock, metrics } = metricsAt();
  metrics.counters.normal = 100;
  clock.advance(400);
  assert.equal(metrics.recordSync(30), undefined);
  assert.equal(metrics.ramStats(SCAN)["dirty-pages-rate"], 0);
  assert.equal(metrics.dirtySyncIntervalMs, 1000, "before a period closed");
  metrics.counters.normal = 300;
  clock.advance(600);
  assert.equal(metrics.recordSync(20), 300, "pages sent in the period");
  assert.equal(metrics.ramStats(SCAN)["dirty-pages-rate"], 50);
  assert.equal(metrics.dirtySyncIntervalMs, 500, "two syncs in 1000 ms");
  metrics.counters.duplicate = 50;
  clock.advance(2000);
  assert.equal(metrics.recordSync(10), 50);
  assert.equal(metrics.ramStats(SCAN)["dirty-pages-rate"], 5);
  assert.equal(metrics.dirtySyncIntervalMs, 2000, "one sync in 2000 ms");
});

Deno.test("MigrationMetrics adds up the bytes of every connection", () => {
  const { metrics } = metricsAt();
  assert.equal(metrics.transferred, 0);
  const first = { bytesPassed: 1000 };
  metrics.countChannel(first);
  first.bytesPassed = 1500;
  assert.equal(metrics.transferred, 1500);
  const second = { bytesPassed: 0 };
  metrics.countChannel(second); // a postcopy recovery
  second.bytesPassed = 200;
  first.bytesPassed = 9999; // a broken connection no longer counts
  assert.equal(metrics.transferred, 1700);
  const preempt = { bytesPassed: 300 };
  metrics.countPreempt(preempt);
  assert.equal(metrics.transferred, 2000);
  metrics.countPreempt(undefined);
  assert.equal(
    metrics.transferred,
    1700,
    "a lost preempt connection drops out",
  );
});

Deno.test("MigrationMetrics splits the bytes into precopy, downtime and postcopy", () => {
  const { clock, metrics } = metricsAt();
  const link = { bytesPassed: 0 };
  metrics.countChannel(link);
  link.bytesPassed = 10_000;
  let ram = metrics.ramStats(SCAN);
  assert.equal(ram["precopy-bytes"], 10_000);
  assert.equal(ram["downtime-bytes"], 0);
  metrics.guestStopped();
  link.bytesPassed = 12_000;
  clock.advance(30);
  metrics.downtimeEnded();
  metrics.postcopyStarted();
  link.bytesPassed = 20_000;
  ram = metrics.ramStats(SCAN);
  assert.equal(metrics.downtime, 30);
  assert.equal(ram.transferred, 20_000);
  assert.equal(ram["precopy-bytes"], 10_000);
  assert.equal(ram["downtime-bytes"], 2000);
  assert.equal(ram["postcopy-bytes"], 8000);
});

Deno.test("MigrationMetrics reports the average mbps after setup once completed", () => {
  const { clock, metrics } = metricsAt();
  const link = { bytesPassed: 0 };
  metrics.countChannel(link);
  clock.advance(100);
  metrics.setupDone();
  link.bytesPassed = 1_000_000;
  clock.advance(800);
  metrics.recordWindow({ bytes: 1, ms: 100, bytesPerMs: 0.01 });
  metrics.completed();
  assert.equal(metrics.ramStats(SCAN).mbps, 10, "1 MB in 800 ms");
  const instant = metricsAt().metrics;
  instant.completed();
  assert.equal(instant.ramStats(SCAN).mbps, 0);
});

Deno.test("MigrationMetrics expects the downtime limit until a bandwidth is known", () => {
  const { metrics } = metricsAt();
  assert.equal(metrics.expectedDowntime(100, 300), 300);
  metrics.recordWindow({ bytes: 409_600, ms: 100, bytesPerMs: 4096 });
  assert.equal(metrics.expectedDowntime(100, 300), 100);
});

Deno.test("MigrationMetrics fills every ram field from the scan", () => {
  const { metrics } = metricsAt();
  metrics.counters.normal = 3;
  metrics.counters.duplicate = 2;
  const ram = metrics.ramStats({
    remainingPages: 7,
    dirtySyncCount: 4,
    postcopyRequests: 2,
  });
  assert.deepEqual(ram, {
    transferred: 0,
    remaining: 7 * PAGE,
    total: 256 * PAGE,
    duplicate: 2,
    skipped: 0,
    normal: 3,
    "normal-bytes": 3 * PAGE,
    "dirty-pages-rate": 0,
    mbps: 0,
    "dirty-sync-count": 4,
    "postcopy-requests": 2,
    "page-size": PAGE,
    "multifd-bytes": 0,
    "pages-per-second": 0,
    "precopy-bytes": 0,
    "downtime-bytes": 0,
    "postcopy-bytes": 0,
    "dirty-sync-missed-zero-copy": 0,
  });
  assert.equal(metrics.pagesSent, 5);
});

Deno.test("MigrationMetrics refuses to end a downtime that never started", () => {
  const { metrics } = metricsAt();
  assert.throws(() => metrics.downtimeEnded(), TypeError);
});
