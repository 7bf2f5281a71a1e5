import assert from "node:assert/strict";
import {
  formatQmpJson,
  parseQmpJson,
  type QmpValue,
} from "../../lib/qmp/qmp_json.ts";
import { qdictBucket } from "../../lib/qmp/_qdict_order.ts";
import { loadTranscript, SCENARIOS } from "./_fixtures.ts";

/**
 * QEMU writes the members of one hash bucket newest first, so a value read
 * back from QEMU's output has them in reverse order of insertion; this puts
 * them back the way QEMU added them.
 */
function asInserted(value: QmpValue): QmpValue {
  if (Array.isArray(value)) return value.map(asInserted);
  if (value === null || typeof value !== "object") return value;
  const object = value as Record<string, QmpValue>;
  const buckets = new Map<number, string[]>();
  for (const key of Object.keys(object)) {
    const bucket = qdictBucket(key);
    buckets.set(bucket, [key, ...(buckets.get(bucket) ?? [])]);
  }
  const result: Record<string, QmpValue> = {};
  for (const keys of buckets.values()) {
    for (const key of keys) result[key] = asInserted(object[key]!);
  }
  return result;
}

for (const name of SCENARIOS) {
  Deno.test(`formatQmpJson() writes every line QEMU wrote in ${name}.json byte for byte`, () => {
    let lines = 0;
    for (const entry of loadTranscript(name).transcript) {
      // QEMU writes the double -0 as "-0", which reads back as the integer 0.
      if (entry.raw === undefined || / -0[,}\]]/.test(entry.raw)) continue;
      assert.equal(
        formatQmpJson(asInserted(parseQmpJson(entry.raw))),
        entry.raw,
      );
      lines++;
    }
    assert.ok(lines > 0);
  });
}

Deno.test("formatQmpJson() writes members of one bucket newest first", () => {
  assert.equal(
    formatQmpJson({ qemu: { major: 7, minor: 2, micro: 22 }, package: "" }),
    '{"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}',
  );
});

const NUMBERS: [string, string][] = [
  ["1.5", "1.5"],
  ["1e300", "1.0000000000000001e+300"],
  ["0.1", "0.10000000000000001"],
  ["-0", "0"],
  ["-0.0", "-0"],
  ["1.0", "1"],
  ["1e5", "100000"],
  ["1E-7", "9.9999999999999995e-08"],
  ["1e17", "1e+17"],
  ["100000000000000000", "100000000000000000"],
  ["12345678901234567890", "12345678901234567890"],
  ["18446744073709551616", "1.8446744073709552e+19"],
  ["-9223372036854775808", "-9223372036854775808"],
  ["-9223372036854775809", "-9.2233720368547758e+18"],
  ["123456789012345678901234567890", "1.2345678901234568e+29"],
  ["-1.5e-300", "-1.5000000000000001e-300"],
  ["100000000000000000000000.0", "9.9999999999999992e+22"],
];

for (const [input, output] of NUMBERS) {
  Deno.test(`formatQmpJson() prints the number ${input} as QEMU does`, () => {
    assert.equal(formatQmpJson(parseQmpJson(input)), output);
  });
}

Deno.test("formatQmpJson() escapes as QEMU does", () => {
  assert.equal(
    formatQmpJson("a/b\u00e9\u0001\t\ud83d\ude00<>&'\u007f\"\\\b\f\n\r"),
    '"a/b\\u00E9\\u0001\\t\\uD83D\\uDE00<>&\'\\u007F\\"\\\\\\b\\f\\n\\r"',
  );
});

Deno.test("formatQmpJson() leaves out undefined members and orders the rest as QEMU", () => {
  assert.equal(
    formatQmpJson({
      execute: 1,
      id: 2,
      return: 3,
      error: 4,
      desc: 5,
      class: 6,
      x: undefined,
    }),
    '{"class": 6, "execute": 1, "desc": 5, "return": 3, "id": 2, "error": 4}',
  );
});

Deno.test("formatQmpJson() refuses numbers JSON cannot hold", () => {
  assert.throws(() => formatQmpJson(Infinity), RangeError);
  assert.throws(() => formatQmpJson(NaN), RangeError);
});

Deno.test("parseQmpJson() reads single quotes and keeps 64-bit integers", () => {
  assert.deepEqual(
    parseQmpJson("{'a': 'it\\'s', \"b\": [18446744073709551615, -1]}"),
    {
      a: "it's",
      b: [18446744073709551615n, -1],
    },
  );
});

Deno.test("parseQmpJson() fails with QEMU's message", () => {
  assert.throws(() => parseQmpJson("[1 2]"), {
    name: "SyntaxError",
    message: "JSON parse error, expected separator in list",
  });
  assert.throws(() => parseQmpJson("1 2"), SyntaxError);
  assert.throws(() => parseQmpJson(""), SyntaxError);
});
