/**
 * Replays the transcripts recorded from QEMU 7.2 against livemig's
 * QmpServer, a stand-in QEMU built from lib/qmp (tests/qmp/_qemu_model.ts),
 * and compares every line byte for byte: greeting, negotiation, parse
 * errors, argument errors, capability and parameter checks and queries.
 */
import assert from "node:assert/strict";
import { loadTranscript } from "./_fixtures.ts";
import { createQemuModel } from "./_qemu_model.ts";
import { replay, type ReplayLine } from "./_replay.ts";

function assertSameLines(lines: readonly ReplayLine[], atLeast: number): void {
  const differences = lines.filter((line) => line.qemu !== line.livemig);
  assert.deepEqual(
    differences.map((line) =>
      `after ${line.after.trim()}\n  QEMU:    ${line.qemu}\n  livemig: ${line.livemig}`
    ),
    [],
  );
  assert.ok(
    lines.length >= atLeast,
    `only ${lines.length} lines compared, expected at least ${atLeast}`,
  );
}

Deno.test("QmpServer answers protocol.json line for line like QEMU 7.2", async () => {
  const server = createQemuModel();
  const lines = await replay(loadTranscript("protocol"), {
    serverFor: () => server,
  });
  assertSameLines(lines, 160);
});

Deno.test("QmpServer answers capabilities.json line for line like QEMU 7.2", async () => {
  const vm = createQemuModel();
  const dst = createQemuModel({ incoming: true, status: "inmigrate" });
  const lines = await replay(loadTranscript("capabilities"), {
    serverFor: (conn) => conn === "dst" ? dst : vm,
    skip: (send) => send.includes('"command-line":"info migrate_'),
  });
  assertSameLines(lines, 70);
});

Deno.test("QmpServer answers parameters.json line for line like QEMU 7.2", async () => {
  const server = createQemuModel();
  const lines = await replay(loadTranscript("parameters"), {
    serverFor: () => server,
    skip: (send) => send.includes('"command-line":"info migrate_'),
  });
  assertSameLines(lines, 120);
});
