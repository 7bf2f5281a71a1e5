/**
 * The CLI as separate processes: `incoming` in one, `migrate` in another,
 * over loopback TCP, including postcopy healing itself after its
 * connection is cut.
 */
import assert from "node:assert/strict";
import { QmpClient } from "../mod.ts";
import { finishCli, spawnCli, waitForLine } from "./_helpers/cli_process.ts";
import { freeTcpAddress, startTcpRelay } from "./_helpers/tcp_relay.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

/** How long the demo task may run before it is killed. */
const PROCESS_DEADLINE_MS = 120_000;

Deno.test("cli migrate and incoming, as two processes, carry a guest with identical RAM", async () => {
  const incoming = spawnCli(["incoming", "tcp:127.0.0.1:0", "--json"]);
  const [, address] = await waitForLine(
    incoming,
    /waiting for a migration at (tcp:\S+)/,
  );
  const migrate = spawnCli([
    "migrate",
    address!,
    "--ram",
    "8MiB",
    "--workload",
    "sweep:4MB/s",
    "--prefill",
    "--json",
  ]);
  const [source, destination] = await Promise.all([
    finishCli(migrate),
    finishCli(incoming),
  ]);
  assert.equal(source.code, 0);
  assert.equal(destination.code, 0);
  assert.equal(source.json.status, "completed");
  assert.equal(destination.json.status, "completed");
  assert.deepEqual(source.json["ram-sha256"], destination.json["ram-sha256"]);
});

Deno.test("cli proxy between migrate and incoming re-encodes with XBZRLE and keeps RAM identical", async () => {
  const incoming = spawnCli(["incoming", "tcp:127.0.0.1:0", "--json"]);
  const [, target] = await waitForLine(
    incoming,
    /waiting for a migration at (tcp:\S+)/,
  );
  const proxy = spawnCli([
    "proxy",
    "tcp:127.0.0.1:0",
    target!,
    "-c",
    "xbzrle=on",
    "-p",
    "max-postcopy-bandwidth=64MiB/s",
    "--json",
  ]);
  const [, address] = await waitForLine(
    proxy,
    /waiting for a migration at (tcp:[^\s,]+), forwarding/,
  );
  const migrate = spawnCli([
    "migrate",
    address!,
    "--ram",
    "4MiB",
    "--workload",
    "random:1MB/s",
    "--prefill",
    "-p",
    "max-bandwidth=2MiB/s",
    "--json",
  ]);
  const [source, relayed, destination] = await Promise.all([
    finishCli(migrate),
    finishCli(proxy),
    finishCli(incoming),
  ]);
  assert.equal(source.code, 0);
  assert.equal(relayed.code, 0);
  assert.equal(destination.code, 0);
  assert.equal(relayed.json.status, "completed");
  // Random writes at 1 MB/s over 4 MiB keep the 2 MiB/s source iterating,
  // so pages come round again: the proxy sends some of them as deltas.
  const received = relayed.json.received as Record<string, number>;
  const sent = relayed.json.sent as Record<string, number>;
  assert.equal(received.xbzrle, 0);
  assert.ok(sent.xbzrle! > 0, JSON.stringify(sent));
  assert.ok(sent.transferred! < received.transferred!);
  assert.equal(destination.json.status, "completed");
  assert.deepEqual(source.json["ram-sha256"], destination.json["ram-sha256"]);
});

Deno.test("cli proxy refuses parameters it cannot apply, naming them", async () => {
  const proxy = spawnCli([
    "proxy",
    "tcp:127.0.0.1:0",
    "tcp:127.0.0.1:1",
    "-p",
    "downtime-limit=100",
  ]);
  const [, message] = await waitForLine(proxy, /(Cannot set parameter .*)/);
  assert.match(message!, /"downtime-limit"/);
  const status = await proxy.child.status;
  await proxy.stdout;
  while (!(await proxy.stderrLines.next()).done) { /* drain */ }
  assert.equal(status.code, 2);
});

Deno.test("cli postcopy heals itself on both ends after its connection is cut", async () => {
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
      "--workload",
      "random:32MB/s",
      "--prefill",
      "-c",
      "postcopy-ram=on",
      "-p",
      "max-bandwidth=8MiB/s",
      "-p",
      "max-postcopy-bandwidth=4MiB/s",
      "--postcopy-after",
      "2",
      "--recover",
      recover,
      "--json",
    ]);
    // Cut the relayed connection once the destination guest runs: both
    // ends pause, and heal through the recovery address.
    await waitForLine(incoming, /postcopy-active/);
    await relay.cut();
    await waitForLine(incoming, /postcopy paused; waiting for the source/);
    const [source, destination] = await Promise.all([
      finishCli(migrate),
      finishCli(incoming),
    ]);
    assert.equal(source.code, 0, source.stderr);
    assert.equal(destination.code, 0, destination.stderr);
    assert.equal(source.json.status, "completed");
    assert.equal(destination.json.status, "completed");
    assert.ok(
      source.stderr.includes(`postcopy paused`) &&
        source.stderr.includes(`reconnecting at ${recover}`),
      source.stderr,
    );
    assert.equal(relay.accepted, 1, "the recovery went to its own address");
  } finally {
    await relay.close();
  }
});

Deno.test("the demo task runs with exactly the permissions deno.json gives it", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
  );
  const [run, ...args] = (config.tasks.demo as string).split(/\s+/).slice(1);
  assert.equal(run, "run");
  const flags = args.filter((arg) => arg.startsWith("--"));
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...flags,
      CLI,
      "demo",
      "--ram",
      "16MiB",
      "--workload",
      "hot-set:1MiB@4MB/s",
      "--json",
    ],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(PROCESS_DEADLINE_MS),
  }).spawn();
  const [status, stdout, stderr] = await Promise.all([
    child.status,
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ]);
  assert.equal(status.code, 0, stderr);
  const json = JSON.parse(stdout.trimEnd().split("\n").at(-1)!);
  assert.equal(json.source.status, "completed");
  assert.equal(json.destination.status, "completed");
  assert.equal(json["ram-identical"], true);
});

Deno.test("cli migrate with pause-before-switchover waits in pre-switchover until migrate-continue on its monitor", async () => {
  const incoming = spawnCli(["incoming", "tcp:127.0.0.1:0", "--json"]);
  const [, address] = await waitForLine(
    incoming,
    /waiting for a migration at (tcp:\S+)/,
  );
  const migrate = spawnCli([
    "migrate",
    address!,
    "--ram",
    "4MiB",
    "-c",
    "pause-before-switchover=on",
    "--qmp",
    "tcp:127.0.0.1:0",
    "--json",
  ]);
  const [, monitor] = await waitForLine(migrate, /QMP monitor at (tcp:\S+)/);
  const qmp = await QmpClient.connect(monitor!);
  await waitForLine(
    migrate,
    /paused before switchover \(guest stopped\); continue with: livemig qmp tcp:\S+ migrate-continue/,
  );
  assert.equal(
    (await qmp.execute<{ status: string }>("query-migrate")).status,
    "pre-switchover",
  );
  await qmp.execute("migrate-continue", { state: "pre-switchover" });
  const [source, destination] = await Promise.all([
    finishCli(migrate),
    finishCli(incoming),
  ]);
  await qmp.close();
  assert.equal(source.code, 0);
  assert.equal(source.json.status, "completed");
  assert.equal(destination.json.status, "completed");
  assert.deepEqual(source.json["ram-sha256"], destination.json["ram-sha256"]);
});
