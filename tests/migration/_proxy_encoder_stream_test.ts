import assert from "node:assert/strict";
import {
  concatBytes,
  MigrationEncoderStream,
  type MigrationRecord,
} from "../../mod.ts";
import { ProxyEncoderStream } from "../../lib/migration/_proxy_encoder_stream.ts";

Deno.test("ProxyEncoderStream cuts a chunk after urgent data and passes the device tail as it came", async () => {
  const tail = new Uint8Array([4, 0, 0, 0, 1]);
  const records: MigrationRecord[] = [
    { type: "header", version: 3 },
    { type: "configuration", machine: "pc" },
    { type: "command", command: "PING", value: 1 },
    { type: "eof" },
  ];
  const numbered: Uint8Array[] = [];
  const pacing = {
    chunk(bytes: Uint8Array): Uint8Array {
      numbered.push(bytes);
      return bytes;
    },
    encoded: (record: MigrationRecord) => record.type === "command",
  };
  const chunks = await Array.fromAsync(
    ReadableStream.from<readonly MigrationRecord[]>([
      [...records, { type: "device-tail", data: tail }],
    ])
      .pipeThrough(new ProxyEncoderStream(pacing, 1 << 20)),
  );
  assert.deepEqual(chunks, numbered, "every chunk is numbered");
  assert.equal(chunks.length, 3, "cut after PING, then EOF, then the tail");
  assert.equal(chunks[2], tail, "the device tail is not copied");
  const plain = await Array.fromAsync(
    ReadableStream.from([records]).pipeThrough(new MigrationEncoderStream()),
  );
  assert.deepEqual(concatBytes(chunks), concatBytes([...plain, tail]));
});
