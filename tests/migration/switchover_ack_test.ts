import assert from "node:assert/strict";
import {
  checkCapabilities,
  createMemoryTransportPair,
  DEFAULT_CAPABILITIES,
  DestinationMigration,
  SimulatedGuest,
  SourceMigration,
  type Transport,
} from "../../mod.ts";

/** The source's end, its return path held back until `open()`. */
function gated(transport: Transport): { transport: Transport; open(): void } {
  const gate = Promise.withResolvers<void>();
  const held = transport.readable.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      async transform(chunk, controller) {
        await gate.promise;
        controller.enqueue(chunk);
      },
    }),
  );
  return {
    transport: {
      readable: held,
      writable: transport.writable,
      description: transport.description,
      close: () => transport.close(),
    },
    open: () => gate.resolve(),
  };
}

async function until(condition: () => boolean): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (!condition()) {
    assert.ok(performance.now() < deadline, "timed out");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

Deno.test("switchover-ack: the source keeps the guest running until the ack arrives", async () => {
  const guest = new SimulatedGuest({
    ramBytes: 64 * 4096,
    workload: { kind: "fill" },
  });
  const source = new SourceMigration(guest, {
    capabilities: { "return-path": true, "switchover-ack": true },
    stepMs: 5,
  });
  const destination = new DestinationMigration({ switchoverAck: true });
  const [a, b] = createMemoryTransportPair();
  const { transport, open } = gated(a);
  const migrated = source.migrate(transport);
  const loaded = destination.incoming(b);
  // Everything was sent and synced again and again, but without the ack
  // the guest was not stopped.
  await until(() => (source.query().ram?.["dirty-sync-count"] ?? 0) >= 5);
  assert.ok(destination.guest !== undefined, "the block list was loaded");
  assert.equal(source.status, "active");
  assert.equal(guest.running, true);
  assert.equal(source.query().ram?.remaining, 0);
  open();
  const [info] = await Promise.all([migrated, loaded]);
  assert.equal(info.status, "completed");
  assert.equal(destination.status, "completed");
});

Deno.test("switchover-ack: with the ack the migration completes as usual", async () => {
  const guest = new SimulatedGuest({
    ramBytes: 64 * 4096,
    workload: { kind: "fill" },
  });
  const [a, b] = createMemoryTransportPair();
  const [info] = await Promise.all([
    new SourceMigration(guest, {
      capabilities: { "return-path": true, "switchover-ack": true },
    }).migrate(a),
    new DestinationMigration({ switchoverAck: true }).incoming(b),
  ]);
  assert.equal(info.status, "completed");
});

Deno.test("switchover-ack requires return-path, with QEMU's message", () => {
  assert.throws(
    () =>
      checkCapabilities({ ...DEFAULT_CAPABILITIES, "switchover-ack": true }),
    {
      name: "TypeError",
      message: "Capability 'switchover-ack' requires capability 'return-path'",
    },
  );
});
