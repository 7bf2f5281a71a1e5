import assert from "node:assert/strict";
import { formatMigrationSummary } from "../../lib/cli/format_migration_summary.ts";
import type { MigrationInfo, RamStats } from "../../mod.ts";

const RAM: RamStats = {
  transferred: 4 << 20,
  remaining: 0,
  total: 4 << 20,
  duplicate: 0,
  skipped: 0,
  normal: 1024,
  "normal-bytes": 4 << 20,
  "dirty-pages-rate": 0,
  mbps: 100,
  "dirty-sync-count": 1,
  "postcopy-requests": 0,
  "page-size": 4096,
  "multifd-bytes": 0,
  "pages-per-second": 0,
  "precopy-bytes": 4 << 20,
  "downtime-bytes": 0,
  "postcopy-bytes": 0,
  "dirty-sync-missed-zero-copy": 0,
};

Deno.test("formatMigrationSummary() says nothing of postcopy when it did not run", () => {
  const info: MigrationInfo = {
    status: "completed",
    "total-time": 500,
    downtime: 20,
    ram: RAM,
  };
  assert.equal(
    formatMigrationSummary(info),
    "completed in 0.50 s: downtime 20 ms, 1 passes, 4.0 MiB sent (0 zero, 1024 normal pages), 100 Mbit/s",
  );
});

Deno.test("formatMigrationSummary() says how many pages postcopy requested", () => {
  const info: MigrationInfo = {
    status: "completed",
    "total-time": 500,
    downtime: 20,
    ram: { ...RAM, "postcopy-bytes": 1 << 20, "postcopy-requests": 17 },
  };
  assert.match(
    formatMigrationSummary(info),
    /, 100 Mbit\/s; postcopy: 17 pages requested$/,
  );
  assert.match(
    formatMigrationSummary({ ...info, "postcopy-blocktime": 42 }),
    /; postcopy: 17 pages requested, blocktime 42 ms$/,
  );
});
