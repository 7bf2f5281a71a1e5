/**
 * Golden files: compare with the file under fixtures/, or rewrite it when
 * the tests run as `deno task fixtures:update` (`-- --update`).
 *
 * @module
 */
import { AssertionError } from "node:assert";

/** True when the run was started as `deno test … -- --update`. */
export const UPDATE_GOLDEN: boolean = Deno.args.includes("--update");

/**
 * Compares `actual` with the golden text file at `url`, or rewrites it in
 * update mode.
 *
 * @param actual The text produced now.
 * @param url The golden file.
 */
export async function assertGoldenText(
  actual: string,
  url: URL,
): Promise<void> {
  if (UPDATE_GOLDEN) {
    await Deno.writeTextFile(url, actual);
    return;
  }
  let expected: string;
  try {
    expected = await Deno.readTextFile(url);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    throw new AssertionError({
      message:
        `Cannot find golden file ${url.pathname}: run "deno task fixtures:update"`,
    });
  }
  if (actual === expected) return;
  const a = actual.split("\n");
  const e = expected.split("\n");
  let line = 0;
  while (line < a.length && a[line] === e[line]) line++;
  throw new AssertionError({
    message: `Text differs from ${url.pathname} at line ${line + 1}\n` +
      `  actual: ${a[line] ?? "(end)"}\n  golden: ${e[line] ?? "(end)"}\n` +
      `run "deno task fixtures:update" if the change is intended`,
  });
}

/**
 * Compares `actual` with the golden binary file at `url`, or rewrites it
 * in update mode. A mismatch names the first differing offset.
 *
 * @param actual The bytes produced now.
 * @param url The golden file.
 */
export async function assertGolden(
  actual: Uint8Array,
  url: URL,
): Promise<void> {
  if (UPDATE_GOLDEN) {
    await Deno.writeFile(url, actual);
    return;
  }
  let expected: Uint8Array;
  try {
    expected = await Deno.readFile(url);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    throw new AssertionError({
      message:
        `Cannot find golden file ${url.pathname}: run "deno task fixtures:update"`,
    });
  }
  const at = firstDifference(actual, expected);
  if (at === -1) return;
  throw new AssertionError({
    message: `Bytes differ from ${url.pathname} at offset ${at} ` +
      `(actual ${actual.byteLength} bytes, golden ${expected.byteLength})\n` +
      `  actual: ${hexAround(actual, at)}\n  golden: ${
        hexAround(expected, at)
      }`,
  });
}

/**
 * The first offset where two byte arrays differ, or -1 when equal.
 *
 * @param a One array.
 * @param b The other.
 * @returns The offset.
 */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const length = Math.min(a.byteLength, b.byteLength);
  for (let i = 0; i < length; i++) if (a[i] !== b[i]) return i;
  return a.byteLength === b.byteLength ? -1 : length;
}

function hexAround(bytes: Uint8Array, at: number): string {
  const start = Math.max(0, at - 8);
  return Array.from(bytes.subarray(start, at + 8), (byte, i) => {
    const hex = byte.toString(16).padStart(2, "0");
    return start + i === at ? `[${hex}]` : hex;
  }).join(" ");
}
