import assert from "node:assert/strict";
import { checkParameterChange } from "../../lib/qmp/check_parameter_change.ts";
import { DEFAULT_QEMU_MIGRATION_CAPABILITIES } from "../../lib/qmp/qemu_capabilities.ts";
import {
  DEFAULT_QEMU_MIGRATION_PARAMETERS,
  QEMU_MIGRATION_PARAMETERS,
} from "../../lib/qmp/qemu_parameters.ts";
import type { QmpValue } from "../../lib/qmp/qmp_json.ts";
import { formatQmpJson, parseQmpJson } from "../../lib/qmp/qmp_json.ts";
import { exchanges, loadTranscript } from "./_fixtures.ts";

const ROWS: [Record<string, QmpValue>, string | undefined][] = [
  [
    { "compress-level": 10 },
    "Parameter 'compress_level' expects a value between 0 and 9",
  ],
  [
    { "compress-threads": 0 },
    "Parameter 'compress_threads' expects a value between 1 and 255",
  ],
  [
    { "decompress-threads": 0 },
    "Parameter 'decompress_threads' expects a value between 1 and 255",
  ],
  [
    { "throttle-trigger-threshold": 101 },
    "Parameter 'throttle_trigger_threshold' expects an integer in the range of 1 to 100",
  ],
  [
    { "cpu-throttle-initial": 100 },
    "Parameter 'cpu_throttle_initial' expects an integer in the range of 1 to 99",
  ],
  [
    { "cpu-throttle-increment": 0 },
    "Parameter 'cpu_throttle_increment' expects an integer in the range of 1 to 99",
  ],
  [
    { "downtime-limit": 3000000 },
    "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms",
  ],
  [
    { "downtime-limit": 18446744073709551615n },
    "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms",
  ],
  [{ "downtime-limit": 2000000 }, undefined],
  [
    { "multifd-channels": 0 },
    "Parameter 'multifd_channels' expects a value between 1 and 255",
  ],
  [
    { "xbzrle-cache-size": 1000 },
    "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size",
  ],
  [
    { "xbzrle-cache-size": 12288 },
    "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size",
  ],
  [{ "xbzrle-cache-size": 4096 }, undefined],
  [
    { "max-cpu-throttle": 10 },
    "Parameter 'max_cpu_throttle' expects an integer in the range of cpu_throttle_initial to 99",
  ],
  [
    { "announce-initial": 100001 },
    "Parameter 'announce_initial' expects a value between 0 and 100000",
  ],
  [
    { "announce-max": 100001 },
    "Parameter 'announce_max' expects a value between 0 and 100000",
  ],
  [
    { "announce-rounds": 1001 },
    "Parameter 'announce_rounds' expects a value between 0 and 1000",
  ],
  [
    { "announce-step": 0 },
    "Parameter 'announce_step' expects a value between 0 and 10000",
  ],
  [
    { "compress-level": 10, "downtime-limit": 3000000 },
    "Parameter 'compress_level' expects a value between 0 and 9",
  ],
  [{ "max-bandwidth": 18446744073709551615n }, undefined],
];

for (const [changes, desc] of ROWS) {
  Deno.test(`checkParameterChange() for ${formatQmpJson(changes)}`, () => {
    const result = checkParameterChange(
      DEFAULT_QEMU_MIGRATION_PARAMETERS,
      changes,
    );
    if (desc === undefined) {
      assert.ok(result.ok, result.ok ? "" : result.desc);
      for (const [name, value] of Object.entries(changes)) {
        assert.equal(result.value[name], value);
      }
    } else {
      assert.deepEqual(result, { ok: false, desc });
    }
  });
}

Deno.test("checkParameterChange() stores tls null as an empty string", () => {
  const set = checkParameterChange(DEFAULT_QEMU_MIGRATION_PARAMETERS, {
    "tls-creds": "tls0",
  });
  assert.ok(set.ok);
  const reset = checkParameterChange(set.value, { "tls-creds": null });
  assert.ok(reset.ok && reset.value["tls-creds"] === "");
});

Deno.test("checkParameterChange() keeps multifd levels, as QEMU 7.2 does", () => {
  const result = checkParameterChange(DEFAULT_QEMU_MIGRATION_PARAMETERS, {
    "multifd-zlib-level": 5,
    "multifd-zstd-level": 21,
  });
  assert.ok(result.ok);
  assert.equal(result.value["multifd-zlib-level"], 1);
  assert.equal(result.value["multifd-zstd-level"], 1);
});

Deno.test("checkParameterChange() refuses compression and TLS with zero-copy-send", () => {
  const capabilities = {
    ...DEFAULT_QEMU_MIGRATION_CAPABILITIES,
    multifd: true,
    "zero-copy-send": true,
  };
  for (
    const change of [{ "multifd-compression": "zlib" }, { "tls-creds": "x" }]
  ) {
    assert.deepEqual(
      checkParameterChange(DEFAULT_QEMU_MIGRATION_PARAMETERS, change, {
        capabilities,
      }),
      {
        ok: false,
        desc:
          "Zero copy only available for non-compressed non-TLS multifd migration",
      },
    );
  }
});

Deno.test("checkParameterChange() uses the page size it is given", () => {
  assert.equal(
    checkParameterChange(DEFAULT_QEMU_MIGRATION_PARAMETERS, {
      "xbzrle-cache-size": 4096,
    }, { pageSize: 65536 }).ok,
    false,
  );
});

Deno.test("DEFAULT_QEMU_MIGRATION_PARAMETERS is what QEMU 7.2 answers before any change", () => {
  const [first] = exchanges(loadTranscript("parameters")).filter((e) =>
    e.request?.execute === "query-migrate-parameters"
  );
  assert.deepEqual(
    (parseQmpJson(first!.raw) as { return: unknown }).return,
    { ...DEFAULT_QEMU_MIGRATION_PARAMETERS },
  );
  assert.deepEqual(
    QEMU_MIGRATION_PARAMETERS.map((p) => p.name),
    (JSON.parse(Deno.readTextFileSync(
      new URL("../../fixtures/qmp/qemu-7.2/schema.json", import.meta.url),
    )).schema as { name: string; members?: { name: string }[] }[])
      .find((entry) =>
        entry.members?.[0]?.name === "announce-initial" &&
        entry.members.some((m) => m.name === "block-bitmap-mapping")
      )!.members!.map((m) => m.name),
  );
});
