/**
 * `ram-sha256-received`: the destination's digest of RAM as it arrived
 * equals the source's `ram-sha256` (taken when the source guest stopped
 * for good) in precopy, postcopy and postcopy with recovery, although in
 * postcopy the destination guest writes while pages arrive; through the
 * library and through two CLI processes whose connection is cut.
 */
import assert from "node:assert/strict";
import {
  createMemoryTransportPair,
  DestinationMigration,
  ramSha256,
  SimulatedGuest,
  SourceMigration,
} from "../../mod.ts";
import { runCutCase } from "./_cut_case.ts";
import { finishCli, spawnCli, waitForLine } from "../_helpers/cli_process.ts";
import { freeTcpAddress, startTcpRelay } from "../_helpers/tcp_relay.ts";

const MIB = 1024 * 1024;

async function migrate(postcopy: boolean, received = true) {
  const guest = new SimulatedGuest({
    ramBytes: MIB,
    workload: { kind: "random", bytesPerSecond: 16 * MIB },
    prefill: true,
    seed: 5,
  });
  const source = new SourceMigration(guest, {
    capabilities: { "postcopy-ram": postcopy },
    // Postcopy at once, and slow enough that the destination guest runs
    // (and writes) for a while before the last page arrives.
    parameters: { "max-postcopy-bandwidth": 2 * MIB },
    // postcopyAfterPasses 0: at the first sync, before the convergence
    // check (1 MiB would fit the downtime budget after one pass).
    ...(postcopy ? { postcopyAfterPasses: 0 } : {}),
  });
  const destination = new DestinationMigration({
    postcopy,
    ...(received ? { ramSha256Received: true } : {}),
  });
  const [a, b] = createMemoryTransportPair();
  const [info, result] = await Promise.all([
    source.migrate(a),
    destination.incoming(b),
  ]);
  const loaded = result.guest as SimulatedGuest;
  loaded.pause();
  return {
    info,
    result,
    sourceGuest: guest,
    loaded,
    sent: await ramSha256(guest.memory),
    live: await ramSha256(loaded.memory),
  };
}

Deno.test("ram-sha256-received equals the source's digest after precopy", async () => {
  const run = await migrate(false);
  assert.equal(run.sourceGuest.running, false, "the source guest stopped");
  assert.deepEqual(run.result.ramSha256Received, run.sent);
  assert.deepEqual(run.live, run.sent, "the guest had not run yet");
});

Deno.test("ram-sha256-received equals the source's digest after postcopy, while the RAM itself moved on", async () => {
  const run = await migrate(true);
  assert.equal(run.sourceGuest.running, false, "the source guest stopped");
  assert.ok(
    run.loaded.workload.progress.written >
      run.sourceGuest.workload.progress.written,
    "the destination guest wrote during postcopy",
  );
  assert.ok((run.result.info.ram?.["postcopy-requests"] ?? 0) > 0);
  assert.notDeepEqual(run.live, run.sent);
  assert.deepEqual(run.result.ramSha256Received, run.sent);
  assert.equal(run.loaded.memory.keptPages, 0, "the kept pages are dropped");
});

Deno.test("without ramSha256Received a destination reports no digest", async () => {
  const run = await migrate(true, false);
  assert.equal(run.result.ramSha256Received, undefined);
});

Deno.test("ram-sha256-received equals the source's digest after a postcopy recovery", async () => {
  for (const inPostcopy of [0.2, 0.6]) {
    const outcome = await runCutCase("postcopy-recover", { inPostcopy });
    assert.equal(outcome.cut, true);
    assert.equal(outcome.recovered, true);
    assert.equal(outcome.source, "completed");
    assert.equal(outcome.destination, "completed");
    assert.ok(outcome.sourceSha256 !== undefined);
    assert.deepEqual(outcome.receivedSha256, outcome.sourceSha256);
  }
});

// ---------------------------------------------------------------------
// Two CLI processes, their connection cut by cutting the relay between
// them once postcopy runs; they recover at another address.

Deno.test("cli: ram-sha256-received equals the source's ram-sha256 after postcopy is cut and recovered", async () => {
  const recover = await freeTcpAddress();
  const incoming = spawnCli([
    "incoming",
    "tcp:127.0.0.1:0",
    "-c",
    "postcopy-ram=on",
    "--recover",
    recover,
    "--json",
  ]);
  const [, address] = await waitForLine(
    incoming,
    /waiting for a migration at (tcp:\S+)/,
  );
  const relay = await startTcpRelay(address!);
  try {
    const migrate = spawnCli([
      "migrate",
      relay.address,
      "--ram",
      "16MiB",
      "--prefill",
      "--workload",
      "random:32MB/s",
      "-c",
      "postcopy-ram=on",
      "-p",
      "max-postcopy-bandwidth=4MiB/s",
      "--postcopy-after",
      "0",
      "--recover",
      recover,
      "--json",
    ]);
    // Once the destination guest runs, kill the relay: both ends pause,
    // and the source comes back at the recovery address.
    await waitForLine(incoming, /postcopy-active/);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await relay.cut();
    await waitForLine(incoming, /postcopy paused; waiting for the source/);
    const [source, destination] = await Promise.all([
      finishCli(migrate),
      finishCli(incoming),
    ]);
    assert.equal(source.code, 0, JSON.stringify(source.json));
    assert.equal(destination.code, 0, JSON.stringify(destination.json));
    assert.equal(source.json.status, "completed");
    assert.equal(destination.json.status, "completed");
    const ram = destination.json.ram as Record<string, number>;
    assert.ok(ram["postcopy-requests"]! > 0);
    assert.notDeepEqual(
      destination.json["ram-sha256"],
      source.json["ram-sha256"],
      "the destination guest wrote during postcopy",
    );
    assert.deepEqual(
      destination.json["ram-sha256-received"],
      source.json["ram-sha256"],
    );
  } finally {
    await relay.close();
  }
});
