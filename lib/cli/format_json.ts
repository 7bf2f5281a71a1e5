/**
 * What `JSON.stringify` leaves raw but a terminal may act on: DEL, the C1
 * controls (U+009B starts an escape sequence by itself) and the
 * bidirectional overrides and isolates. (C0 controls, ESC among them, are
 * escaped by `JSON.stringify` already.)
 */
const UNSAFE_IN_JSON = /[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * `JSON.stringify(value, null, space)` with every character a terminal
 * could act on written as a `\uXXXX` escape, so that JSON carrying strings
 * from a stream (block and device names, vmdesc fields) is safe to print
 * and still parses to the same value.
 *
 * @example Usage
 * ```ts
 * import { formatJson } from "./format_json.ts";
 * import assert from "node:assert/strict";
 *
 * const text = formatJson({ name: "ram\x1b\x9b\u202e" });
 * assert.equal(text, '{"name":"ram\\u001b\\u009b\\u202e"}');
 * assert.deepEqual(JSON.parse(text), { name: "ram\x1b\x9b\u202e" });
 * ```
 *
 * @param value The value.
 * @param space Indentation, as for `JSON.stringify`.
 * @returns The JSON text.
 */
export function formatJson(value: unknown, space?: number): string {
  return JSON.stringify(value, null, space).replace(
    UNSAFE_IN_JSON,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
