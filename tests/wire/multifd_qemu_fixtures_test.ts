/**
 * Tests over the multifd migrations recorded from real QEMU 7.2
 * (fixtures/qemu-multifd/<case>/, made by `deno task qemu-multifd-fixtures`).
 */
import assert from "node:assert/strict";
import {
  concatBytes,
  encodeMultifdChannelRecord,
  MigrationDecoderStream,
  MULTIFD_FLAG,
  MultifdChannelDecoderStream,
  type MultifdChannelRecord,
  type MultifdCompression,
  type MultifdPacket,
  MultifdPageCompressor,
  MultifdPageDecompressor,
} from "../../mod.ts";
import { chunked, CHUNKINGS } from "../_helpers/chunking.ts";
import { firstDifference } from "../_helpers/golden.ts";
import { rebuildMultifdRam } from "../_helpers/multifd_ram.ts";

const FIXTURES = new URL("../../fixtures/qemu-multifd/", import.meta.url);
const CASES = ["none-2", "none-4", "zlib-2", "zlib-4", "zstd-2", "zstd-4"];
const LEGACY_WINDOW = [0xa0000, 0x100000] as const;
const HEADER_SIZE = 1344;

interface Fixture {
  name: string;
  compression: MultifdCompression;
  main: Uint8Array;
  channels: Uint8Array[];
  qemu: { ram: Record<string, number> };
  scenario: { observed: { connectionOrder: string[] } };
  ramSha256: string;
}

function load(name: string): Fixture {
  const dir = new URL(`${name}/`, FIXTURES);
  const count = Number(name.split("-")[1]);
  return {
    name,
    compression: name.split("-")[0] as MultifdCompression,
    main: Deno.readFileSync(new URL("main.bin", dir)),
    channels: Array.from(
      { length: count },
      (_, id) => Deno.readFileSync(new URL(`channel-${id}.bin`, dir)),
    ),
    qemu: JSON.parse(Deno.readTextFileSync(new URL("qemu.json", dir))),
    scenario: JSON.parse(Deno.readTextFileSync(new URL("scenario.json", dir))),
    ramSha256: Deno.readTextFileSync(new URL("ram.sha256", dir)).trim(),
  };
}

async function decode(bytes: Uint8Array): Promise<MultifdChannelRecord[]> {
  return await Array.fromAsync(
    ReadableStream.from([bytes]).pipeThrough(new MultifdChannelDecoderStream()),
  );
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

Deno.test("QEMU multifd fixtures are present", () => {
  for (const name of CASES) {
    for (
      const file of ["main.bin", "channel-0.bin", "channel-1.bin", "ram.sha256"]
    ) {
      Deno.statSync(new URL(`${name}/${file}`, FIXTURES));
    }
  }
  Deno.statSync(new URL("refusals.json", FIXTURES));
});

for (const name of CASES) {
  const fixture = load(name);

  for (const [id, bytes] of fixture.channels.entries()) {
    for (const chunking of CHUNKINGS) {
      Deno.test(`QEMU multifd fixture "${name}" channel ${id} round-trips byte-identically (${chunking} chunks)`, async () => {
        const records = await Array.fromAsync(
          chunked(bytes, chunking, id + 1).pipeThrough(
            new MultifdChannelDecoderStream({
              compression: fixture.compression,
            }),
          ),
        );
        const encoded = concatBytes(
          records.map((r) => encodeMultifdChannelRecord(r)),
        );
        const at = firstDifference(encoded, bytes);
        assert.equal(at, -1, `re-encoded bytes differ at offset ${at}`);
      });
    }
  }

  Deno.test(`QEMU multifd fixture "${name}": each channel names its id and the all-zero UUID, then starts with the setup round's empty SYNC`, async () => {
    for (const [id, bytes] of fixture.channels.entries()) {
      const [initial, first] = await decode(bytes);
      assert.deepEqual(initial, {
        type: "multifd-initial",
        uuid: "00000000-0000-0000-0000-000000000000",
        channelId: id,
      });
      const packet = first as MultifdPacket;
      assert.equal(packet.flags, MULTIFD_FLAG.SYNC);
      assert.equal(packet.offsets.length, 0);
      assert.equal(packet.ramBlock, "");
      assert.equal(packet.nextPacketSize, 0);
      assert.equal(packet.pagesAlloc, 128);
    }
    assert.equal(fixture.scenario.observed.connectionOrder[0], "main");
  });

  Deno.test(`QEMU multifd fixture "${name}": the main stream carries ZERO records only, and one RAM EOS per SYNC`, async () => {
    const records = (await Array.fromAsync(
      ReadableStream.from([fixture.main]).pipeThrough(
        new MigrationDecoderStream({ kind: "file" }),
      ),
    )).flat();
    const count = (type: string) =>
      records.filter((r) => r.type === type).length;
    assert.equal(count("ram-page"), 0);
    assert.equal(count("ram-xbzrle"), 0);
    assert.equal(count("ram-zero"), fixture.qemu.ram.duplicate);
    for (const bytes of fixture.channels) {
      const syncs = (await decode(bytes)).filter((r) =>
        r.type === "multifd-packet" && (r.flags & MULTIFD_FLAG.SYNC) !== 0
      ).length;
      assert.equal(syncs, count("ram-eos"));
    }
  });

  Deno.test(`QEMU multifd fixture "${name}" agrees with QEMU's normal and multifd-bytes counters`, async () => {
    let pages = 0;
    let packets = 0;
    for (const bytes of fixture.channels) {
      for (const record of (await decode(bytes)).slice(1)) {
        packets++;
        pages += (record as MultifdPacket).offsets.length;
      }
    }
    assert.equal(pages, fixture.qemu.ram.normal);
    // QEMU counts every packet's header and its pages uncompressed; the
    // initial packets are not counted.
    assert.equal(
      fixture.qemu.ram["multifd-bytes"],
      packets * HEADER_SIZE + pages * 4096,
    );
  });

  Deno.test(`QEMU multifd fixture "${name}": a SYNC packet that carries pages is followed by an empty packet with its number`, async () => {
    for (const bytes of fixture.channels) {
      const packets = (await decode(bytes)).slice(1) as MultifdPacket[];
      packets.forEach((packet, i) => {
        if (
          !(packet.flags & MULTIFD_FLAG.SYNC) || packet.offsets.length === 0
        ) {
          return;
        }
        const next = packets[i + 1]!;
        assert.equal(next.packetNum, packet.packetNum);
        assert.equal(next.flags, 0);
        assert.equal(next.offsets.length, 0);
      });
    }
  });

  Deno.test(`QEMU multifd fixture "${name}" rebuilds QEMU's final pc.ram`, async () => {
    const { image, stats } = await rebuildMultifdRam(fixture);
    assert.equal(stats.conflicts, 0);
    const pcRam = image.read("pc.ram");
    pcRam.fill(0, LEGACY_WINDOW[0], LEGACY_WINDOW[1]);
    assert.equal(await sha256Hex(pcRam), fixture.ramSha256);
  });
}

Deno.test("QEMU multifd fixtures hold SYNC packets that carry pages", async () => {
  // The sync request can reach a channel that still has a batch queued:
  // its thread then sends the batch with the SYNC flag and the sync's
  // packet number, and an empty packet after it.
  let found = 0;
  for (const name of CASES) {
    for (const bytes of load(name).channels) {
      for (const record of (await decode(bytes)).slice(1)) {
        const packet = record as MultifdPacket;
        if (packet.flags & MULTIFD_FLAG.SYNC && packet.offsets.length > 0) {
          found++;
        }
      }
    }
  }
  assert.ok(found > 0);
});

for (const name of ["zstd-2", "zstd-4"]) {
  Deno.test(`QEMU multifd fixture "${name}": MultifdPageCompressor re-compresses every packet into QEMU's bytes`, async () => {
    for (const bytes of load(name).channels) {
      const compressor = new MultifdPageCompressor("zstd");
      const decompressor = new MultifdPageDecompressor("zstd");
      try {
        for (const record of (await decode(bytes)).slice(1)) {
          const packet = record as MultifdPacket;
          if (packet.offsets.length === 0) continue;
          const pages = await decompressor.decompress(
            packet.data,
            packet.offsets.length,
          );
          const again = await compressor.compress(
            packet.offsets.map((_, i) =>
              pages.subarray(i * 4096, (i + 1) * 4096)
            ),
          );
          assert.deepEqual(again, packet.data);
        }
      } finally {
        compressor.close();
        decompressor.close();
      }
    }
  });
}
