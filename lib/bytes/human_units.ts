/**
 * Parses and prints the human units the command line accepts: sizes
 * (`256MiB`, `1G`, `4096`), bandwidths (`100MB/s`, `1GiB/s`, `1Gbit/s`) and
 * durations (`300ms`, `2s`, `1.5m`).
 *
 * Size suffixes: `B`; `K`/`M`/`G`/`T` and `KiB`/`MiB`/`GiB`/`TiB` are
 * powers of 1024 (as in QEMU's size parser); `KB`/`MB`/`GB`/`TB` are powers
 * of 1000. A bare number is bytes (sizes) or milliseconds (durations).
 *
 * A bandwidth must say its unit, and only units that cannot be misread are
 * accepted: bytes (`B/s`, `kB/s`, `MB/s`, `GB/s`, `TB/s`, `KiB/s`, `MiB/s`,
 * `GiB/s`, `TiB/s`) or bits (`kbit/s`, `Mbit/s`, `Gbit/s`, `Tbit/s`), with
 * `/s`. A bare number (100 would be 100 bytes per second) and spellings
 * such as `10mbps` or `10Mb/s` are refused; `0` alone is accepted (it
 * means "no limit" or "measured" where QEMU says so).
 *
 * @module
 */

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  tb: 1000 ** 4,
};

const DURATION_UNITS: Record<string, number> = {
  "": 1,
  ms: 1,
  s: 1000,
  m: 60_000,
  min: 60_000,
  h: 3_600_000,
};

/**
 * Parses a size such as `256MiB` into bytes.
 *
 * @example Usage
 * ```ts
 * import { parseSize } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseSize("256MiB"), 256 * 1024 * 1024);
 * assert.equal(parseSize("1G"), 1024 ** 3);
 * assert.equal(parseSize("100MB"), 100_000_000);
 * assert.throws(() => parseSize("lots"), TypeError);
 * ```
 *
 * @param text The size.
 * @param what What it is, for the error message.
 * @returns The size in bytes, an integer.
 * @throws {TypeError} If the text is not a size.
 */
export function parseSize(text: string, what = "size"): number {
  return parseWith(text, SIZE_UNITS, what, "a size such as 256MiB or 1G");
}

/** Bandwidth prefixes: k/K, M, G, T (an `i` makes them binary). */
const BANDWIDTH_PREFIXES: Record<string, [decimal: number, binary: number]> = {
  "": [1, 1],
  k: [1e3, 1024],
  K: [1e3, 1024],
  M: [1e6, 1024 ** 2],
  G: [1e9, 1024 ** 3],
  T: [1e12, 1024 ** 4],
};

/**
 * Parses a bandwidth such as `100MB/s` into bytes per second. The unit is
 * required and must be unambiguous: bytes (`B/s`, `MB/s`, `MiB/s`, …) or
 * bits (`Mbit/s`, `Gbit/s`, …) per second; `0` needs none.
 *
 * @example Usage
 * ```ts
 * import { parseBandwidth } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseBandwidth("100MB/s"), 100_000_000);
 * assert.equal(parseBandwidth("128MiB/s"), 128 * 1024 * 1024);
 * assert.equal(parseBandwidth("1Gbit/s"), 125_000_000);
 * assert.equal(parseBandwidth("0"), 0);
 * assert.throws(() => parseBandwidth("100"), /needs a unit, e\.g\. 100MiB\/s/);
 * assert.throws(() => parseBandwidth("10mbps"), /10MB\/s .* or 10Mbit\/s/);
 * ```
 *
 * @param text The bandwidth.
 * @param what What it is, for the error message.
 * @returns Bytes per second, an integer.
 * @throws {TypeError} If the text is not a bandwidth with a clear unit.
 */
export function parseBandwidth(text: string, what = "bandwidth"): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(\S*)\s*$/.exec(text);
  if (!match) {
    throw new TypeError(
      `Cannot parse ${what} "${text}": expected a bandwidth such as 100MiB/s, 100MB/s or 1Gbit/s`,
    );
  }
  const [, number, unit] = match as unknown as [string, string, string];
  if (unit === "") {
    if (Number(number) === 0) return 0;
    throw new TypeError(
      `Cannot parse ${what} "${text}": a bandwidth needs a unit, e.g. ${number}MiB/s or ${number}Mbit/s (a bare number would be bytes per second)`,
    );
  }
  const parts = /^([kKMGT]?)(i?)(B|bit)\/s$/.exec(unit);
  const prefix = parts ? BANDWIDTH_PREFIXES[parts[1]!] : undefined;
  if (!parts || prefix === undefined || (parts[2] && parts[1] === "")) {
    // The prefix the user meant, or M for an example: "iB/s" alone is no
    // unit.
    const letter = /^([kmgt])/i.exec(unit)?.[1]?.toUpperCase() ?? "M";
    throw new TypeError(
      `Cannot parse ${what} "${text}": the unit "${unit}" is ambiguous or unknown; write ${number}${letter}B/s (bytes), ${number}${letter}iB/s (binary bytes) or ${number}${letter}bit/s (bits) per second`,
    );
  }
  const scale = prefix[parts[2] ? 1 : 0] / (parts[3] === "bit" ? 8 : 1);
  return checkedInteger(Number(number) * scale, text, what);
}

/**
 * Parses a duration such as `300ms` or `2s` into milliseconds.
 *
 * @example Usage
 * ```ts
 * import { parseDuration } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseDuration("300ms"), 300);
 * assert.equal(parseDuration("2s"), 2000);
 * assert.equal(parseDuration("300"), 300);
 * ```
 *
 * @param text The duration.
 * @param what What it is, for the error message.
 * @returns Milliseconds, an integer.
 * @throws {TypeError} If the text is not a duration.
 */
export function parseDuration(text: string, what = "duration"): number {
  return parseWith(
    text,
    DURATION_UNITS,
    what,
    "a duration such as 300ms or 2s",
  );
}

/**
 * Formats bytes with a binary unit, e.g. `256.0 MiB`.
 *
 * @example Usage
 * ```ts
 * import { formatBytes } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatBytes(512), "512 B");
 * assert.equal(formatBytes(3 * 1024 * 1024), "3.0 MiB");
 * ```
 *
 * @param bytes The byte count.
 * @returns The text.
 */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function parseWith(
  text: string,
  units: Record<string, number>,
  what: string,
  example: string,
): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const scale = match ? units[match[2]!.toLowerCase()] : undefined;
  if (!match || scale === undefined) {
    throw new TypeError(
      `Cannot parse ${what} "${text}": expected ${example}`,
    );
  }
  return checkedInteger(Number(match[1]) * scale, text, what);
}

function checkedInteger(value: number, text: string, what: string): number {
  const rounded = Math.round(value);
  if (!Number.isSafeInteger(rounded)) {
    throw new TypeError(`Cannot parse ${what} "${text}": it is too large`);
  }
  return rounded;
}
