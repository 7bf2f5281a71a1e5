import {
  escapeUntrustedText,
  formatBytes,
  type IncomingResult,
} from "../../mod.ts";
import { formatPostcopy } from "./format_migration_summary.ts";

/**
 * The summary `incoming` prints for a completed migration: how much RAM
 * from what source, the zero and normal pages, and when postcopy ran, how
 * many pages the guest requested and how long it was blocked on them.
 *
 * @example Usage
 * ```ts
 * import { formatIncomingSummary } from "./format_incoming_summary.ts";
 * import assert from "node:assert/strict";
 *
 * const ram = { transferred: 0, remaining: 0, total: 1 << 20, duplicate: 200, normal: 56, "postcopy-requests": 12, "postcopy-bytes": 4096 };
 * assert.equal(
 *   formatIncomingSummary({ info: { status: "completed", ram, "postcopy-blocktime": 40 } as never, livemig: true, machine: "livemig" }),
 *   "completed: 1.0 MiB of RAM from a livemig source, 200 zero and 56 normal pages; postcopy: 12 pages requested, blocktime 40 ms",
 * );
 * ```
 *
 * @param result The result of the incoming migration.
 * @returns The line, without a line break.
 */
export function formatIncomingSummary(
  result: Pick<IncomingResult, "info" | "livemig" | "machine">,
): string {
  const { info } = result;
  const source = result.livemig
    ? "livemig"
    : escapeUntrustedText(result.machine ?? "QEMU");
  return `${info.status}: ${
    formatBytes(info.ram?.total ?? 0)
  } of RAM from a ${source} source, ${info.ram?.duplicate ?? 0} zero and ${
    info.ram?.normal ?? 0
  } normal pages${formatPostcopy(info)}`;
}
