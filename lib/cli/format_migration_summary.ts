import { formatBytes, type MigrationInfo } from "../../mod.ts";

/**
 * The one-line summary `migrate` and `demo` print for a finished
 * migration: status, time, downtime, passes, bytes and pages sent, rate,
 * and when postcopy ran, how many pages the destination requested.
 *
 * @example Usage
 * ```ts
 * import { formatMigrationSummary } from "./format_migration_summary.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatMigrationSummary({ status: "failed", "total-time": 1234 }), "failed after 1.23 s");
 * ```
 *
 * @param info The final `query-migrate` info.
 * @returns The line, without a line break.
 */
export function formatMigrationSummary(info: MigrationInfo): string {
  const ram = info.ram;
  const seconds = ((info["total-time"] ?? 0) / 1000).toFixed(2);
  if (!ram) return `${info.status} after ${seconds} s`;
  return `${info.status} in ${seconds} s: downtime ${
    info.downtime ?? "-"
  } ms, ${ram["dirty-sync-count"]} passes, ${
    formatBytes(ram.transferred)
  } sent (${ram.duplicate} zero, ${ram.normal} normal${
    info["xbzrle-cache"] ? `, xbzrle hits ${info["xbzrle-cache"].pages}` : ""
  } pages), ${ram.mbps.toFixed(0)} Mbit/s${formatPostcopy(info)}`;
}

/**
 * `; postcopy: N pages requested[, blocktime T ms]` when postcopy ran,
 * else nothing.
 *
 * @example Usage
 * ```ts
 * import { formatPostcopy } from "./format_migration_summary.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatPostcopy({ status: "completed" }), "");
 * ```
 *
 * @param info The final info.
 * @returns The text.
 */
export function formatPostcopy(info: MigrationInfo): string {
  const ram = info.ram;
  if (!ram || (ram["postcopy-bytes"] ?? 0) === 0) return "";
  const blocktime = info["postcopy-blocktime"];
  return `; postcopy: ${ram["postcopy-requests"] ?? 0} pages requested${
    blocktime === undefined ? "" : `, blocktime ${blocktime} ms`
  }`;
}
