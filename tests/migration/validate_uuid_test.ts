import assert from "node:assert/strict";
import {
  createMemoryTransportPair,
  DestinationMigration,
  formatUuid,
  MigrationAbortedError,
  SimulatedGuest,
  SourceMigration,
} from "../../mod.ts";

const UUID = "6b2d7b0c-3e61-4f3a-9c3e-1a2b3c4d5e6f";
const OTHER = "00000000-0000-0000-0000-000000000001";

function guest(): SimulatedGuest {
  return new SimulatedGuest({
    ramBytes: 16 * 4096,
    workload: { kind: "fill" },
    running: false,
  });
}

/** Migrates between two livemig ends; returns the destination and outcome. */
async function migrate(
  source: { capabilities?: { "validate-uuid": boolean }; uuid?: string },
  destinationUuid?: string,
) {
  const [a, b] = createMemoryTransportPair();
  const destination = new DestinationMigration({
    autostart: false,
    ...(destinationUuid === undefined ? {} : { uuid: destinationUuid }),
  });
  const warnings: string[] = [];
  destination.addEventListener("warning", (event) => {
    warnings.push((event as CustomEvent<{ message: string }>).detail.message);
  });
  const results = await Promise.allSettled([
    new SourceMigration(guest(), {
      capabilities: { "return-path": true, ...source.capabilities },
      ...(source.uuid === undefined ? {} : { uuid: source.uuid }),
    }).migrate(a),
    destination.incoming(b),
  ]);
  return { destination, warnings, results };
}

Deno.test("validate-uuid: the same UUID on both ends loads", async () => {
  const { destination, warnings, results } = await migrate(
    { capabilities: { "validate-uuid": true }, uuid: UUID },
    UUID,
  );
  assert.deepEqual(results.map((r) => r.status), ["fulfilled", "fulfilled"]);
  assert.equal(destination.status, "completed");
  assert.deepEqual(warnings, []);
});

Deno.test("validate-uuid: another UUID is refused with QEMU's text", async () => {
  const { destination, results } = await migrate(
    { capabilities: { "validate-uuid": true }, uuid: UUID },
    OTHER,
  );
  const message =
    `Cannot load the CONFIGURATION section: UUID received is ${UUID} and local is ${OTHER}`;
  assert.equal(destination.status, "failed");
  assert.equal(destination.query()["error-desc"], message);
  const [sent, loaded] = results;
  assert.equal(loaded.status, "rejected");
  const error = (loaded as PromiseRejectedResult).reason;
  assert.ok(error instanceof MigrationAbortedError, String(error));
  assert.equal((error.cause as Error).message, message);
  // The source learns of it on the return path and keeps its guest.
  assert.equal(sent.status, "rejected");
  const reason = (sent as PromiseRejectedResult).reason;
  assert.ok(reason instanceof MigrationAbortedError, String(reason));
});

Deno.test("validate-uuid: a destination without a UUID warns as QEMU does", async () => {
  const { destination, warnings } = await migrate({
    capabilities: { "validate-uuid": true },
    uuid: UUID,
  });
  assert.equal(destination.status, "completed");
  assert.deepEqual(warnings, [
    `UUID is received ${UUID}, but local uuid isn't set`,
  ]);
});

Deno.test("validate-uuid off, or no UUID: nothing is sent or checked", async () => {
  for (
    const source of [{ uuid: UUID }, {
      capabilities: { "validate-uuid": true },
    }]
  ) {
    const { destination, warnings } = await migrate(source, OTHER);
    assert.equal(destination.status, "completed", JSON.stringify(source));
    assert.deepEqual(warnings, []);
  }
});

Deno.test("validate-uuid: a UUID that is not 8-4-4-4-12 hex is refused", () => {
  assert.throws(
    () => new SourceMigration(guest(), { uuid: "not-a-uuid" }),
    TypeError,
  );
  assert.throws(() => new DestinationMigration({ uuid: "1234" }), TypeError);
  assert.equal(formatUuid(new Uint8Array(16).fill(0xab)).length, 36);
});
