import assert from "node:assert/strict";
import { encodeMigrationRecords, type MigrationRecord } from "../../mod.ts";
import { run, tempFile } from "./_cli.ts";

const ESC = "\x1b";

/** A small valid stream whose machine, block and device names hold `odd`. */
function streamNamed(odd: string): Uint8Array {
  const vmdesc = {
    "page_size": 4096,
    devices: [{
      name: `dev${odd}`,
      "instance_id": 0,
      "vmsd_name": "dev",
      version: 1,
      fields: [],
    }],
  };
  const records: MigrationRecord[] = [
    { type: "header", version: 3 },
    { type: "configuration", machine: `pc${odd}` },
    {
      type: "section-start",
      sectionId: 2,
      idstr: "ram",
      instanceId: 0,
      versionId: 4,
    },
    {
      type: "ram-mem-size",
      blocks: [{ idstr: `ram${odd}`, usedLength: 4096 }],
    },
    { type: "ram-zero", block: `ram${odd}`, offset: 0, fill: 0 },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    {
      type: "section-full",
      sectionId: 3,
      idstr: `dev${odd}`,
      instanceId: 0,
      versionId: 1,
    },
    {
      type: "device-state",
      sectionId: 3,
      idstr: `dev${odd}`,
      instanceId: 0,
      data: new Uint8Array(),
    },
    { type: "section-footer", sectionId: 3 },
    { type: "eof" },
    {
      type: "vmdesc",
      data: new TextEncoder().encode(JSON.stringify(vmdesc)),
      document: vmdesc,
    },
  ];
  return encodeMigrationRecords(records);
}

Deno.test("cli analyze prints names from the stream escaped", async () => {
  const path = await tempFile(streamNamed(`${ESC}[31m\u202e`));
  try {
    const { code, out, err } = await run(["analyze", path]);
    assert.equal(code, 0, err);
    assert.ok(!out.includes(ESC) && !out.includes("\u202e"), out);
    assert.match(out, /machine +pc\\x1b\[31m\\u\{202e\}, page size 4096/);
    assert.match(out, /\n +ram\\x1b\[31m\\u\{202e\} +4096 +1 +0 +0\n/);
    assert.match(out, /\n +dev\\x1b\[31m\\u\{202e\} \(0\) +v1 +0 bytes\n/);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("cli analyze escapes a name from the stream in its error", async () => {
  const path = await tempFile(encodeMigrationRecords([
    { type: "header", version: 3 },
    {
      type: "section-start",
      sectionId: 2,
      idstr: `${ESC}]0;owned${"\x07"}`,
      instanceId: 0,
      versionId: 4,
    },
  ]));
  try {
    const { code, err } = await run(["analyze", path]);
    assert.equal(code, 1);
    assert.ok(!err.includes(ESC), err);
    assert.match(err, /"\\x1b\]0;owned\\x07"/);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("cli analyze --offset reads a stream that starts inside the file", async () => {
  const stream = await Deno.readFile(
    new URL("../../fixtures/qemu/idle/stream.bin", import.meta.url),
  );
  const bytes = new Uint8Array(4096 + stream.byteLength);
  bytes.fill(0xee, 0, 4096);
  bytes.set(stream, 4096);
  const path = await tempFile(bytes);
  try {
    const at = await run(["analyze", path, "--offset", "4096", "--json"]);
    assert.equal(at.code, 0, at.err);
    const analysis = JSON.parse(at.out);
    assert.equal(analysis.machine, "pc-i440fx-7.2");
    assert.equal(analysis.bytes, stream.byteLength);
    assert.equal((await run(["analyze", path, "--offset", "4K"])).code, 0);
    assert.equal((await run(["analyze", path])).code, 1);
    const bad = await run(["analyze", path, "--offset", "far"]);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--offset "far"/);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("cli analyze --offset reads a mapped-ram file written at an offset", async () => {
  const path = await Deno.makeTempFile({ suffix: ".mr" });
  try {
    const written = await run([
      "migrate",
      `file:${path},offset=8192`,
      "--ram",
      "1MiB",
      "--prefill",
      "-c",
      "mapped-ram=on",
    ]);
    assert.equal(written.code, 0, written.err);
    const { code, out, err } = await run([
      "analyze",
      path,
      "--offset",
      "8192",
      "--json",
    ]);
    assert.equal(code, 0, err);
    const analysis = JSON.parse(out);
    assert.equal(analysis.format, "mapped-ram");
    assert.equal(analysis.ram.normal, 256);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("cli analyze --json writes names from the stream with C1 and bidi controls escaped", async () => {
  const odd = "\x9b31m\u202e";
  const path = await tempFile(streamNamed(odd));
  try {
    const { code, out, err } = await run(["analyze", path, "--json"]);
    assert.equal(code, 0, err);
    assert.ok(!out.includes("\x9b") && !out.includes("\u202e"), out);
    const analysis = JSON.parse(out);
    assert.equal(analysis.machine, `pc${odd}`);
    assert.equal(analysis.ram.blocks[0].name, `ram${odd}`);
  } finally {
    await Deno.remove(path);
  }
});
