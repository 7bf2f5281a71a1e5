/**
 * JSON as QEMU's QMP monitor writes and reads it.
 *
 * Writing (QEMU's `qobject_to_json()`, compact form):
 *
 * - separators are `", "` and `": "`: `{"return": {}, "id": 1}`;
 * - object members come in the order of QEMU's hash table, not in the order
 *   they were added, so the same object always prints the same way;
 * - strings escape `"`, `\`, `\b \f \n \r \t`, every other control character
 *   and every character from U+007F up as `\uXXXX` with upper-case hex
 *   (surrogate pairs for characters beyond U+FFFF); `/` stays as it is;
 * - integers print in full (64-bit values as bigints); other numbers as C's
 *   `%.17g` (`0.1` → `0.10000000000000001`, `1e300` →
 *   `1.0000000000000001e+300`).
 *
 * Reading accepts what QEMU accepts: single-quoted strings, several texts in
 * one chunk or one text over several lines, and fails with QEMU's own
 * messages (`JSON parse error, duplicate key`).
 *
 * @module
 */

import { JsonReader, nodeValue } from "./_json_reader.ts";
import { qdictOrder } from "./_qdict_order.ts";

/**
 * A JSON value as QMP carries it. Integers beyond `Number.MAX_SAFE_INTEGER`
 * are bigints (QEMU's parameters are 64-bit: `max-bandwidth` may be
 * 18446744073709551615); object members that are `undefined` are left out.
 */
export type QmpValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | readonly QmpValue[]
  | { readonly [key: string]: QmpValue | undefined };

/**
 * Writes a value the way QEMU's monitor does, byte for byte.
 *
 * @example Usage
 * ```ts
 * import { formatQmpJson } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatQmpJson({ return: {}, id: 1 }), '{"return": {}, "id": 1}');
 * assert.equal(formatQmpJson({ error: { class: "GenericError", desc: "x" }, id: 1 }),
 *   '{"id": 1, "error": {"class": "GenericError", "desc": "x"}}');
 * assert.equal(formatQmpJson([0.1, 18446744073709551615n, "café"]),
 *   '[0.10000000000000001, 18446744073709551615, "caf\\u00E9"]');
 * ```
 *
 * @param value The value.
 * @returns One line of JSON, without a line ending.
 * @throws {RangeError} For numbers that are not finite.
 * @throws {TypeError} For values JSON cannot hold (functions, symbols).
 */
export function formatQmpJson(value: QmpValue): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "number":
      return formatNumber(value);
    case "bigint":
      return value.toString();
    case "string":
      return formatString(value);
    case "object":
      if (Array.isArray(value)) {
        return `[${
          (value as readonly QmpValue[]).map(formatQmpJson).join(", ")
        }]`;
      } else {
        const object = value as {
          readonly [key: string]: QmpValue | undefined;
        };
        const keys = Object.keys(object).filter((key) =>
          object[key] !== undefined
        );
        return `{${
          qdictOrder(keys).map((key) =>
            `${formatString(key)}: ${formatQmpJson(object[key]!)}`
          ).join(", ")
        }}`;
      }
  }
  throw new TypeError(
    `Cannot write a ${typeof value} as QMP JSON: only JSON values can be written`,
  );
}

/**
 * Reads one JSON text the way QEMU's monitor reads its input.
 *
 * @example Usage
 * ```ts
 * import { parseQmpJson } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseQmpJson("{'execute': 'stop', 'id': 18446744073709551615}"),
 *   { execute: "stop", id: 18446744073709551615n });
 * assert.throws(() => parseQmpJson('{"a": 1, "a": 2}'), /JSON parse error, duplicate key/);
 * ```
 *
 * @param text Exactly one JSON text.
 * @returns The value; integers beyond 2^53 as bigints.
 * @throws {SyntaxError} With QEMU's message when the text is not one JSON value.
 */
export function parseQmpJson(text: string): QmpValue {
  const results = new JsonReader().push(`${text}\n`);
  const [first] = results;
  if (results.length !== 1 || first === undefined) {
    throw new SyntaxError(
      `Cannot parse QMP JSON: expected one JSON text, found ${results.length}`,
    );
  }
  if (first.kind === "error") throw new SyntaxError(first.desc);
  return nodeValue(first.value);
}

function formatNumber(value: number): string {
  if (!Number.isFinite(value)) {
    throw new RangeError(
      `Cannot write ${value} as QMP JSON: numbers must be finite`,
    );
  }
  if (Object.is(value, -0)) return "-0";
  if (Number.isSafeInteger(value)) return String(value);
  return formatG17(value);
}

/** C's `printf("%.17g", value)` for a finite, non-zero double. */
function formatG17(value: number): string {
  const [mantissa, exponentText] = value.toExponential(16).split("e");
  const exponent = Number(exponentText);
  if (exponent < -4 || exponent >= 17) {
    const digits = trimZeros(mantissa!);
    const sign = exponent < 0 ? "-" : "+";
    return `${digits}e${sign}${String(Math.abs(exponent)).padStart(2, "0")}`;
  }
  return trimZeros(value.toFixed(16 - exponent));
}

function trimZeros(text: string): string {
  if (!text.includes(".")) return text;
  return text.replace(/0+$/, "").replace(/\.$/, "");
}

const SHORT_ESCAPES: Record<string, string> = {
  '"': '\\"',
  "\\": "\\\\",
  "\b": "\\b",
  "\f": "\\f",
  "\n": "\\n",
  "\r": "\\r",
  "\t": "\\t",
};

function formatString(text: string): string {
  let result = '"';
  for (let i = 0; i < text.length; i++) {
    const char = text[i]!;
    const code = text.charCodeAt(i);
    const short = SHORT_ESCAPES[char];
    if (short !== undefined) {
      result += short;
    } else if (code < 0x20 || code >= 0x7f) {
      result += `\\u${code.toString(16).toUpperCase().padStart(4, "0")}`;
    } else {
      result += char;
    }
  }
  return result + '"';
}
