import assert from "node:assert/strict";
import {
  analyzeMigrationStream,
  encodeMigrationRecords,
  type MigrationRecord,
} from "../../mod.ts";
import { chunks } from "../_helpers/chunking.ts";

const PAGES = 600;

function stream(): Uint8Array {
  const records: MigrationRecord[] = [
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
      blocks: [{ idstr: "pc.ram", usedLength: PAGES * 4096 }],
    },
  ];
  for (let page = 0; page < PAGES; page++) {
    records.push({
      type: "ram-page",
      block: "pc.ram",
      offset: page * 4096,
      data: new Uint8Array(4096).fill(page & 0xff),
    });
  }
  records.push(
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "eof" },
  );
  return encodeMigrationRecords(records);
}

Deno.test("analyzeMigrationStream() counts the bytes read and reports progress at most every megabyte", async () => {
  const bytes = stream();
  const parts = chunks(bytes, "random", 7, 64 * 1024);
  const expected: number[] = [];
  let total = 0;
  let reported = 0;
  for (const part of parts) {
    total += part.byteLength;
    if (total - reported >= 1 << 20) expected.push(reported = total);
  }
  const progress: number[] = [];
  const { analysis } = await analyzeMigrationStream(
    ReadableStream.from(parts),
    {
      decoder: { vmdesc: false },
      onProgress: (count) => progress.push(count),
    },
  );
  assert.equal(analysis.bytes, bytes.byteLength);
  assert.ok(expected.length >= 2);
  assert.deepEqual(progress, expected);
  assert.equal(analysis.ram.normal, PAGES);
});
