import { formatBytes, type MigrationInfo } from "../../mod.ts";

/**
 * One progress line for `incoming`: the status, what arrived of how much
 * RAM, the average rate, and in postcopy what is still on the source and
 * how many pages the guest requested.
 *
 * @example Usage
 * ```ts
 * import { formatIncomingProgress } from "./format_incoming_progress.ts";
 * import assert from "node:assert/strict";
 *
 * const ram = { transferred: 50_000_000, remaining: 0, total: 1 << 30, duplicate: 10, normal: 12_000, "postcopy-requests": 0, "postcopy-bytes": 0 };
 * assert.equal(
 *   formatIncomingProgress({ status: "active", "total-time": 2000, ram } as never),
 *   "active          received 47.7 MiB (12010 pages) of 1.0 GiB RAM, 25.0 MB/s",
 * );
 * ```
 *
 * @param info The destination's current info.
 * @returns The line, without a line break.
 */
export function formatIncomingProgress(info: MigrationInfo): string {
  const ram = info.ram;
  if (ram === undefined) return info.status;
  const seconds = (info["total-time"] ?? 0) / 1000;
  const rate = seconds > 0 ? ram.transferred / seconds / 1e6 : 0;
  const postcopy = info.status.startsWith("postcopy")
    ? `, ${formatBytes(ram.remaining)} still on the source, ${
      ram["postcopy-requests"]
    } pages requested`
    : "";
  return `${info.status.padEnd(15)} received ${formatBytes(ram.transferred)} (${
    ram.duplicate + ram.normal
  } pages) of ${formatBytes(ram.total)} RAM, ${
    rate.toFixed(1)
  } MB/s${postcopy}`;
}
