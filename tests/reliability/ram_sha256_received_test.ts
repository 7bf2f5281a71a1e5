/**
 * `ram-sha256-received`: the destination's digest of RAM as it arrived
 * equals the source's `ram-sha256` (taken when the source guest stopped
 * for good) in precopy, postcopy and postcopy with recovery, although in
 * postcopy the destination guest writes while pages arrive; through the
 * library and through two CLI processes whose connection is cut.
 */
import assert from "node:assert/strict";
import {
  connectTransport,
  createMemoryTransportPair,
  DestinationMigration,
  listenTransport,
  ramSha256,
  SimulatedGuest,
  SourceMigration,
  type Transport,
} from "../../mod.ts";
import { runCutCase } from "./_cut_case.ts";

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
// Two CLI processes, their connection cut by killing the relay between
// them once postcopy runs; they recover at another address.

const CLI = new URL("../../cli.ts", import.meta.url).pathname;

interface Process {
  child: Deno.ChildProcess;
  stdout: Promise<string>;
  stderr: ReadableStreamDefaultReader<string>;
}

function spawn(args: string[]): Process {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net=127.0.0.1", CLI, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // A stuck process fails the test instead of hanging the run.
  const watchdog = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // it has ended
    }
  }, 120_000);
  child.status.finally(() => clearTimeout(watchdog));
  return {
    child,
    stdout: new Response(child.stdout).text(),
    stderr: child.stderr.pipeThrough(new TextDecoderStream())
      .pipeThrough(splitLines()).getReader(),
  };
}

function splitLines(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(text, controller) {
      const parts = (rest + text).split("\n");
      rest = parts.pop()!;
      for (const line of parts) controller.enqueue(line);
    },
    flush(controller) {
      if (rest) controller.enqueue(rest);
    },
  });
}

async function waitForLine(process: Process, pattern: RegExp) {
  while (true) {
    const { done, value } = await process.stderr.read();
    if (done) throw new Error(`the process ended before printing ${pattern}`);
    const match = pattern.exec(value);
    if (match) return match;
  }
}

async function finish(process: Process) {
  const [status, stdout] = await Promise.all([
    process.child.status,
    process.stdout,
  ]);
  while (!(await process.stderr.read()).done) { /* drain */ }
  const json = JSON.parse(stdout.trimEnd().split("\n").at(-1) ?? "{}");
  return { code: status.code, json };
}

/** A TCP relay to `target` that can be killed, cutting what it carries. */
async function startRelay(target: string) {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const open: Transport[] = [];
  const accepting = (async () => {
    while (true) {
      const inbound = await listener.accept().catch(() => undefined);
      if (inbound === undefined) return;
      const outbound = await connectTransport(target);
      open.push(inbound, outbound);
      inbound.readable.pipeTo(outbound.writable).catch(() => {});
      outbound.readable.pipeTo(inbound.writable).catch(() => {});
    }
  })();
  return {
    address: listener.address,
    async kill() {
      await listener.close();
      await Promise.all(open.splice(0).map((t) => t.close()));
      await accepting;
    },
  };
}

async function freePort(): Promise<number> {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const port = Number(listener.address.split(":").at(-1));
  await listener.close();
  return port;
}

Deno.test("cli: ram-sha256-received equals the source's ram-sha256 after postcopy is cut and recovered", async () => {
  const recover = `tcp:127.0.0.1:${await freePort()}`;
  const incoming = spawn([
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
  const relay = await startRelay(address!);
  let killed = false;
  try {
    const migrate = spawn([
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
    await relay.kill();
    killed = true;
    await waitForLine(incoming, /postcopy paused; waiting for the source/);
    const [source, destination] = await Promise.all([
      finish(migrate),
      finish(incoming),
    ]);
    assert.equal(source.code, 0, JSON.stringify(source.json));
    assert.equal(destination.code, 0, JSON.stringify(destination.json));
    assert.equal(source.json.status, "completed");
    assert.equal(destination.json.status, "completed");
    assert.ok(destination.json.ram["postcopy-requests"] > 0);
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
    if (!killed) await relay.kill();
  }
});
