import { formatBytes } from "../bytes/human_units.ts";
import type { MigrationInfo } from "./migration_info.ts";

/**
 * One progress line for a terminal: status, a bar of how much RAM is no
 * longer pending, the rate, what remains, the time it should take, and
 * the pass. The time is the source's `x-livemig-eta-ms` with how much
 * later it may come (`+noise`), or "not converging: …" once the pending
 * bytes stopped falling; without them, what remains at the current rate:
 * in precopy (`active`) that is when the pass ends (`pass ends in`, not
 * the migration: the guest may dirty as much again), in postcopy the end.
 *
 * @example Usage
 * ```ts
 * import { formatProgressLine, type MigrationInfo } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const info: MigrationInfo = {
 *   status: "active",
 *   "total-time": 1500,
 *   ram: {
 *     transferred: 100 << 20, remaining: 50 << 20, total: 200 << 20, duplicate: 0, skipped: 0,
 *     normal: 0, "normal-bytes": 0, "dirty-pages-rate": 0, mbps: 800, "dirty-sync-count": 2,
 *     "postcopy-requests": 0, "page-size": 4096, "multifd-bytes": 0, "pages-per-second": 0,
 *     "precopy-bytes": 0, "downtime-bytes": 0, "postcopy-bytes": 0, "dirty-sync-missed-zero-copy": 0,
 *   },
 * };
 * const line = formatProgressLine(info);
 * assert.match(line, /^active +\[#{15}-{5}\]  75% {2}100\.0 MB\/s {2}remaining 50\.0 MiB {2}pass ends in 0\.5 s {2}pass 2$/);
 * const modelled = formatProgressLine({ ...info, "x-livemig-eta-ms": 2300, "x-livemig-eta-noise-ms": 400 });
 * assert.match(modelled, / {2}ETA 2\.3 s \(\+0\.4\) {2}pass 2$/);
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
  const naive = bytesPerSecond > 0 ? ram.remaining / bytesPerSecond : undefined;
  return `${info.status.padEnd(15)} [${"#".repeat(filled)}${
    "-".repeat(width - filled)
  }] ${String(Math.floor(done * 100)).padStart(3)}%  ${
    (bytesPerSecond / 1e6).toFixed(1)
  } MB/s  remaining ${formatBytes(ram.remaining)}  ${
    formatEta(info, naive)
  }  pass ${ram["dirty-sync-count"]}`;
}

/**
 * The model's ETA with its noise when the source gives one
 * (`x-livemig-eta-ms`), "not converging" with the reason when the pending
 * bytes stopped falling, else what remains at the current rate: the end
 * of the pass in precopy (the model sees no end, or the source has none),
 * the end in postcopy.
 */
function formatEta(info: MigrationInfo, naive: number | undefined): string {
  const stuck = info["x-livemig-not-converging"];
  if (stuck !== undefined) return stuck;
  const eta = info["x-livemig-eta-ms"];
  if (eta !== undefined) {
    const noise = info["x-livemig-eta-noise-ms"] ?? 0;
    return `ETA ${(eta / 1000).toFixed(1)} s (+${(noise / 1000).toFixed(1)})`;
  }
  const left = naive === undefined ? "?" : `${naive.toFixed(1)} s`;
  return info.status === "active" ? `pass ends in ${left}` : `ETA ${left}`;
}
