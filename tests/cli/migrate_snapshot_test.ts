/**
 * `migrate -c background-snapshot=on`: the digest it prints is that of the
 * snapshot's RAM, which `incoming` reports once it loaded the file (or
 * the tcp: stream), and `analyze` reads the file as a one-pass stream.
 */
import assert from "node:assert/strict";
import { finishCli, spawnCli } from "../_helpers/cli_process.ts";
import { run, start } from "./_cli.ts";

/** A busy guest: its workload rewrites RAM faster than the snapshot goes. */
const BUSY = [
  ...["--ram", "2MiB", "--prefill", "--workload", "random:32MB/s"],
  ...["-p", "max-bandwidth=4MB/s", "--no-hugepages"],
  ...["-c", "background-snapshot=on", "--json"],
];

function lastJson(text: string): Record<string, unknown> {
  return JSON.parse(text.trimEnd().split("\n").at(-1)!);
}

Deno.test("cli migrate -c background-snapshot=on file:X prints the digest that incoming file:X loads", async () => {
  const path = await Deno.makeTempFile({ suffix: ".snap" });
  try {
    const source = await run(["migrate", `file:${path}`, ...BUSY]);
    assert.equal(source.code, 0, source.err);
    assert.equal(source.err, "");
    const sent = lastJson(source.out);
    assert.equal(sent.status, "completed");
    const ram = sent.ram as Record<string, number>;
    assert.equal(ram["dirty-sync-count"], 1);
    assert.equal(ram.normal! + ram.duplicate!, 512);
    const loaded = await run(["incoming", `file:${path}`, "--json"]);
    assert.equal(loaded.code, 0, loaded.err);
    const received = lastJson(loaded.out);
    assert.equal(received.status, "completed");
    assert.deepEqual(received["ram-sha256"], sent["ram-sha256"]);
    assert.deepEqual(
      sent["x-livemig-snapshot-ram-sha256"],
      sent["ram-sha256"],
    );
    const analyzed = await run(["analyze", path, "--json"]);
    assert.equal(analyzed.code, 0, analyzed.err);
    const analysis = lastJson(analyzed.out) as {
      ram: { zero: number; normal: number; blocks: { name: string }[] };
    };
    assert.equal(analysis.ram.zero + analysis.ram.normal, 512);
    assert.deepEqual(analysis.ram.blocks.map((b) => b.name), ["guest.ram"]);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("cli migrate -c background-snapshot=on over tcp: runs without return-path and incoming loads the snapshot", async () => {
  const incoming = start(["incoming", "tcp:127.0.0.1:0", "--json"]);
  const [, address] = await incoming.waitForErr(
    /waiting for a migration at (tcp:\S+)\n/,
  );
  const source = await run(["migrate", address!, ...BUSY]);
  if (source.code !== 0) {
    // Nothing connected: an empty connection ends the waiting incoming.
    const [, port] = address!.split(":").slice(1);
    (await Deno.connect({ hostname: "127.0.0.1", port: Number(port) }))
      .close();
  }
  const loaded = await incoming.done;
  assert.equal(source.code, 0, source.err);
  assert.equal(
    source.err,
    'livemig: a background snapshot runs without return-path: "completed" will mean that the whole stream was sent, not that the destination loaded it\n',
  );
  assert.equal(loaded.code, 0, loaded.err);
  assert.deepEqual(
    lastJson(loaded.out)["ram-sha256"],
    lastJson(source.out)["ram-sha256"],
  );
});

Deno.test("cli migrate refuses background-snapshot with postcopy-ram in QEMU 7.2's words", async () => {
  const refused = await run([
    "migrate",
    "file:/tmp/never.snap",
    ...["-c", "background-snapshot=on", "-c", "postcopy-ram=on"],
  ]);
  assert.equal(refused.code, 2);
  assert.match(
    refused.err,
    /Background-snapshot is not compatible with postcopy-ram/,
  );
});

Deno.test("cli migrate -c background-snapshot=on exits once the snapshot is written, its guest ending with it", async () => {
  const path = await Deno.makeTempFile({ suffix: ".snap" });
  try {
    const started = Date.now();
    const { code, json, stderr } = await finishCli(
      spawnCli(["migrate", `file:${path}`, ...BUSY]),
    );
    assert.equal(code, 0, stderr);
    assert.equal(json.status, "completed");
    assert.ok(Date.now() - started < 20_000);
  } finally {
    await Deno.remove(path);
  }
});
