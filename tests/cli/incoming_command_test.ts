import assert from "node:assert/strict";
import { encodeMigrationRecords } from "../../mod.ts";
import { run, tempFile } from "./_cli.ts";

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
