/**
 * `cli.ts run` processes driven over QMP only: a precopy migration from
 * one to another (destination `-incoming defer` + `migrate-incoming`),
 * with `migrate-set-parameters max-bandwidth` changing the measured rate
 * halfway; a postcopy migration whose connection is cut and healed with
 * `migrate-recover` and `migrate` `resume: true`; and `cli.ts qmp` as a
 * one-shot client.
 */
import assert from "node:assert/strict";
import type { QmpClient, QmpEvent } from "../../lib/qmp/qmp_client.ts";
import { startCuttableProxy } from "./_cuttable_proxy.ts";
import { migrateOverQmp } from "./_drive_migration.ts";
import { type RunProcess, runQmpCommand, startRun } from "./_run_process.ts";
import { delay } from "../_helpers/delay.ts";

const MiB = 1 << 20;

/** Collects a client's events as they come. */
function record(qmp: QmpClient): QmpEvent[] {
  const events: QmpEvent[] = [];
  void (async () => {
    for await (const event of qmp.events()) events.push(event);
  })();
  return events;
}

function names(events: readonly QmpEvent[]): string[] {
  return events.map((e) =>
    e.event === "MIGRATION"
      ? `MIGRATION ${e.data.status}`
      : e.event === "MIGRATION_PASS"
      ? "MIGRATION_PASS"
      : e.event
  );
}

interface RamInfo {
  status: string;
  ram?: { transferred: number };
}

/** Bytes per second sent over `ms`, from `ram.transferred`. */
async function measureRate(qmp: QmpClient, ms: number): Promise<number> {
  const first = await qmp.execute<RamInfo>("query-migrate");
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const second = await qmp.execute<RamInfo>("query-migrate");
  const elapsed = performance.now() - started;
  assert.equal(second.status, "active", "the migration ended too soon");
  return (second.ram!.transferred - first.ram!.transferred) * 1000 / elapsed;
}

async function withRuns(
  specs: string[][],
  body: (runs: RunProcess[]) => Promise<void>,
): Promise<void> {
  const runs = await Promise.all(specs.map((args) => startRun(args)));
  try {
    await body(runs);
  } finally {
    await Promise.all(runs.map((run) => run.kill()));
  }
}

Deno.test("two cli.ts run processes migrate over QMP only, and max-bandwidth changes the rate at once", async () => {
  await withRuns([
    ["--ram", "48MiB", "--prefill", "--json"],
    ["--incoming", "defer", "-S", "--json"],
  ], async ([src, dst]) => {
    let slow = 0;
    let fast = 0;
    const { source: srcEvents, destination: dstEvents } = await migrateOverQmp(
      src!.qmp,
      dst!.qmp,
      {
        parameters: { "max-bandwidth": 4 * MiB },
        async whileActive() {
          slow = await measureRate(src!.qmp, 1000);
          await src!.qmp.execute("migrate-set-parameters", {
            "max-bandwidth": 16 * MiB,
          });
          fast = await measureRate(src!.qmp, 1000);
        },
      },
    );
    assert.ok(slow < 6 * MiB, `at 4 MiB/s it sent ${slow} B/s`);
    assert.ok(
      fast > 2 * slow,
      `after 16 MiB/s it sent ${fast} B/s (before: ${slow})`,
    );
    assert.deepEqual(
      await src!.qmp.execute("query-status"),
      { status: "postmigrate", singlestep: false, running: false },
    );
    assert.deepEqual(
      await dst!.qmp.execute("query-status"),
      { status: "paused", singlestep: false, running: false },
    );
    const srcNames = names(srcEvents).filter((n) => n !== "MIGRATION_PASS");
    assert.deepEqual(srcNames, [
      "MIGRATION setup",
      "MIGRATION active",
      "STOP",
      "MIGRATION completed",
    ]);
    assert.ok(
      names(srcEvents).filter((n) => n === "MIGRATION_PASS").length >= 2,
    );
    assert.deepEqual(names(dstEvents), [
      "MIGRATION setup",
      "MIGRATION active",
      "MIGRATION completed",
    ]);

    await src!.qmp.execute("quit");
    await dst!.qmp.execute("quit");
    const [srcEnd, dstEnd] = await Promise.all([src!.finish(), dst!.finish()]);
    assert.equal(srcEnd.code, 0);
    assert.equal(dstEnd.code, 0);
    assert.equal((srcEnd.json!.migration as RamInfo).status, "completed");
    assert.equal((dstEnd.json!.migration as RamInfo).status, "completed");
    assert.deepEqual(srcEnd.json!["ram-sha256"], dstEnd.json!["ram-sha256"]);
  });
});

Deno.test("cli.ts qmp runs one command: its return value on stdout, the monitor's error on stderr", async () => {
  await withRuns([["--ram", "1MiB"]], async ([vm]) => {
    // The monitor serves one client at a time, as QEMU's does.
    await vm!.qmp.close();
    const status = await runQmpCommand([vm!.qmpAddress, "query-status"]);
    assert.deepEqual(status, {
      code: 0,
      stdout: '{"singlestep": false, "status": "running", "running": true}\n',
      stderr: "",
    });
    const continued = await runQmpCommand([
      vm!.qmpAddress,
      "migrate-continue",
      '{"state": "pre-switchover"}',
    ]);
    assert.deepEqual(continued, {
      code: 1,
      stdout: "",
      stderr:
        "livemig: migrate-continue: Migration not in expected state: none\n",
    });
    const info = await runQmpCommand([
      vm!.qmpAddress,
      "human-monitor-command",
      '{"command-line": "info status"}',
    ]);
    assert.equal(info.stdout, "VM status: running\r\n");
    const bad = await runQmpCommand([vm!.qmpAddress, "migrate", "{uri"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^livemig: Cannot parse JSON-ARGS/);
    const quit = await runQmpCommand([vm!.qmpAddress, "quit"]);
    assert.equal(quit.code, 0);
    assert.equal((await vm!.finish()).code, 0);
  });
});

for (const preempt of [false, true]) {
  Deno.test(
    `a postcopy migration between cli.ts run processes${
      preempt ? " with postcopy-preempt" : ""
    } heals over QMP: migrate-recover, then migrate with resume`,
    async () => {
      await withRuns([
        ["--ram", "32MiB", "--prefill", "--json"],
        ["--incoming", "defer", "--json"],
      ], async ([src, dst]) => {
        const srcEvents = record(src!.qmp);
        const dstEvents = record(dst!.qmp);
        const capabilities = {
          capabilities: [
            { capability: "events", state: true },
            { capability: "postcopy-ram", state: true },
            { capability: "postcopy-preempt", state: preempt },
          ],
        };
        await src!.qmp.execute("migrate-set-capabilities", capabilities);
        await dst!.qmp.execute("migrate-set-capabilities", capabilities);
        await dst!.qmp.execute("migrate-incoming", { uri: "tcp:127.0.0.1:0" });
        const proxy = startCuttableProxy(await portOf(dst!.qmp));
        try {
          await src!.qmp.execute("migrate-set-parameters", {
            "max-bandwidth": 4 * MiB,
            "max-postcopy-bandwidth": 2 * MiB,
          });
          await src!.qmp.execute("migrate", {
            uri: `tcp:127.0.0.1:${proxy.port}`,
          });
          await src!.qmp.waitForEvent(
            "MIGRATION",
            (e) => e.data.status === "active",
          );
          await src!.qmp.execute("migrate-start-postcopy");
          await dst!.qmp.waitForEvent(
            "MIGRATION",
            (e) => e.data.status === "postcopy-active",
          );
          await delay(300);
          proxy.cut();
          await src!.qmp.waitForEvent(
            "MIGRATION",
            (e) => e.data.status === "postcopy-paused",
          );
          await dst!.qmp.waitForEvent(
            "MIGRATION",
            (e) => e.data.status === "postcopy-paused",
          );
          assert.equal(
            (await src!.qmp.execute<RamInfo>("query-migrate")).status,
            "postcopy-paused",
          );

          await dst!.qmp.execute("migrate-recover", { uri: "tcp:127.0.0.1:0" });
          const recoverPort = await portOf(dst!.qmp);
          await src!.qmp.execute("migrate-set-parameters", {
            "max-postcopy-bandwidth": 0,
          });
          await src!.qmp.execute("migrate", {
            uri: `tcp:127.0.0.1:${recoverPort}`,
            resume: true,
          });
          await src!.qmp.waitForEvent(
            "MIGRATION",
            (e) => e.data.status === "completed",
            60_000,
          );
          await dst!.qmp.waitForEvent(
            "MIGRATION",
            (e) => e.data.status === "completed",
          );
        } finally {
          proxy.close();
        }
        assert.deepEqual(
          names(srcEvents).filter((n) => n !== "MIGRATION_PASS"),
          [
            "MIGRATION setup",
            "MIGRATION active",
            "MIGRATION postcopy-active",
            "STOP",
            "MIGRATION postcopy-paused",
            "MIGRATION postcopy-recover",
            "MIGRATION postcopy-active",
            "MIGRATION completed",
          ],
        );
        assert.deepEqual(names(dstEvents), [
          "MIGRATION setup",
          "MIGRATION active",
          "MIGRATION postcopy-active",
          "RESUME",
          "MIGRATION postcopy-paused",
          "MIGRATION setup",
          "MIGRATION postcopy-recover",
          "MIGRATION postcopy-active",
          "MIGRATION completed",
        ]);
        assert.deepEqual(
          await dst!.qmp.execute("query-status"),
          { status: "running", singlestep: false, running: true },
        );
        await src!.qmp.execute("quit");
        await dst!.qmp.execute("quit");
        const [srcEnd, dstEnd] = await Promise.all([
          src!.finish(),
          dst!.finish(),
        ]);
        assert.equal(srcEnd.code, 0);
        assert.equal(dstEnd.code, 0);
        // The guest is idle: what the destination runs is what the source had.
        assert.deepEqual(
          srcEnd.json!["ram-sha256"],
          dstEnd.json!["ram-sha256"],
        );
      });
    },
  );
}

/** The port an incoming guest listens on, from query-migrate. */
async function portOf(qmp: QmpClient): Promise<number> {
  const info = await qmp.execute<{ "socket-address": { port: string }[] }>(
    "query-migrate",
  );
  return Number(info["socket-address"][0]!.port);
}

Deno.test("quit during a migration ends the source at once, and the destination, losing its stream, exits 1", async () => {
  await withRuns([
    ["--ram", "32MiB", "--prefill"],
    ["--incoming", "defer", "--json"],
  ], async ([src, dst]) => {
    await dst!.qmp.execute("migrate-incoming", { uri: "tcp:127.0.0.1:0" });
    await src!.qmp.execute("migrate-set-parameters", { "max-bandwidth": MiB });
    await src!.qmp.execute("migrate", {
      uri: `tcp:127.0.0.1:${await portOf(dst!.qmp)}`,
    });
    await delay(500);
    await src!.qmp.execute("quit");
    const started = performance.now();
    const srcEnd = await src!.finish();
    assert.equal(srcEnd.code, 0);
    assert.ok(performance.now() - started < 5000, "the source took its time");
    const dstEnd = await dst!.finish();
    assert.equal(dstEnd.code, 1);
    assert.equal(
      (dstEnd.json!.migration as RamInfo).status,
      "failed",
    );
    assert.match(
      dst!.stderr.at(-1)!,
      /^livemig: Cannot complete the incoming migration: .*stream ended/,
    );
  });
});

Deno.test("cli.ts run ends on SIGTERM as QEMU does: SHUTDOWN with reason host-signal, exit 0", async () => {
  await withRuns([["--ram", "1MiB", "--json"]], async ([vm]) => {
    const shutdown = vm!.qmp.waitForEvent("SHUTDOWN");
    vm!.child.kill("SIGTERM");
    assert.deepEqual((await shutdown).data, {
      guest: false,
      reason: "host-signal",
    });
    const end = await vm!.finish();
    assert.equal(end.code, 0);
    assert.equal(end.json!["run-state"], "shutdown");
  });
});
