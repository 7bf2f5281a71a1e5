/**
 * Golden tests over the streams recorded from real QEMU 7.2
 * (fixtures/qemu/<case>/stream.bin, made by `deno task qemu-fixtures`).
 */
import assert from "node:assert/strict";
import {
  analyzeMigrationStream,
  encodeMigrationRecords,
  type MigrationDecoderOptions,
  MigrationDecoderStream,
  StreamFormatError,
} from "../../mod.ts";
import { chunked, CHUNKINGS, chunks } from "../_helpers/chunking.ts";
import { assertGoldenText, firstDifference } from "../_helpers/golden.ts";
import { createPrng } from "../_helpers/prng.ts";

const FIXTURES = new URL("../../fixtures/qemu/", import.meta.url);
const LEGACY_WINDOW = [0xa0000, 0x100000] as const;

const cases: string[] = [];
for (const entry of Deno.readDirSync(FIXTURES)) {
  if (!entry.isDirectory) continue;
  try {
    Deno.statSync(new URL(`${entry.name}/stream.bin`, FIXTURES));
    cases.push(entry.name);
  } catch {
    // not a stream case (e.g. the firmware source)
  }
}
cases.sort();

Deno.test("QEMU fixtures are present", () => {
  for (const name of ["idle", "dirty", "xbzrle", "return-path"]) {
    assert.ok(
      cases.includes(name),
      `fixtures/qemu/${name}/stream.bin is missing`,
    );
  }
});

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

for (const name of cases) {
  const dir = new URL(`${name}/`, FIXTURES);
  const stream = Deno.readFileSync(new URL("stream.bin", dir));

  for (const chunking of CHUNKINGS) {
    Deno.test(`QEMU fixture "${name}" round-trips byte-identically (${chunking} chunks)`, async () => {
      const batches = await Array.fromAsync(
        chunked(stream, chunking, 11).pipeThrough(
          new MigrationDecoderStream({ kind: "file" }),
        ),
      );
      const bytes = encodeMigrationRecords(batches.flat());
      const at = firstDifference(bytes, stream);
      assert.equal(at, -1, `re-encoded bytes differ at offset ${at}`);
    });
  }

  Deno.test(`QEMU fixture "${name}" matches its analyze --json golden`, async () => {
    const { analysis } = await analyzeMigrationStream(
      ReadableStream.from([stream]),
      {
        checkXbzrle: true,
      },
    );
    await assertGoldenText(
      JSON.stringify(analysis, null, 2) + "\n",
      new URL("expected.json", dir),
    );
  });

  Deno.test(`QEMU fixture "${name}" agrees with QEMU's own counters`, async () => {
    const qemu = JSON.parse(await Deno.readTextFile(new URL("qemu.json", dir)));
    const { analysis } = await analyzeMigrationStream(
      ReadableStream.from([stream]),
    );
    assert.equal(analysis.ram.total, qemu.ram.total, "ram.total");
    assert.equal(analysis.ram.zero, qemu.ram.duplicate, "ram.duplicate");
    assert.equal(analysis.ram.normal, qemu.ram.normal, "ram.normal");
    const cache = qemu["xbzrle-cache"];
    if (cache) {
      // Hits that found the page unchanged send nothing and overflows go
      // out as PAGE, so records are at most hits minus overflows.
      assert.ok(
        analysis.ram.xbzrle <= cache.pages - cache.overflow,
        "xbzrle records",
      );
    }
  });

  Deno.test(`QEMU fixture "${name}" reproduces QEMU's final pc.ram`, async () => {
    const expected =
      (await Deno.readTextFile(new URL("ram.sha256", dir))).trim().split(
        /\s+/,
      )[0];
    const { ram } = await analyzeMigrationStream(
      ReadableStream.from([stream]),
      {
        keepRam: true,
      },
    );
    const pcRam = ram!.read("pc.ram");
    pcRam.fill(0, LEGACY_WINDOW[0], LEGACY_WINDOW[1]);
    assert.equal(await sha256Hex(pcRam), expected);
  });

  Deno.test(`QEMU fixture "${name}": every XBZRLE record re-encodes byte-identically`, async () => {
    const { analysis } = await analyzeMigrationStream(
      ReadableStream.from([stream]),
      {
        checkXbzrle: true,
      },
    );
    const check = analysis["check-xbzrle"]!;
    assert.equal(check.identical, check.records);
    if (name === "xbzrle") {
      assert.ok(check.records > 0, "the xbzrle case has XBZRLE records");
    }
  });
}

/**
 * The ways bytes past the end are cut for the trailing-bytes tests: whole,
 * seeded random sizes, and from the device tail on (where the decoder
 * looks for the end) one byte or 7 bytes per chunk.
 */
const TRAILING_CHUNKINGS = ["whole", "random", "1-byte tail", "7-byte tail"];

function cut(bytes: Uint8Array, how: string, tailAt: number): Uint8Array[] {
  if (how === "whole") return [bytes];
  if (how === "random") return chunks(bytes, "random", 7, 512);
  const size = how === "1-byte tail" ? 1 : 7;
  const out = [bytes.subarray(0, tailAt)];
  for (let at = tailAt; at < bytes.byteLength; at += size) {
    out.push(bytes.subarray(at, at + size));
  }
  return out;
}

async function decodeAs(
  options: MigrationDecoderOptions,
  pieces: Uint8Array[],
): Promise<Uint8Array> {
  const batches = await Array.fromAsync(
    ReadableStream.from(pieces).pipeThrough(
      new MigrationDecoderStream(options),
    ),
  );
  return encodeMigrationRecords(batches.flat());
}

for (const name of cases) {
  const stream = Deno.readFileSync(new URL(`${name}/stream.bin`, FIXTURES));
  const { analysis } = await analyzeMigrationStream(
    ReadableStream.from([stream]),
  );
  const tailAt = analysis["device-tail"]?.offset ??
    stream.byteLength - 48 * 1024;
  const suffixes: [string, Uint8Array][] = [
    ["trailing garbage", createPrng(3).fill(new Uint8Array(333))],
    // Issue 10's reproduction, for idle: bytes [103803, 104984) again.
    ["a copy of its last 1181 bytes", stream.slice(stream.byteLength - 1181)],
    ["a copy of its device tail", stream.slice(tailAt)],
  ];
  for (const [what, suffix] of suffixes) {
    const bytes = new Uint8Array(stream.byteLength + suffix.byteLength);
    bytes.set(stream);
    bytes.set(suffix, stream.byteLength);
    for (const how of TRAILING_CHUNKINGS) {
      Deno.test(`QEMU fixture "${name}" followed by ${what}: a file fails right after the vmdesc, a live stream ends there (${how} chunks)`, async () => {
        await assert.rejects(
          decodeAs({ kind: "file" }, cut(bytes, how, tailAt)),
          (error) =>
            error instanceof StreamFormatError &&
            error.offset === stream.byteLength &&
            /bytes follow the end of the stream \(after the vmdesc\)/.test(
              error.message,
            ),
        );
        for (const deviceState of ["opaque", "walk"] as const) {
          const live = await decodeAs(
            { kind: "live", deviceState },
            cut(bytes, how, tailAt),
          );
          const at = firstDifference(live, stream);
          assert.equal(at, -1, `live ${deviceState} records differ at ${at}`);
        }
      });
    }
  }
}
