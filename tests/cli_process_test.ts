/**
 * The CLI as separate processes: `incoming` in one, `migrate` in another,
 * over loopback TCP, including postcopy healing itself after its
 * connection is cut.
 */
import assert from "node:assert/strict";
import {
  connectTransport,
  listenTransport,
  QmpClient,
  type Transport,
} from "../mod.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;
const PERMISSIONS = ["--allow-read", "--allow-write", "--allow-net=127.0.0.1"];

interface Process {
  child: Deno.ChildProcess;
  stdout: Promise<string>;
  stderrLines: AsyncIterator<string>;
}

/**
 * How long a CLI process may run (they take seconds) before it is killed,
 * so that a stuck one fails its test instead of hanging the run.
 */
const PROCESS_DEADLINE_MS = 120_000;

function spawn(args: string[]): Process {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, CLI, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const watchdog = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // it has ended
    }
  }, PROCESS_DEADLINE_MS);
  child.status.finally(() => clearTimeout(watchdog));
  const stdout = new Response(child.stdout).text();
  const stderrLines = child.stderr.pipeThrough(new TextDecoderStream())
    .pipeThrough(lines())[Symbol.asyncIterator]();
  return { child, stdout, stderrLines };
}

function lines(): TransformStream<string, string> {
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

async function waitForLine(
  process: Process,
  pattern: RegExp,
): Promise<RegExpExecArray> {
  while (true) {
    const { done, value } = await process.stderrLines.next();
    if (done) throw new Error(`the process ended before printing ${pattern}`);
    const match = pattern.exec(value);
    if (match) return match;
  }
}

async function finish(
  process: Process,
): Promise<{ code: number; json: Record<string, unknown> }> {
  const [status, stdout] = await Promise.all([
    process.child.status,
    process.stdout,
  ]);
  // Drain stderr so the process is fully reaped.
  const stderr: string[] = [];
  for (let line; !(line = await process.stderrLines.next()).done;) {
    stderr.push(line.value);
  }
  const last = stdout.trimEnd().split("\n").at(-1) ?? "{}";
  try {
    return { code: status.code, json: JSON.parse(last) };
  } catch {
    throw new Error(
      `exit ${status.code} without a JSON line\nstdout: ${stdout}\nstderr: ${
        stderr.join("\n")
      }`,
    );
  }
}

Deno.test("cli migrate and incoming, as two processes, carry a guest with identical RAM", async () => {
  const incoming = spawn(["incoming", "tcp:127.0.0.1:0", "--json"]);
  const [, address] = await waitForLine(
    incoming,
    /waiting for a migration at (tcp:\S+)/,
  );
  const migrate = spawn([
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
    finish(migrate),
    finish(incoming),
  ]);
  assert.equal(source.code, 0);
  assert.equal(destination.code, 0);
  assert.equal(source.json.status, "completed");
  assert.equal(destination.json.status, "completed");
  assert.deepEqual(source.json["ram-sha256"], destination.json["ram-sha256"]);
});

Deno.test("cli proxy between migrate and incoming re-encodes with XBZRLE and keeps RAM identical", async () => {
  const incoming = spawn(["incoming", "tcp:127.0.0.1:0", "--json"]);
  const [, target] = await waitForLine(
    incoming,
    /waiting for a migration at (tcp:\S+)/,
  );
  const proxy = spawn([
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
  const migrate = spawn([
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
    finish(migrate),
    finish(proxy),
    finish(incoming),
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
  const proxy = spawn([
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

/** A TCP relay whose connections the test can cut. */
async function relay(target: string) {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const open: Transport[] = [];
  const accepting = (async () => {
    while (true) {
      let inbound: Transport;
      try {
        inbound = await listener.accept();
      } catch {
        return;
      }
      const outbound = await connectTransport(target);
      open.push(inbound, outbound);
      inbound.readable.pipeTo(outbound.writable).catch(() => {});
      outbound.readable.pipeTo(inbound.writable).catch(() => {});
    }
  })();
  return {
    address: listener.address,
    async cut() {
      await Promise.all(open.splice(0).map((t) => t.close()));
    },
    async close() {
      await listener.close();
      await this.cut();
      await accepting;
    },
  };
}

Deno.test("cli postcopy heals itself on both ends after its connection is cut", async () => {
  const recoverPort = 20000 + Math.floor(Math.random() * 20000);
  const recover = `tcp:127.0.0.1:${recoverPort}`;
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
  const cut = await relay(address!);
  try {
    const migrate = spawn([
      "migrate",
      cut.address,
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
    // Cut the relayed connection once postcopy runs: both ends pause and
    // heal through the recovery address.
    await waitForLine(incoming, /postcopy paused|waiting for the source/).catch(
      () => {},
    );
    const cutting = (async () => {
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await cut.cut();
    })();
    const [source, destination] = await Promise.all([
      finish(migrate),
      finish(incoming),
    ]);
    await cutting;
    assert.equal(source.code, 0, JSON.stringify(source.json));
    assert.equal(destination.code, 0, JSON.stringify(destination.json));
    assert.equal(source.json.status, "completed");
    assert.equal(destination.json.status, "completed");
  } finally {
    await cut.close();
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
  const incoming = spawn(["incoming", "tcp:127.0.0.1:0", "--json"]);
  const [, address] = await waitForLine(
    incoming,
    /waiting for a migration at (tcp:\S+)/,
  );
  const migrate = spawn([
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
    finish(migrate),
    finish(incoming),
  ]);
  await qmp.close();
  assert.equal(source.code, 0);
  assert.equal(source.json.status, "completed");
  assert.equal(destination.json.status, "completed");
  assert.deepEqual(source.json["ram-sha256"], destination.json["ram-sha256"]);
});
