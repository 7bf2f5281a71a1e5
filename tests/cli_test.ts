import assert from "node:assert/strict";
import { main } from "../cli.ts";
import { encodeMigrationRecords, type MigrationRecord } from "../mod.ts";
import { captureIo } from "./_helpers/capture_io.ts";

const FIXTURES = new URL("../fixtures/qemu/", import.meta.url);

async function run(args: string[]) {
  const io = captureIo();
  const code = await main(args, io);
  return { code, out: io.out, err: io.err };
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    bytes as Uint8Array<ArrayBuffer>,
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

async function tempFile(bytes: Uint8Array): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".mig" });
  await Deno.writeFile(path, bytes);
  return path;
}

Deno.test("cli analyze prints a human summary of a QEMU stream", async () => {
  const { code, out } = await run([
    "analyze",
    new URL("dirty/stream.bin", FIXTURES).pathname,
  ]);
  assert.equal(code, 0);
  assert.match(out, /^QEMU migration stream, version 3, \d+ bytes$/m);
  assert.match(out, /^machine {7}pc-i440fx-7\.2, page size 4096$/m);
  assert.match(out, /^ {2}pc\.ram +16777216 +\d+ +\d+ +0$/m);
  assert.match(out, /^devices +27 sections/m);
  assert.match(out, /^ {2}globalstate \(0\) +v1 +104 bytes$/m);
  assert.match(out, /^vmdesc +\d+ bytes, 27 devices$/m);
});

Deno.test("cli analyze --json prints the summary as the last line", async () => {
  const path = new URL("return-path/stream.bin", FIXTURES).pathname;
  const { code, out } = await run(["analyze", path, "--json"]);
  assert.equal(code, 0);
  const json = JSON.parse(out.trimEnd().split("\n").at(-1)!);
  const expected = JSON.parse(
    await Deno.readTextFile(new URL("return-path/expected.json", FIXTURES)),
  );
  delete expected["check-xbzrle"];
  assert.deepEqual(json, expected);
  assert.deepEqual(json.commands, { OPEN_RETURN_PATH: 1, PING: 1 });
});

Deno.test("cli analyze --extract-ram writes every block, pc.ram equal to QEMU's", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = new URL("xbzrle/stream.bin", FIXTURES).pathname;
    const { code } = await run([
      "analyze",
      path,
      "--extract-ram",
      dir,
      "--json",
    ]);
    assert.equal(code, 0);
    const names = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name)
      .sort();
    assert.deepEqual(names, ["pc.bios.bin", "pc.ram.bin", "pc.rom.bin"]);
    const ram = await Deno.readFile(`${dir}/pc.ram.bin`);
    assert.equal(ram.byteLength, 16 * 1024 * 1024);
    ram.fill(0, 0xa0000, 0x100000);
    const expected =
      (await Deno.readTextFile(new URL("xbzrle/ram.sha256", FIXTURES))).trim();
    assert.equal(await sha256Hex(ram), expected.split(/\s+/)[0]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli analyze --extract-ram names files after the block idstr", async () => {
  const dir = await Deno.makeTempDir();
  const page = new Uint8Array(4096).fill(0x5a);
  const path = await tempFile(encodeMigrationRecords([
    { type: "header", version: 3 },
    {
      type: "section-start",
      sectionId: 2,
      idstr: "ram",
      instanceId: 0,
      versionId: 4,
    },
    {
      type: "ram-mem-size",
      blocks: [{ idstr: "/rom@etc/acpi/tables", usedLength: 8192 }],
    },
    {
      type: "ram-page",
      block: "/rom@etc/acpi/tables",
      offset: 4096,
      data: page,
    },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "eof" },
    {
      type: "vmdesc",
      data: new TextEncoder().encode('{"page_size":4096,"devices":[]}'),
      document: { "page_size": 4096, devices: [] },
    },
  ]));
  try {
    const { code, out } = await run(["analyze", path, "--extract-ram", dir]);
    assert.equal(code, 0, out);
    const file = await Deno.readFile(`${dir}/_rom_etc_acpi_tables.bin`);
    assert.equal(file.byteLength, 8192);
    assert.deepEqual(file.subarray(4096), page);
    assert.ok(file.subarray(0, 4096).every((b) => b === 0));
    assert.match(out, /wrote .*_rom_etc_acpi_tables\.bin/);
  } finally {
    await Deno.remove(dir, { recursive: true });
    await Deno.remove(path);
  }
});

Deno.test("cli analyze --dump state decodes device fields through the vmdesc", async () => {
  const path = new URL("idle/stream.bin", FIXTURES).pathname;
  const { code, out } = await run([
    "analyze",
    path,
    "--dump",
    "state",
    "--json",
  ]);
  assert.equal(code, 0);
  const json = JSON.parse(out.trimEnd().split("\n").at(-1)!);
  const key = Object.keys(json.state).find((k) =>
    k.startsWith("globalstate (")
  )!;
  assert.ok(key, "globalstate is dumped");
  assert.equal(json.state[key].size, "0x00000008");
});

Deno.test("cli analyze --check-xbzrle reports every QEMU record identical", async () => {
  const path = new URL("xbzrle/stream.bin", FIXTURES).pathname;
  const { code, out } = await run([
    "analyze",
    path,
    "--check-xbzrle",
    "--json",
  ]);
  assert.equal(code, 0);
  const json = JSON.parse(out.trimEnd().split("\n").at(-1)!);
  assert.ok(json["check-xbzrle"].records > 0);
  assert.equal(json["check-xbzrle"].identical, json["check-xbzrle"].records);
});

Deno.test("cli analyze --check-xbzrle exits 1 on a valid delta that QEMU would not write", async () => {
  const records: MigrationRecord[] = [
    { type: "header", version: 3 },
    {
      type: "section-start",
      sectionId: 2,
      idstr: "ram",
      instanceId: 0,
      versionId: 4,
    },
    { type: "ram-mem-size", blocks: [{ idstr: "pc.ram", usedLength: 4096 }] },
    // Rewrites byte 0 with its old value: valid, but QEMU's encoder skips it.
    {
      type: "ram-xbzrle",
      block: "pc.ram",
      offset: 0,
      delta: new Uint8Array([0, 2, 0, 0xbb]),
    },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "eof" },
  ];
  const path = await tempFile(encodeMigrationRecords(records));
  try {
    const { code, out } = await run(["analyze", path, "--check-xbzrle"]);
    assert.equal(code, 1);
    assert.match(out, /check-xbzrle +0 of 1 XBZRLE records/);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("cli analyze reports a corrupt stream with its offset and exits 1", async () => {
  const bytes = await Deno.readFile(new URL("idle/stream.bin", FIXTURES));
  bytes[8] = 0x09; // where CONFIGURATION starts
  const path = await tempFile(bytes);
  try {
    const { code, err } = await run(["analyze", path]);
    assert.equal(code, 1);
    assert.match(err, /offset 8/);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("cli analyze exits 1 on a missing file and 2 on usage errors", async () => {
  assert.equal((await run(["analyze", "/nonexistent/stream.bin"])).code, 1);
  const noFile = await run(["analyze"]);
  assert.equal(noFile.code, 2);
  assert.match(noFile.err, /analyze needs a FILE/);
  const badFlag = await run(["analyze", "x", "--frobnicate"]);
  assert.equal(badFlag.code, 2);
  assert.match(badFlag.err, /frobnicate/);
  const badDump = await run(["analyze", "x", "--dump", "ram"]);
  assert.equal(badDump.code, 2);
  assert.match(badDump.err, /--dump accepts only "state"/);
});

Deno.test("cli prints help and refuses unknown commands", async () => {
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.out, /Usage: livemig <command>/);
  const analyzeHelp = await run(["analyze", "--help"]);
  assert.equal(analyzeHelp.code, 0);
  assert.match(analyzeHelp.out, /--extract-ram DIR/);
  const unknown = await run(["frob"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.err, /Unknown command "frob"/);
});

Deno.test("cli convert turns a QEMU stream into a mapped-ram file and back with identical RAM", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const stream = new URL("dirty/stream.bin", FIXTURES).pathname;
    const toMapped = await run([
      "convert",
      stream,
      `${dir}/guest.mr`,
      "--to",
      "mapped-ram",
    ]);
    assert.equal(toMapped.code, 0, toMapped.err);
    const analysis = await run(["analyze", `${dir}/guest.mr`, "--json"]);
    assert.equal(analysis.code, 0, analysis.err);
    const json = JSON.parse(analysis.out.trimEnd().split("\n").at(-1)!);
    assert.equal(json.format, "mapped-ram");
    const human = await run(["analyze", `${dir}/guest.mr`]);
    assert.match(human.out, /^QEMU mapped-ram file, version 3/);
    assert.ok(json.capabilities.includes("mapped-ram"));
    const back = await run([
      "convert",
      `${dir}/guest.mr`,
      `${dir}/back.bin`,
      "--to",
      "stream",
    ]);
    assert.equal(back.code, 0, back.err);
    const extracted = await run([
      "analyze",
      `${dir}/back.bin`,
      "--extract-ram",
      `${dir}/ram`,
    ]);
    assert.equal(extracted.code, 0, extracted.err);
    const ram = await Deno.readFile(`${dir}/ram/pc.ram.bin`);
    ram.fill(0, 0xa0000, 0x100000);
    const expected =
      (await Deno.readTextFile(new URL("dirty/ram.sha256", FIXTURES))).trim();
    assert.equal(await sha256Hex(ram), expected.split(/\s+/)[0]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli convert refuses bad arguments and non-mapped-ram input", async () => {
  assert.equal((await run(["convert", "a"])).code, 2);
  const noTo = await run(["convert", "a", "b"]);
  assert.equal(noTo.code, 2);
  assert.match(noTo.err, /--to mapped-ram or --to stream/);
  assert.match(
    (await run(["convert", "a", "b", "--to", "zip"])).err,
    /received "zip"/,
  );
  const stream = new URL("idle/stream.bin", FIXTURES).pathname;
  const dir = await Deno.makeTempDir();
  try {
    const wrong = await run(["convert", stream, `${dir}/x`, "--to", "stream"]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.err, /not a mapped-ram file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli migrate, incoming and demo exit 2 naming the bad argument", async () => {
  const cases: [string[], RegExp][] = [
    [["migrate"], /migrate needs a URI/],
    [["migrate", "vsock:1:2"], /"vsock:1:2".*not supported/],
    [["migrate", "tcp:nohost"], /"tcp:nohost": a port is required/],
    [
      ["migrate", "tcp:127.0.0.1:1", "-c", "compress=on"],
      /"compress"/,
    ],
    [
      ["migrate", "tcp:127.0.0.1:1", "-p", "max-bandwidth=fast"],
      /"max-bandwidth" "fast"/,
    ],
    [
      ["migrate", "tcp:127.0.0.1:1", "-p", "downtime-limit=-5"],
      /"downtime-limit" "-5"/,
    ],
    [
      [
        "migrate",
        "tcp:127.0.0.1:1",
        "--postcopy-after=-1",
        "-c",
        "postcopy-ram=on",
      ],
      /--postcopy-after "-1"/,
    ],
    [
      ["migrate", "tcp:127.0.0.1:1", "--postcopy-after", "2"],
      /needs -c postcopy-ram=on/,
    ],
    [["migrate", "tcp:127.0.0.1:1", "--ram", "12 apples"], /--ram "12 apples"/],
    [["migrate", "tcp:127.0.0.1:1", "--workload", "spin"], /workload "spin"/],
    [["migrate", "tcp:127.0.0.1:1", "--frob"], /--frob/],
    [["incoming", "rdma:1.2.3.4:5"], /"rdma:1.2.3.4:5".*not supported/],
    [["incoming", "tcp:127.0.0.1:0", "--max-ram", "x"], /--max-ram "x"/],
    [["demo", "extra"], /demo takes no positional arguments/],
    [["demo", "--seed", "abc"], /--seed "abc"/],
    [
      ["demo", "-c", "pause-before-switchover=on"],
      /demo cannot continue from pre-switchover/,
    ],
  ];
  for (const [args, message] of cases) {
    const result = await run(args);
    assert.equal(result.code, 2, args.join(" "));
    assert.match(result.err, message, args.join(" "));
  }
});

Deno.test("cli run, qmp and migrate's monitor exit 2 naming the bad argument", async () => {
  const cases: [string[], RegExp][] = [
    [["run", "--incoming", "defer"], /defer needs --qmp ADDRESS/],
    [["run", "--qmp", "exec:cat"], /unix:PATH or tcp:HOST:PORT/],
    [["run", "--qmp", "tcp:127.0.0.1:0", "--incoming", "tcp:x"], /"tcp:x"/],
    [["run", "--qmp", "tcp:127.0.0.1:0", "extra"], /no positional/],
    [["run", "--incoming", "file:/tmp/guest.mig"], /no file: migration/],
    [["qmp", "/tmp/x.sock"], /qmp needs a SOCKET and a COMMAND/],
    [["qmp", "/tmp/x.sock", "migrate", "[1]"], /must be a JSON object/],
    [["qmp", "/tmp/x.sock", "stop", "--timeout", "soon"], /--timeout "soon"/],
    [
      ["migrate", "tcp:127.0.0.1:1", "-c", "pause-before-switchover=on"],
      /pause-before-switchover=on needs --qmp ADDRESS/,
    ],
  ];
  for (const [args, message] of cases) {
    const result = await run(args);
    assert.equal(result.code, 2, args.join(" "));
    assert.match(result.err, message, args.join(" "));
  }
});
