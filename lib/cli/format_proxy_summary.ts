import {
  formatBytes,
  type MigrationProxyInfo,
  type ProxyStreamStats,
} from "../../mod.ts";

/**
 * The summary `proxy` prints for a finished migration: rate, what was
 * received and sent, the device state, the XBZRLE cache and the return
 * path.
 *
 * @example Usage
 * ```ts
 * import { formatProxySummary } from "./format_proxy_summary.ts";
 * import assert from "node:assert/strict";
 *
 * const text = formatProxySummary({
 *   status: "failed",
 *   "total-time": 1500,
 *   "max-bandwidth": 0,
 *   "max-postcopy-bandwidth": 0,
 * });
 * assert.equal(text.split("\n")[0], "failed in 1.50 s, 0.0 Mbit/s to the destination");
 * ```
 *
 * @param info The proxy's final info.
 * @returns The lines, each ending in a line break.
 */
export function formatProxySummary(info: MigrationProxyInfo): string {
  const tail = info["device-tail"];
  const cache = info["xbzrle-cache"];
  const returnPath = info["return-path"];
  const lines = [
    `${info.status} in ${((info["total-time"] ?? 0) / 1000).toFixed(2)} s, ${
      (info.mbps ?? 0).toFixed(1)
    } Mbit/s to the destination${
      info["max-bandwidth"] > 0
        ? ` (limit ${formatBytes(info["max-bandwidth"])}/s)`
        : ""
    }`,
    `received     ${formatBytes(info.received?.transferred ?? 0)}: ${
      pages(info.received, false)
    }`,
    `sent         ${formatBytes(info.sent?.transferred ?? 0)}: ${
      pages(info.sent, true)
    }`,
  ];
  if (tail) {
    lines.push(
      `device state ${formatBytes(tail.bytes)} passed through${
        tail.validated ? ", validated by the vmdesc" : ""
      }`,
    );
  }
  if (cache) {
    lines.push(
      `xbzrle cache ${cache.pages} hits, ${
        cache["cache-miss"]
      } misses, ${cache.overflow} overflows, ${
        formatBytes(cache.bytes)
      } encoded`,
    );
  }
  if (returnPath) {
    lines.push(
      `return path  ${
        formatBytes(returnPath.transferred)
      }, ${returnPath.messages} messages`,
    );
  }
  return lines.join("\n") + "\n";
}

function pages(stats: ProxyStreamStats | undefined, sent: boolean): string {
  return `${stats?.duplicate} zero, ${stats?.normal} normal, ${stats?.xbzrle} xbzrle${
    sent
      ? `, ${stats?.unchanged} unchanged (not sent)`
      : stats?.compressed
      ? `, ${stats.compressed} compressed`
      : ""
  } pages`;
}
