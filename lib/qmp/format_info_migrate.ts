/**
 * QEMU 7.2's HMP `info migrate` text, from a `query-migrate` reply.
 *
 * The text starts with the migration object's global settings, then shows
 * what `query-migrate` has, section by section, leaving out what it does
 * not have:
 *
 * ```
 * globals:
 * store-global-state: on
 * …
 * clear-bitmap-shift: 18
 * Migration status: completed            (failed: "Migration status: failed (why)")
 * total time: 16 ms
 * downtime: 4 ms
 * setup: 1 ms
 * transferred ram: 64 kbytes             (bytes >> 10)
 * throughput: 55.99 mbps                 (%0.2f)
 * …
 * precopy ram: 64 kbytes                 (only when non-zero, as downtime ram, postcopy ram)
 * cache size: 67108864 bytes             (xbzrle section, when query-migrate has one)
 * socket address: [                      (the incoming side)
 * \ttcp:127.0.0.1:45399
 * ]
 * ```
 *
 * Capabilities and parameters do not appear: QEMU 7.2 prints them only in
 * `info migrate_capabilities` and `info migrate_parameters`. Lines end with
 * `\r\n`, as `human-monitor-command` returns them.
 *
 * @module
 */

/** A number as QMP carries it: 64-bit values may be bigints. */
type Count = number | bigint;

/** The `ram` object of `query-migrate` (QEMU's `MigrationStats`). */
export interface InfoMigrateRam {
  /** Bytes sent. */
  readonly transferred?: number | bigint;
  /** Bytes still dirty. */
  readonly remaining?: number | bigint;
  /** Bytes of RAM. */
  readonly total?: number | bigint;
  /** Zero pages. */
  readonly duplicate?: number | bigint;
  /** Always 0. */
  readonly skipped?: number | bigint;
  /** Whole pages. */
  readonly normal?: number | bigint;
  /** Bytes of whole pages. */
  readonly "normal-bytes"?: number | bigint;
  /** Pages dirtied per second. */
  readonly "dirty-pages-rate"?: number | bigint;
  /** Megabits per second. */
  readonly mbps?: number | bigint;
  /** Dirty-bitmap syncs. */
  readonly "dirty-sync-count"?: number | bigint;
  /** Pages the destination asked for. */
  readonly "postcopy-requests"?: number | bigint;
  /** The page size. */
  readonly "page-size"?: number | bigint;
  /** Bytes over multifd channels. */
  readonly "multifd-bytes"?: number | bigint;
  /** Pages sent per second. */
  readonly "pages-per-second"?: number | bigint;
  /** Bytes sent while the guest ran. */
  readonly "precopy-bytes"?: number | bigint;
  /** Bytes sent while the guest was stopped. */
  readonly "downtime-bytes"?: number | bigint;
  /** Bytes sent in postcopy. */
  readonly "postcopy-bytes"?: number | bigint;
  /** Zero-copy fallbacks. */
  readonly "dirty-sync-missed-zero-copy"?: number | bigint;
}

/** The `xbzrle-cache` object of `query-migrate`. */
export interface InfoMigrateXbzrle {
  /** Cache size in bytes. */
  readonly "cache-size"?: number | bigint;
  /** XBZRLE bytes sent. */
  readonly bytes?: number | bigint;
  /** XBZRLE pages sent. */
  readonly pages?: number | bigint;
  /** Cache misses. */
  readonly "cache-miss"?: number | bigint;
  /** Miss rate. */
  readonly "cache-miss-rate"?: number | bigint;
  /** Encoding rate. */
  readonly "encoding-rate"?: number | bigint;
  /** Deltas that did not fit. */
  readonly overflow?: number | bigint;
}

/** The `query-migrate` reply `info migrate` is written from (QEMU's `MigrationInfo`). */
export interface InfoMigrateSource {
  /** The status; absent (or `none`) before any migration. */
  readonly status?: string;
  /** Why it failed. */
  readonly "error-desc"?: string;
  /** Why an outgoing migration is not possible now. */
  readonly "blocked-reasons"?: readonly string[];
  /** Milliseconds since the start, or from start to end. */
  readonly "total-time"?: number | bigint;
  /** Milliseconds the switchover is expected to take. */
  readonly "expected-downtime"?: number | bigint;
  /** Milliseconds the guest was stopped. */
  readonly downtime?: number | bigint;
  /** Milliseconds of setup. */
  readonly "setup-time"?: number | bigint;
  /** RAM statistics. */
  readonly ram?: InfoMigrateRam;
  /** Block migration statistics. */
  readonly disk?: {
    readonly transferred?: number | bigint;
    readonly remaining?: number | bigint;
    readonly total?: number | bigint;
  };
  /** XBZRLE statistics. */
  readonly "xbzrle-cache"?: InfoMigrateXbzrle;
  /** Compression statistics. */
  readonly compression?: {
    readonly pages?: number | bigint;
    readonly busy?: number | bigint;
    readonly "busy-rate"?: number | bigint;
    readonly "compressed-size"?: number | bigint;
    readonly "compression-rate"?: number | bigint;
  };
  /** Auto-converge's current throttle. */
  readonly "cpu-throttle-percentage"?: number | bigint;
  /** Destination, postcopy-blocktime: total ms vCPUs waited. */
  readonly "postcopy-blocktime"?: number | bigint;
  /** Destination, postcopy-blocktime: ms per vCPU. */
  readonly "postcopy-vcpu-blocktime"?: readonly (number | bigint)[];
  /** Destination: where it listens. */
  readonly "socket-address"?: readonly {
    readonly type: string;
    readonly host?: string;
    readonly port?: string;
    readonly path?: string;
    readonly cid?: string;
    readonly str?: string;
  }[];
  /** VFIO device statistics. */
  readonly vfio?: { readonly transferred?: number | bigint };
}

/** Options for {@linkcode formatInfoMigrate}. */
export interface FormatInfoMigrateOptions {
  /**
   * The migration object's settings shown under `globals:`, in order.
   *
   * @default {QEMU 7.2's: store-global-state on, only-migratable off, send-configuration on, send-section-footer on, decompress-error-check on, clear-bitmap-shift 18}
   */
  globals?: readonly (readonly [string, string])[];
  /**
   * What ends each line.
   *
   * @default {"\r\n"}
   */
  lineEnding?: string;
}

const QEMU_GLOBALS: readonly (readonly [string, string])[] = [
  ["store-global-state", "on"],
  ["only-migratable", "off"],
  ["send-configuration", "on"],
  ["send-section-footer", "on"],
  ["decompress-error-check", "on"],
  ["clear-bitmap-shift", "18"],
];

/**
 * Writes QEMU 7.2's `info migrate` for a `query-migrate` reply.
 *
 * @example Usage
 * ```ts
 * import { formatInfoMigrate } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const text = formatInfoMigrate({
 *   status: "failed",
 *   "error-desc": "Failed to connect to '127.0.0.1:1': Connection refused",
 * }, { lineEnding: "\n" });
 * assert.equal(text.split("\n").slice(7).join("\n"),
 *   "Migration status: failed (Failed to connect to '127.0.0.1:1': Connection refused)\ntotal time: 0 ms\n");
 * ```
 *
 * @param info The `query-migrate` reply (livemig's `MigrationInfo` fits).
 * @param options The globals and the line ending.
 * @returns The text, every line ended.
 */
export function formatInfoMigrate(
  info: InfoMigrateSource,
  options: FormatInfoMigrateOptions = {},
): string {
  const { globals = QEMU_GLOBALS, lineEnding = "\r\n" } = options;
  const lines: string[] = ["globals:"];
  for (const [name, value] of globals) lines.push(`${name}: ${value}`);
  const reasons = info["blocked-reasons"];
  if (reasons !== undefined && reasons.length > 0) {
    lines.push("Outgoing migration blocked:");
    for (const reason of reasons) lines.push(`  ${reason}`);
  }
  lines.push(
    ...statusLines(info),
    ...ramLines(info.ram),
    ...diskLines(info.disk),
    ...xbzrleLines(info["xbzrle-cache"]),
    ...compressionLines(info.compression),
  );
  if (info["cpu-throttle-percentage"] !== undefined) {
    lines.push(`cpu throttle percentage: ${info["cpu-throttle-percentage"]}`);
  }
  if (info["postcopy-blocktime"] !== undefined) {
    lines.push(`postcopy blocktime: ${info["postcopy-blocktime"]}`);
  }
  if (info["postcopy-vcpu-blocktime"] !== undefined) {
    lines.push(
      `postcopy vcpu blocktime: ${ranges(info["postcopy-vcpu-blocktime"])}`,
    );
  }
  const addresses = info["socket-address"];
  if (addresses !== undefined) {
    lines.push("socket address: [");
    for (const address of addresses) lines.push(`\t${socketUri(address)}`);
    lines.push("]");
  }
  if (info.vfio !== undefined) {
    lines.push(
      `vfio device transferred: ${kbytes(info.vfio.transferred ?? 0)} kbytes`,
    );
  }
  return lines.map((line) => line + lineEnding).join("");
}

/** The status and times, when a migration happened. */
function statusLines(info: InfoMigrateSource): string[] {
  if (info.status === undefined || info.status === "none") return [];
  const lines = [
    info.status === "failed" && info["error-desc"] !== undefined
      ? `Migration status: failed (${info["error-desc"]})`
      : `Migration status: ${info.status}`,
    `total time: ${info["total-time"] ?? 0} ms`,
  ];
  if (info["expected-downtime"] !== undefined) {
    lines.push(`expected downtime: ${info["expected-downtime"]} ms`);
  }
  if (info.downtime !== undefined) lines.push(`downtime: ${info.downtime} ms`);
  if (info["setup-time"] !== undefined) {
    lines.push(`setup: ${info["setup-time"]} ms`);
  }
  return lines;
}

/** The RAM section; the byte counts of each phase only when non-zero. */
function ramLines(ram: InfoMigrateRam | undefined): string[] {
  if (ram === undefined) return [];
  const get = (name: keyof InfoMigrateRam) => ram[name] ?? 0;
  const lines = [
    `transferred ram: ${kbytes(get("transferred"))} kbytes`,
    `throughput: ${fixed2(get("mbps"))} mbps`,
    `remaining ram: ${kbytes(get("remaining"))} kbytes`,
    `total ram: ${kbytes(get("total"))} kbytes`,
    `duplicate: ${get("duplicate")} pages`,
    `skipped: ${get("skipped")} pages`,
    `normal: ${get("normal")} pages`,
    `normal bytes: ${kbytes(get("normal-bytes"))} kbytes`,
    `dirty sync count: ${get("dirty-sync-count")}`,
    `page size: ${kbytes(get("page-size"))} kbytes`,
    `multifd bytes: ${kbytes(get("multifd-bytes"))} kbytes`,
    `pages-per-second: ${get("pages-per-second")}`,
  ];
  const optional: [keyof InfoMigrateRam, (value: Count) => string][] = [
    ["dirty-pages-rate", (v) => `dirty pages rate: ${v} pages`],
    ["postcopy-requests", (v) => `postcopy request count: ${v}`],
    ["precopy-bytes", (v) => `precopy ram: ${kbytes(v)} kbytes`],
    ["downtime-bytes", (v) => `downtime ram: ${kbytes(v)} kbytes`],
    ["postcopy-bytes", (v) => `postcopy ram: ${kbytes(v)} kbytes`],
    [
      "dirty-sync-missed-zero-copy",
      (v) => `Zero-copy-send fallbacks happened: ${v} times`,
    ],
  ];
  for (const [name, line] of optional) {
    if (isSet(get(name))) lines.push(line(get(name)));
  }
  return lines;
}

function diskLines(disk: InfoMigrateSource["disk"]): string[] {
  if (disk === undefined) return [];
  return [
    `transferred disk: ${kbytes(disk.transferred ?? 0)} kbytes`,
    `remaining disk: ${kbytes(disk.remaining ?? 0)} kbytes`,
    `total disk: ${kbytes(disk.total ?? 0)} kbytes`,
  ];
}

function xbzrleLines(xbzrle: InfoMigrateXbzrle | undefined): string[] {
  if (xbzrle === undefined) return [];
  return [
    `cache size: ${xbzrle["cache-size"] ?? 0} bytes`,
    `xbzrle transferred: ${kbytes(xbzrle.bytes ?? 0)} kbytes`,
    `xbzrle pages: ${xbzrle.pages ?? 0} pages`,
    `xbzrle cache miss: ${xbzrle["cache-miss"] ?? 0} pages`,
    `xbzrle cache miss rate: ${fixed2(xbzrle["cache-miss-rate"] ?? 0)}`,
    `xbzrle encoding rate: ${fixed2(xbzrle["encoding-rate"] ?? 0)}`,
    `xbzrle overflow: ${xbzrle.overflow ?? 0}`,
  ];
}

function compressionLines(
  compression: InfoMigrateSource["compression"],
): string[] {
  if (compression === undefined) return [];
  return [
    `compression pages: ${compression.pages ?? 0} pages`,
    `compression busy: ${compression.busy ?? 0}`,
    `compression busy rate: ${fixed2(compression["busy-rate"] ?? 0)}`,
    `compressed size: ${kbytes(compression["compressed-size"] ?? 0)} kbytes`,
    `compression rate: ${fixed2(compression["compression-rate"] ?? 0)}`,
  ];
}

function isSet(value: Count): boolean {
  return value !== 0 && value !== 0n;
}

/** `bytes >> 10`, as QEMU shows kbytes. */
function kbytes(bytes: Count): string {
  return typeof bytes === "bigint"
    ? (bytes >> 10n).toString()
    : String(Math.floor(bytes / 1024));
}

/** C's `%0.2f`: rounded to two decimals, exact ties to even. */
function fixed2(value: Count): string {
  const number = Number(value);
  const exact = number.toFixed(30);
  const tie = /\.\d\d50*$/.exec(exact);
  if (tie !== null) {
    const cents = Math.trunc(Math.abs(number) * 100);
    const even = cents % 2 === 0 ? cents : cents + 1;
    const sign = number < 0 ? "-" : "";
    return `${sign}${Math.trunc(even / 100)}.${
      String(even % 100).padStart(2, "0")
    }`;
  }
  return number.toFixed(2);
}

/** How QEMU's string output visitor writes a list of integers: sorted, runs as `a-b`. */
function ranges(values: readonly (number | bigint)[]): string {
  const sorted = [...new Set(values.map((value) => BigInt(value)))].sort((
    a,
    b,
  ) => (a < b ? -1 : a > b ? 1 : 0));
  const parts: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let end = i;
    while (end + 1 < sorted.length && sorted[end + 1] === sorted[end]! + 1n) {
      end++;
    }
    parts.push(
      end === i ? `${sorted[i]}` : `${sorted[i]}-${sorted[end]}`,
    );
    i = end + 1;
  }
  return parts.join(",");
}

/** QEMU's `socket_uri()`. */
function socketUri(
  address: NonNullable<InfoMigrateSource["socket-address"]>[number],
): string {
  switch (address.type) {
    case "inet":
      return `tcp:${address.host}:${address.port}`;
    case "unix":
      return `unix:${address.path}`;
    case "fd":
      return `fd:${address.str}`;
    case "vsock":
      return `vsock:${address.cid}:${address.port}`;
    default:
      return String(address.type);
  }
}
