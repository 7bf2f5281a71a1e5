import { formatBytes } from "../bytes/human_units.ts";
import type { MigrationInfo } from "./migration_info.ts";

/**
 * One progress line for a terminal: status, a bar of how much RAM is no
 * longer pending, the rate, what remains, the time it should take at that
 * rate, and the pass.
 *
 * @example Usage
 * ```ts
 * import { formatProgressLine } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const line = formatProgressLine({
 *   status: "active",
 *   "total-time": 1500,
 *   ram: {
 *     transferred: 100 << 20, remaining: 50 << 20, total: 200 << 20, duplicate: 0, skipped: 0,
 *     normal: 0, "normal-bytes": 0, "dirty-pages-rate": 0, mbps: 800, "dirty-sync-count": 2,
 *     "postcopy-requests": 0, "page-size": 4096, "multifd-bytes": 0, "pages-per-second": 0,
 *     "precopy-bytes": 0, "downtime-bytes": 0, "postcopy-bytes": 0, "dirty-sync-missed-zero-copy": 0,
 *   },
 * });
 * assert.match(line, /^active +\[#{15}-{5}\]  75% {2}100\.0 MB\/s {2}remaining 50\.0 MiB {2}ETA 0\.5 s {2}pass 2$/);
 * ```
 *
 * @param info The current `query-migrate` info.
 * @param width Characters of the bar.
 * @returns The line, without a line break.
 */
export function formatProgressLine(info: MigrationInfo, width = 20): string {
  const ram = info.ram;
  if (ram === undefined) return info.status;
  const done = ram.total > 0 ? Math.max(0, 1 - ram.remaining / ram.total) : 0;
  const filled = Math.round(done * width);
  const bytesPerSecond = ram.mbps * 1e6 / 8;
  const eta = bytesPerSecond > 0 ? ram.remaining / bytesPerSecond : undefined;
  return `${info.status.padEnd(15)} [${"#".repeat(filled)}${
    "-".repeat(width - filled)
  }] ${String(Math.floor(done * 100)).padStart(3)}%  ${
    (bytesPerSecond / 1e6).toFixed(1)
  } MB/s  remaining ${formatBytes(ram.remaining)}  ETA ${
    eta === undefined ? "?" : `${eta.toFixed(1)} s`
  }  pass ${ram["dirty-sync-count"]}`;
}
