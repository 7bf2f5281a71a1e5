/**
 * multifd through the QMP monitor, as a management tool drives QEMU:
 * `migrate-set-capabilities` multifd and `migrate-set-parameters`
 * multifd-channels/multifd-compression on both ends, `migrate-incoming`
 * on the destination, `migrate` on the source.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  listenTransport,
  MigrationMonitor,
  QmpClient,
  ramSha256,
  SimulatedGuest,
} from "../../mod.ts";

Deno.test("migrate-set-capabilities multifd on both monitors migrates over 3 zstd channels", async () => {
  const guest = new SimulatedGuest({ ramBytes: 4 << 20, prefill: true });
  const a = new MigrationMonitor({ guest });
  const b = new MigrationMonitor({ incoming: true, paused: true });
  const listeners = await Promise.all(
    [a, b].map(() => listenTransport("tcp:127.0.0.1:0")),
  );
  const serving = [a, b].map((monitor, i) => monitor.serve(listeners[i]!));
  const [qa, qb] = await Promise.all(
    listeners.map((listener) => QmpClient.connect(listener.address)),
  );
  try {
    for (const qmp of [qa!, qb!]) {
      await qmp.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "multifd", state: true }],
      });
      await qmp.execute("migrate-set-parameters", {
        "multifd-channels": 3,
        "multifd-compression": "zstd",
      });
    }
    const uri = await b.migrateIncoming("tcp:127.0.0.1:0");
    await qa!.execute("migrate", { uri });
    for (
      let i = 0;
      a.runState !== "postmigrate" || b.guest === undefined;
      i++
    ) {
      assert.ok(i < 2000, "the migration did not complete");
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const info = await qa!.execute<
      { status: string; ram: Record<string, number> }
    >(
      "query-migrate",
    );
    assert.equal(info.status, "completed");
    assert.ok(info.ram["multifd-bytes"]! > 4 << 20);
    for (let i = 0; b.runState !== "paused" || !b.guest; i++) {
      assert.ok(i < 2000);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.deepEqual(
      await ramSha256(b.guest!.memory),
      await ramSha256(guest.memory),
    );
  } finally {
    await Promise.all([qa!.close(), qb!.close()]);
    await Promise.all([a.close(), b.close(), ...serving]);
    for (const monitor of [a, b]) monitor.guest?.pause();
  }
});

Deno.test("migrate to exec: with multifd fails as in QEMU 7.2", async () => {
  const guest = new SimulatedGuest({ ramBytes: 1 << 20 });
  const a = new MigrationMonitor({ guest });
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const serving = a.serve(listener);
  const qmp = await QmpClient.connect(listener.address);
  try {
    await qmp.execute("migrate-set-capabilities", {
      capabilities: [{ capability: "multifd", state: true }],
    });
    await qmp.execute("migrate", { uri: "exec:cat >/dev/null" });
    let info: { status: string; "error-desc"?: string };
    for (let i = 0;; i++) {
      info = await qmp.execute("query-migrate");
      if (info.status === "failed" || i > 200) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.equal(info.status, "failed");
    assert.equal(
      info["error-desc"],
      "multifd is not supported by current protocol",
    );
  } finally {
    await qmp.close();
    await a.close();
    await serving;
    guest.pause();
  }
});
