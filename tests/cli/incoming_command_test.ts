import assert from "node:assert/strict";
import { connectTransport, encodeMigrationRecords } from "../../mod.ts";
import { run, start, tempFile } from "./_cli.ts";

Deno.test("cli incoming escapes a name from the stream in its error", async () => {
  const path = await tempFile(encodeMigrationRecords([
    { type: "header", version: 3 },
    {
      type: "section-start",
      sectionId: 2,
      idstr: "\x1b[2J\x9b",
      instanceId: 0,
      versionId: 4,
    },
  ]));
  try {
    const { code, out, err } = await run([
      "incoming",
      `file:${path}`,
      "--json",
    ]);
    assert.equal(code, 1);
    assert.equal(JSON.parse(out).status, "failed");
    assert.ok(!err.includes("\x1b") && !err.includes("\x9b"), err);
    assert.match(err, /"\\x1b\[2J\\x9b"/);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("cli incoming loads a mapped-ram file without -c mapped-ram=on, and says so", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const written = await run([
      "migrate",
      `file:${dir}/guest.mr`,
      "--ram",
      "1MiB",
      "--prefill",
      "-c",
      "mapped-ram=on",
    ]);
    assert.equal(written.code, 0, written.err);
    const { code, out, err } = await run([
      "incoming",
      `file:${dir}/guest.mr`,
      "--json",
    ]);
    assert.equal(code, 0, err);
    const info = JSON.parse(out);
    assert.equal(info.status, "completed");
    assert.equal(info.ram.normal, 256);
    assert.match(err, /guest\.mr is a mapped-ram file: loading its pages/);

    const refused = await run([
      "incoming",
      `file:${dir}/guest.mr`,
      "-c",
      "mapped-ram=off",
      "--json",
    ]);
    assert.equal(refused.code, 1);
    assert.equal(JSON.parse(refused.out).status, "failed");
    assert.match(refused.err, /Cannot load a mapped-ram stream as a stream/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli incoming -c mapped-ram=on fails a stream file, naming why", async () => {
  const stream = new URL("../../fixtures/qemu/idle/stream.bin", import.meta.url)
    .pathname;
  const { code, out, err } = await run([
    "incoming",
    `file:${stream}`,
    "-c",
    "mapped-ram=on",
    "--json",
  ]);
  assert.equal(code, 1);
  assert.equal(JSON.parse(out).status, "failed");
  assert.match(err, /it is a plain migration stream/);
});

/** A stream file of one RAM block named `name`. */
function streamWithBlock(name: string): Uint8Array {
  return encodeMigrationRecords([
    { type: "header", version: 3 },
    {
      type: "section-start",
      sectionId: 2,
      idstr: "ram",
      instanceId: 0,
      versionId: 4,
    },
    { type: "ram-mem-size", blocks: [{ idstr: name, usedLength: 4096 }] },
    {
      type: "ram-page",
      block: name,
      offset: 0,
      data: new Uint8Array(4096).fill(9),
    },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "eof" },
  ]);
}

Deno.test("cli incoming --ram-dump that cannot write fails, naming the file and the system error", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/taken`, "a file where DIR should be");
    const stream = await tempFile(streamWithBlock("pc.ram"));
    const long = await tempFile(streamWithBlock("r".repeat(255)));
    try {
      const cases: [string, string, RegExp][] = [
        [
          stream,
          `${dir}/taken`,
          /Cannot create the RAM dump directory ".*\/taken": .*(File exists|Not a directory).*\(os error \d+\)/,
        ],
        [
          stream,
          `${dir}/taken/sub`,
          /Cannot create the RAM dump directory ".*\/taken\/sub": .*Not a directory \(os error 20\)/,
        ],
        [
          long,
          `${dir}/dump`,
          /Cannot write RAM block "r{255}" to ".*\/dump\/r{255}\.bin": .*name too long \(os error 36\)/i,
        ],
      ];
      for (const [path, dump, message] of cases) {
        const { code, out, err } = await run([
          "incoming",
          `file:${path}`,
          "--ram-dump",
          dump,
          "--json",
        ]);
        assert.equal(code, 1, dump);
        const info = JSON.parse(out);
        assert.equal(info.status, "failed", dump);
        assert.match(info["error-desc"], message, dump);
        assert.match(err, message, dump);
        assert.doesNotMatch(err, /Cannot move/, dump);
      }
    } finally {
      await Deno.remove(stream);
      await Deno.remove(long);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli incoming -c events=on prints each MIGRATION event as QEMU's JSON line", async () => {
  const stream = new URL("../../fixtures/qemu/idle/stream.bin", import.meta.url)
    .pathname;
  const { code, err } = await run([
    "incoming",
    `file:${stream}`,
    "-c",
    "events=on",
  ]);
  assert.equal(code, 0, err);
  const events = err.split("\n").filter((line) => line.startsWith("{"));
  assert.deepEqual(
    events.map((line) => JSON.parse(line).data.status),
    ["setup", "active", "completed"],
  );
  for (const line of events) {
    assert.match(
      line,
      /^\{"timestamp": \{"seconds": \d+, "microseconds": \d+\}, "event": "MIGRATION", "data": \{"status": "\w+"\}\}$/,
    );
  }
});

Deno.test("cli incoming refuses a bad --progress or --idle-timeout with exit 2", async () => {
  const progress = await run([
    "incoming",
    "tcp:127.0.0.1:0",
    "--progress",
    "loud",
  ]);
  assert.equal(progress.code, 2);
  assert.match(
    progress.err,
    /--progress "loud": expected auto, tty, lines, off/,
  );
  const idle = await run([
    "incoming",
    "tcp:127.0.0.1:0",
    "--idle-timeout",
    "soon",
  ]);
  assert.equal(idle.code, 2);
  assert.match(idle.err, /--idle-timeout "soon"/);
});

Deno.test("cli incoming --idle-timeout fails a source that connects and sends nothing", async () => {
  const incoming = start([
    "incoming",
    "tcp:127.0.0.1:0",
    "--idle-timeout",
    "200ms",
    "--json",
  ]);
  const [, address] = await incoming.waitForErr(
    /waiting for a migration at (tcp:\S+)/,
  );
  const silent = await connectTransport(address!);
  try {
    const { code, out, err } = await incoming.done;
    assert.equal(code, 1);
    const info = JSON.parse(out);
    assert.equal(info.status, "failed");
    assert.match(
      info["error-desc"],
      /nothing arrived for 200 ms \(idle timeout\)/,
    );
    assert.match(err, /nothing arrived for 200 ms \(idle timeout\)/);
  } finally {
    await silent.close();
  }
});

Deno.test("cli incoming refuses a second source at once and completes the first", async () => {
  const incoming = start([
    "incoming",
    "tcp:127.0.0.1:0",
    "-c",
    "events=on",
    "--json",
  ]);
  const [, address] = await incoming.waitForErr(
    /waiting for a migration at (tcp:\S+)/,
  );
  const migrate = start([
    "migrate",
    address!,
    "--ram",
    "8MiB",
    "--prefill",
    "-p",
    "max-bandwidth=16MiB/s",
  ]);
  await incoming.waitForErr(/"data": \{"status": "active"\}/);
  const intruder = await connectTransport(address!);
  try {
    assert.deepEqual(await Array.fromAsync(intruder.readable), []);
    await incoming.waitForErr(
      /refused a connection from tcp:\S+ \(peer 127\.0\.0\.1:\d+\): a migration is in progress/,
    );
    const [source, destination] = await Promise.all([
      migrate.done,
      incoming.done,
    ]);
    assert.equal(source.code, 0, source.err);
    assert.equal(destination.code, 0, destination.err);
    assert.equal(JSON.parse(destination.out).status, "completed");
  } finally {
    await intruder.close();
  }
});

Deno.test("cli incoming refuses switchover-ack where no return path can be had, as QEMU does", async () => {
  for (
    const args of [
      ["exec:cat", "-c", "switchover-ack=on"],
      ["tcp:127.0.0.1:0", "-c", "switchover-ack=on", "-c", "return-path=off"],
    ]
  ) {
    const { code, err } = await run(["incoming", ...args]);
    assert.equal(code, 2, err);
    assert.match(
      err,
      /Capability 'switchover-ack' requires capability 'return-path'/,
    );
    assert.doesNotMatch(err, /waiting for a migration/);
  }
});
