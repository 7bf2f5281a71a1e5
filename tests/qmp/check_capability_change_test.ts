import assert from "node:assert/strict";
import {
  type CapabilityCheckOptions,
  checkCapabilityChange,
} from "../../lib/qmp/check_capability_change.ts";
import {
  DEFAULT_QEMU_MIGRATION_CAPABILITIES,
  QEMU_MIGRATION_CAPABILITIES,
  type QemuMigrationCapability,
} from "../../lib/qmp/qemu_capabilities.ts";
import { DEFAULT_QEMU_MIGRATION_PARAMETERS } from "../../lib/qmp/qemu_parameters.ts";
import { exchanges, loadTranscript } from "./_fixtures.ts";

type Row = [
  string,
  Partial<Record<QemuMigrationCapability, boolean>>,
  CapabilityCheckOptions,
  string | undefined,
];

const ROWS: Row[] = [
  [
    "a migration runs",
    { xbzrle: true },
    { migrationRunning: true },
    "There's a migration process in progress",
  ],
  [
    "postcopy-preempt alone",
    { "postcopy-preempt": true },
    {},
    "Postcopy preempt requires postcopy-ram",
  ],
  [
    "postcopy-preempt with compress",
    { "postcopy-ram": true, "postcopy-preempt": true, compress: true },
    {},
    "Postcopy preempt not compatible with compress",
  ],
  [
    "postcopy-ram with x-ignore-shared",
    { "postcopy-ram": true, "x-ignore-shared": true },
    {},
    "Postcopy is not compatible with ignore-shared",
  ],
  [
    "postcopy-ram on an incoming guest without userfaultfd",
    { "postcopy-ram": true },
    { incoming: true, postcopySupported: false },
    "Postcopy is not supported",
  ],
  ["postcopy-ram on a source without userfaultfd", { "postcopy-ram": true }, {
    postcopySupported: false,
  }, undefined],
  [
    "background-snapshot without write protection",
    { "background-snapshot": true },
    { writeTracking: "absent" },
    "Background-snapshot is not supported by host kernel",
  ],
  [
    "background-snapshot, memory it cannot protect",
    { "background-snapshot": true },
    { writeTracking: "available" },
    "Background-snapshot is not compatible with guest memory configuration",
  ],
  [
    "background-snapshot with xbzrle and postcopy-ram",
    { "background-snapshot": true, xbzrle: true, "postcopy-ram": true },
    {},
    "Background-snapshot is not compatible with postcopy-ram",
  ],
  [
    "background-snapshot with block",
    { "background-snapshot": true, block: true },
    {},
    undefined,
  ],
  [
    "zero-copy-send alone",
    { "zero-copy-send": true },
    {},
    "Zero copy only available for non-compressed non-TLS multifd migration",
  ],
  [
    "zero-copy-send with multifd",
    { "zero-copy-send": true, multifd: true },
    {},
    undefined,
  ],
  ["zero-copy-send with multifd and TLS", {
    "zero-copy-send": true,
    multifd: true,
  }, {
    parameters: { ...DEFAULT_QEMU_MIGRATION_PARAMETERS, "tls-creds": "tls0" },
  }, "Zero copy only available for non-compressed non-TLS multifd migration"],
  ["multifd on an incoming guest with one channel", { multifd: true }, {
    incoming: true,
    multiChannelsAllowed: false,
  }, "multifd is not supported by current protocol"],
  [
    "multifd with compress",
    { multifd: true, compress: true },
    {},
    "Multifd is not compatible with compress",
  ],
  [
    "postcopy-ram, postcopy-preempt and multifd",
    { "postcopy-ram": true, "postcopy-preempt": true, multifd: true },
    {},
    undefined,
  ],
];

for (const [name, states, options, desc] of ROWS) {
  Deno.test(`checkCapabilityChange() when ${name}`, () => {
    const changes = Object.entries(states).map(([capability, state]) => ({
      capability: capability as QemuMigrationCapability,
      state: state!,
    }));
    const result = checkCapabilityChange(
      DEFAULT_QEMU_MIGRATION_CAPABILITIES,
      changes,
      options,
    );
    if (desc === undefined) {
      assert.ok(result.ok, result.ok ? "" : result.desc);
      for (const [capability, state] of Object.entries(states)) {
        assert.equal(
          result.value[capability as QemuMigrationCapability],
          state,
        );
      }
    } else {
      assert.deepEqual(result, { ok: false, desc });
    }
  });
}

Deno.test("checkCapabilityChange() lets the last entry for a capability win", () => {
  const result = checkCapabilityChange(DEFAULT_QEMU_MIGRATION_CAPABILITIES, [
    { capability: "events", state: true },
    { capability: "events", state: false },
  ]);
  assert.ok(result.ok && result.value.events === false);
});

Deno.test("checkCapabilityChange() checks against capabilities already on", () => {
  const on = checkCapabilityChange(DEFAULT_QEMU_MIGRATION_CAPABILITIES, [
    { capability: "postcopy-ram", state: true },
    { capability: "postcopy-preempt", state: true },
  ]);
  assert.ok(on.ok);
  assert.deepEqual(
    checkCapabilityChange(on.value, [{
      capability: "postcopy-ram",
      state: false,
    }]),
    { ok: false, desc: "Postcopy preempt requires postcopy-ram" },
  );
});

Deno.test("checkCapabilityChange() refuses background-snapshot with each capability QEMU 7.2 refused", () => {
  // From capabilities.json: every "background-snapshot + X" QEMU answered.
  const recorded = exchanges(loadTranscript("capabilities")).filter((e) =>
    e.request?.execute === "migrate-set-capabilities" &&
    JSON.stringify(e.request.arguments).startsWith(
      '{"capabilities":[{"capability":"background-snapshot","state":true},',
    )
  );
  assert.ok(recorded.length >= 20);
  for (const exchange of recorded) {
    const changes = exchange.request!.arguments!.capabilities as {
      capability: QemuMigrationCapability;
      state: boolean;
    }[];
    const result = checkCapabilityChange(
      DEFAULT_QEMU_MIGRATION_CAPABILITIES,
      changes,
    );
    const error = exchange.reply.error as { desc: string } | undefined;
    assert.deepEqual(
      result.ok ? undefined : result.desc,
      error?.desc,
      JSON.stringify(changes),
    );
  }
});

Deno.test("QEMU_MIGRATION_CAPABILITIES is what QEMU 7.2 lists, in its order", () => {
  const [reply] = exchanges(loadTranscript("capabilities")).filter((e) =>
    e.request?.execute === "query-migrate-capabilities"
  );
  assert.deepEqual(
    (reply!.reply.return as { capability: string }[]).map((c) => c.capability),
    [...QEMU_MIGRATION_CAPABILITIES],
  );
});
