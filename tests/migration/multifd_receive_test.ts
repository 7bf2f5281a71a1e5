/**
 * The destination's multifd channels, fed with recorded QEMU 7.2 multifd
 * migrations (fixtures/qemu-multifd/) over loopback TCP: every case loads
 * QEMU's RAM whatever order the connections arrive in, and a destination
 * set up differently from the source fails with an error that says so.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  DestinationMigration,
  type DestinationMultifdOptions,
  listenForMigration,
  MigrationAbortedError,
  MigrationProtocolError,
  NotSupportedError,
} from "../../mod.ts";
import { sha256Hex, zeroLegacyWindow } from "../_helpers/qemu.ts";

const FIXTURES = new URL("../../fixtures/qemu-multifd/", import.meta.url);

interface Recording {
  main: Uint8Array;
  channels: Uint8Array[];
  ramSha256: string;
}

function recording(name: string): Recording {
  const dir = new URL(`${name}/`, FIXTURES);
  const channels: Uint8Array[] = [];
  for (let id = 0;; id++) {
    try {
      channels.push(Deno.readFileSync(new URL(`channel-${id}.bin`, dir)));
    } catch {
      break;
    }
  }
  return {
    main: Deno.readFileSync(new URL("main.bin", dir)),
    channels,
    ramSha256: Deno.readTextFileSync(new URL("ram.sha256", dir)).trim(),
  };
}

/** Connects to `address` and sends `bytes`, then waits for the close. */
async function send(address: string, bytes: Uint8Array): Promise<void> {
  const port = Number(address.slice(address.lastIndexOf(":") + 1));
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    try {
      for (let at = 0; at < bytes.byteLength;) {
        at += await conn.write(bytes.subarray(at));
      }
    } catch { /* the destination closed it: it failed */ }
    let n: number | null = 0;
    while (n !== null) {
      n = await conn.read(new Uint8Array(64)).catch(() => null);
    }
  } finally {
    try {
      conn.close();
    } catch { /* closed already */ }
  }
}

/**
 * Replays `rec` into a destination set up with `multifd`, connecting the
 * connections one after the other in `order` (-1: the main one).
 */
async function replay(
  rec: Recording,
  multifd: DestinationMultifdOptions,
  order: number[],
) {
  const destination = new DestinationMigration({ autostart: false, multifd });
  const listener = await listenForMigration(destination, "tcp:127.0.0.1:0");
  try {
    const loading = listener.incoming();
    loading.catch(() => {});
    const senders: Promise<void>[] = [];
    for (const at of order) {
      const bytes = at < 0 ? rec.main : rec.channels[at]!;
      senders.push(send(listener.address, bytes));
      // The next connection arrives after this one.
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    try {
      return await loading;
    } finally {
      await Promise.all(senders);
    }
  } finally {
    await listener.close();
  }
}

for (
  const name of ["none-2", "none-4", "zlib-2", "zlib-4", "zstd-2", "zstd-4"]
) {
  Deno.test(`multifd destination loads QEMU 7.2's ${name} with QEMU's RAM`, async () => {
    const rec = recording(name);
    const [compression, channels] = name.split("-") as [
      "none" | "zlib" | "zstd",
      string,
    ];
    // Channels first, in reverse, then the main connection: each is told by
    // its first bytes, not by the order.
    const order = [...rec.channels.keys()].reverse().concat(-1);
    const result = await replay(rec, {
      channels: Number(channels),
      compression,
    }, order);
    assert.equal(result.info.status, "completed");
    const ram = result.guest.memory.block("pc.ram").bytes;
    const image = zeroLegacyWindow(ram.slice(0, 16 << 20));
    assert.equal(await sha256Hex(image), rec.ramSha256);
    assert.ok(result.info.ram!.normal > 0);
    assert.ok(result.info.ram!["multifd-bytes"] > 0);
  });
}

Deno.test("multifd destination expecting more channels fails once they do not connect", async () => {
  const rec = recording("none-2");
  await assert.rejects(
    replay(rec, { channels: 3, connectTimeoutMs: 300 }, [-1, 0, 1]),
    (error) =>
      error instanceof MigrationProtocolError &&
      error.message ===
        "Cannot start the multifd migration: 3 of 4 connections arrived within 300 ms (the source must have multifd on with multifd-channels=3)",
  );
});

Deno.test("multifd destination refuses a channel id beyond its channels", async () => {
  const rec = recording("none-2");
  await assert.rejects(
    replay(rec, { channels: 1 }, [-1, 1]),
    (error) =>
      error instanceof MigrationAbortedError &&
      /Cannot accept multifd channel 1 from .*: this destination has multifd-channels=1 \(ids 0 to 0\)/
        .test(error.message),
  );
});

Deno.test("multifd destination expecting another compression fails at the first page packet", async () => {
  const rec = recording("none-2");
  await assert.rejects(
    replay(rec, { channels: 2, compression: "zstd" }, [-1, 0, 1]),
    (error) =>
      error instanceof MigrationAbortedError &&
      /its pages are none-compressed, the receiver expects zstd/.test(
        error.message,
      ),
  );
});

Deno.test("multifd destination refuses exec: and file: as QEMU 7.2 does", async () => {
  for (
    const [uri, message] of [
      ["exec:cat /dev/null", "multifd is not supported by current protocol"],
      ["file:/dev/null", "Parameter 'uri' expects a valid migration protocol"],
    ]
  ) {
    const destination = new DestinationMigration({ multifd: {} });
    await assert.rejects(
      listenForMigration(destination, uri!),
      (error) =>
        error instanceof NotSupportedError && error.message === message,
    );
  }
});
