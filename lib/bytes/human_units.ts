/**
 * Parses and prints the human units the command line accepts: sizes
 * (`256MiB`, `1G`, `4096`), bandwidths (`100MB/s`, `1GiB/s`) and durations
 * (`300ms`, `2s`, `1.5m`).
 *
 * Size suffixes: `B`; `K`/`M`/`G`/`T` and `KiB`/`MiB`/`GiB`/`TiB` are
 * powers of 1024 (as in QEMU's size parser); `KB`/`MB`/`GB`/`TB` are powers
 * of 1000. A bare number is bytes (sizes, bandwidths) or milliseconds
 * (durations).
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

/**
 * Parses a bandwidth such as `100MB/s` into bytes per second.
 *
 * @example Usage
 * ```ts
 * import { parseBandwidth } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseBandwidth("100MB/s"), 100_000_000);
 * assert.equal(parseBandwidth("128MiB"), 128 * 1024 * 1024);
 * ```
 *
 * @param text The bandwidth; the `/s` is optional.
 * @param what What it is, for the error message.
 * @returns Bytes per second, an integer.
 * @throws {TypeError} If the text is not a bandwidth.
 */
export function parseBandwidth(text: string, what = "bandwidth"): number {
  return parseWith(
    text.replace(/\/s$/i, "").replace(/ps$/i, ""),
    SIZE_UNITS,
    what,
    "a bandwidth such as 100MB/s or 1GiB/s",
  );
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
  const value = Math.round(Number(match[1]) * scale);
  if (!Number.isSafeInteger(value)) {
    throw new TypeError(`Cannot parse ${what} "${text}": it is too large`);
  }
  return value;
}
