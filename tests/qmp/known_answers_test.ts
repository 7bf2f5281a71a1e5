/**
 * The answers issue 11 quotes from QEMU 7.2 come out of our own recordings,
 * and the ones lib/qmp produces today come out of lib/qmp too.
 */
import assert from "node:assert/strict";
import { checkCapabilityChange } from "../../lib/qmp/check_capability_change.ts";
import { checkParameterChange } from "../../lib/qmp/check_parameter_change.ts";
import { DEFAULT_QEMU_MIGRATION_CAPABILITIES } from "../../lib/qmp/qemu_capabilities.ts";
import { qemuCommand } from "../../lib/qmp/qemu_commands.ts";
import { DEFAULT_QEMU_MIGRATION_PARAMETERS } from "../../lib/qmp/qemu_parameters.ts";
import { QmpClient } from "../../lib/qmp/qmp_client.ts";
import { QmpServer } from "../../lib/qmp/qmp_server.ts";
import { createMemoryTransportPair } from "../../lib/transport/memory_transport.ts";
import { exchanges, loadTranscript } from "./_fixtures.ts";

const ANSWERS: [string, string, string][] = [
  [
    "capabilities",
    "migrate-set-capabilities",
    "Postcopy preempt requires postcopy-ram",
  ],
  [
    "capabilities",
    "migrate-set-capabilities",
    "Parameter 'capability' does not accept value 'warp-drive'",
  ],
  [
    "parameters",
    "migrate-set-parameters",
    "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms",
  ],
  [
    "parameters",
    "migrate-set-parameters",
    "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size",
  ],
  [
    "commands",
    "migrate-start-postcopy",
    "Enable postcopy with migrate_set_capability before the start of migration",
  ],
  ["commands", "migrate-continue", "Migration not in expected state: none"],
  [
    "commands",
    "migrate-pause",
    "migrate-pause is currently only supported during postcopy-active state",
  ],
  [
    "commands",
    "migrate-recover",
    "Migrate recover can only be run when postcopy is paused.",
  ],
  ["commands", "migrate", "Parameter 'uri' expects a valid migration protocol"],
];

for (const [scenario, command, desc] of ANSWERS) {
  Deno.test(`QEMU 7.2 answered ${command} with "${desc}"`, () => {
    assert.ok(
      exchanges(loadTranscript(scenario)).some((e) =>
        e.request?.execute === command &&
        (e.reply.error as { desc?: string } | undefined)?.desc === desc
      ),
    );
  });
}

Deno.test("QEMU 7.2 answered query-migrate {} before any migration, and failed with error-desc after a closed port", () => {
  const all = exchanges(loadTranscript("commands"));
  assert.equal(
    all.find((e) => e.request?.execute === "query-migrate")!.raw,
    '{"return": {}}',
  );
  const closedPort = all.findIndex((e) =>
    e.request?.execute === "migrate" &&
    e.request.arguments?.uri === "tcp:127.0.0.1:1" &&
    e.request.arguments?.resume === undefined
  );
  assert.equal(all[closedPort]!.raw, '{"return": {}}');
  assert.deepEqual(
    all.slice(closedPort).find((e) => e.request?.execute === "query-migrate")!
      .reply,
    {
      return: {
        status: "failed",
        "error-desc": "Failed to connect to '127.0.0.1:1': Connection refused",
      },
    },
  );
});

Deno.test("lib/qmp gives the capability and parameter answers", () => {
  assert.deepEqual(
    checkCapabilityChange(DEFAULT_QEMU_MIGRATION_CAPABILITIES, [
      { capability: "postcopy-preempt", state: true },
    ]),
    { ok: false, desc: "Postcopy preempt requires postcopy-ram" },
  );
  assert.deepEqual(
    checkParameterChange(DEFAULT_QEMU_MIGRATION_PARAMETERS, {
      "downtime-limit": 3000000,
    }),
    {
      ok: false,
      desc:
        "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms",
    },
  );
  assert.deepEqual(
    checkParameterChange(DEFAULT_QEMU_MIGRATION_PARAMETERS, {
      "xbzrle-cache-size": 1000,
    }),
    {
      ok: false,
      desc:
        "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size",
    },
  );
});

Deno.test("lib/qmp refuses an unknown capability name before the command runs", async () => {
  let ran = false;
  const server = new QmpServer({
    commands: {
      "migrate-set-capabilities": qemuCommand(
        "migrate-set-capabilities",
        () => {
          ran = true;
        },
      ),
    },
  });
  const [near, far] = createMemoryTransportPair();
  const served = server.handle(far);
  const client = await QmpClient.connect(near);
  await assert.rejects(
    client.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "warp-drive", state: true }],
    }),
    { desc: "Parameter 'capability' does not accept value 'warp-drive'" },
  );
  assert.equal(ran, false);
  await client.close();
  await served;
});
