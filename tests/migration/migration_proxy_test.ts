/**
 * MigrationProxy in one process, without QEMU: the recorded QEMU 7.2
 * streams of fixtures/qemu/ (and livemig's own source) go through the
 * proxy over in-memory transports to a scripted destination.
 */
import assert from "node:assert/strict";
import {
  ByteWriter,
  concatBytes,
  createMemoryTransportPair,
  DestinationMigration,
  encodePostcopyPackage,
  encodeReturnPathMessage,
  GuestMemory,
  MigrationAbortedError,
  type MigrationDecoderOptions,
  MigrationDecoderStream,
  MigrationEncoder,
  MigrationProxy,
  type MigrationProxyInfo,
  type MigrationProxyOptions,
  type MigrationRecord,
  RamImage,
  ramSha256,
  SimulatedGuest,
  SourceMigration,
  StreamFormatError,
  Workload,
  type WorkloadProgress,
} from "../../mod.ts";
import { chunks } from "../_helpers/chunking.ts";
import { createFakeClock } from "../_helpers/fake_clock.ts";

const FIXTURES = new URL("../../fixtures/qemu/", import.meta.url);

function fixture(name: string): Promise<Uint8Array> {
  return Deno.readFile(new URL(`${name}/stream.bin`, FIXTURES));
}

async function fixtureRamSha256(name: string): Promise<string> {
  return (await Deno.readTextFile(new URL(`${name}/ram.sha256`, FIXTURES)))
    .trim();
}

/** How the scripted ends of a proxied migration behave. */
interface Script {
  /** Proxy options. */
  proxy?: MigrationProxyOptions;
  /** What the destination writes back once it read the whole stream. */
  reply?: Uint8Array;
  /** The destination closes after reading this many bytes. */
  destinationStopsAfter?: number;
  /** The source closes after writing its chunks (a source that died). */
  sourceCloses?: boolean;
}

interface Proxied {
  /** The proxy's result, or its error. */
  result: PromiseSettledResult<MigrationProxyInfo>;
  proxy: MigrationProxy;
  /** What reached the destination. */
  received: Uint8Array;
  /** What reached the source (the return path). */
  returned: Uint8Array;
}

/**
 * Runs a proxy between a source that writes `input` (and keeps the
 * connection open, as QEMU does, unless told to close) and a destination
 * that reads everything, then answers `reply` and closes.
 */
async function proxyBytes(
  input: Uint8Array[],
  script: Script = {},
): Promise<Proxied> {
  const [sourceEnd, proxyIn] = createMemoryTransportPair({
    descriptions: ["source", "proxy-in"],
  });
  const [proxyOut, destinationEnd] = createMemoryTransportPair({
    descriptions: ["proxy-out", "destination"],
  });
  const proxy = new MigrationProxy(script.proxy);
  const running = proxy.run(proxyIn, proxyOut);
  const writing = (async () => {
    const writer = sourceEnd.writable.getWriter();
    try {
      for (const chunk of input) await writer.write(chunk);
      if (script.sourceCloses) await sourceEnd.close();
    } catch {
      // the proxy closed the connection
    } finally {
      writer.releaseLock();
    }
  })();
  const returned = new Response(sourceEnd.readable).bytes();
  const reading = (async () => {
    const parts: Uint8Array[] = [];
    let total = 0;
    try {
      for await (const chunk of destinationEnd.readable) {
        parts.push(chunk.slice());
        total += chunk.byteLength;
        if (
          script.destinationStopsAfter !== undefined &&
          total >= script.destinationStopsAfter
        ) {
          await destinationEnd.close();
          break;
        }
      }
      if (script.reply) {
        const writer = destinationEnd.writable.getWriter();
        await writer.write(script.reply);
        writer.releaseLock();
      }
    } catch {
      // the proxy closed the connection
    }
    await destinationEnd.close();
    return concatBytes(parts);
  })();
  const [result] = await Promise.allSettled([running]);
  await writing;
  await sourceEnd.close();
  return {
    result: result!,
    proxy,
    received: await reading,
    returned: await returned.catch(() => new Uint8Array()),
  };
}

async function decodeAll(
  bytes: Uint8Array,
  options: MigrationDecoderOptions = {},
): Promise<MigrationRecord[]> {
  return (await Array.fromAsync(
    ReadableStream.from([bytes]).pipeThrough(
      new MigrationDecoderStream({ deviceState: "opaque", ...options }),
    ),
  )).flat();
}

/** SHA-256 of pc.ram after loading `records`, legacy window zeroed. */
async function pcRamSha256(records: MigrationRecord[]): Promise<string> {
  const image = new RamImage();
  for (const record of records) {
    if (record.type.startsWith("ram-")) {
      image.apply(record as Parameters<RamImage["apply"]>[0]);
    }
  }
  const ram = image.read("pc.ram");
  ram.fill(0, 0xa0000, 0x100000);
  const digest = await crypto.subtle.digest(
    "SHA-256",
    ram as Uint8Array<ArrayBuffer>,
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

function countTypes(records: MigrationRecord[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const record of records) {
    counts[record.type] = (counts[record.type] ?? 0) + 1;
  }
  return counts;
}

function completed(proxied: Proxied): MigrationProxyInfo {
  if (proxied.result.status === "rejected") throw proxied.result.reason;
  return proxied.result.value;
}

function failure(proxied: Proxied): MigrationAbortedError {
  assert.equal(proxied.result.status, "rejected");
  const error = (proxied.result as PromiseRejectedResult).reason;
  assert.ok(error instanceof MigrationAbortedError, String(error));
  return error;
}

for (const name of ["idle", "dirty"]) {
  for (const chunking of ["whole", "random"] as const) {
    Deno.test(`MigrationProxy forwards QEMU's "${name}" stream byte for byte (${chunking} chunks)`, async () => {
      const input = await fixture(name);
      const proxied = await proxyBytes(chunks(input, chunking, 7));
      const info = completed(proxied);
      // A stream without XBZRLE re-encodes to the very same bytes: same
      // ZERO/PAGE choices, CONTINUE where QEMU set it, the tail untouched.
      assert.deepEqual(proxied.received, input);
      assert.equal(info.status, "completed");
      assert.equal(info.received!.transferred, input.byteLength);
      assert.equal(info.sent!.transferred, input.byteLength);
      assert.deepEqual(
        { ...info.sent, transferred: 0 },
        { ...info.received, transferred: 0 },
      );
      assert.equal(info["device-tail"]?.validated, true);
      assert.equal(info["xbzrle-cache"], undefined);
    });
  }
}

Deno.test("MigrationProxy forwards the idle stream fed byte by byte", async () => {
  const input = await fixture("idle");
  const proxied = await proxyBytes(chunks(input, "bytewise"));
  completed(proxied);
  assert.deepEqual(proxied.received, input);
});

Deno.test("MigrationProxy turns XBZRLE off: the xbzrle stream loads to the same RAM", async () => {
  const input = await fixture("xbzrle");
  const proxied = await proxyBytes([input]);
  const info = completed(proxied);
  const records = await decodeAll(proxied.received);
  const types = countTypes(records);
  assert.equal(types["ram-xbzrle"], undefined);
  assert.ok(info.received!.xbzrle > 0);
  assert.equal(info.sent!.xbzrle, 0);
  assert.equal(
    info.sent!.normal,
    info.received!.normal + info.received!.xbzrle,
  );
  assert.equal(await pcRamSha256(records), await fixtureRamSha256("xbzrle"));
});

Deno.test("MigrationProxy turns XBZRLE on: the dirty stream loads to the same RAM, smaller", async () => {
  const input = await fixture("dirty");
  const proxied = await proxyBytes([input], {
    proxy: { capabilities: { xbzrle: true } },
  });
  const info = completed(proxied);
  const records = await decodeAll(proxied.received);
  assert.equal(info.received!.xbzrle, 0);
  assert.ok(info.sent!.xbzrle > 0, JSON.stringify(info.sent));
  assert.equal(countTypes(records)["ram-xbzrle"], info.sent!.xbzrle);
  assert.ok(proxied.received.byteLength < input.byteLength);
  const cache = info["xbzrle-cache"]!;
  assert.equal(cache["cache-size"], 64 * 1024 * 1024);
  assert.ok(cache.pages >= info.sent!.xbzrle);
  assert.ok(info.rounds! >= 2);
  assert.equal(await pcRamSha256(records), await fixtureRamSha256("dirty"));
  // The device tail went through untouched.
  const tail = info["device-tail"]!;
  assert.deepEqual(
    proxied.received.subarray(proxied.received.byteLength - tail.bytes),
    input.subarray(tail.offset),
  );
});

Deno.test("MigrationProxy re-encodes an XBZRLE stream with its own XBZRLE cache", async () => {
  const input = await fixture("xbzrle");
  const proxied = await proxyBytes(chunks(input, "random", 11), {
    proxy: {
      capabilities: { xbzrle: true },
      parameters: { "xbzrle-cache-size": 1024 * 1024 },
    },
  });
  const info = completed(proxied);
  assert.ok(info.received!.xbzrle > 0);
  assert.ok(info.sent!.xbzrle > 0);
  assert.equal(info["xbzrle-cache"]!["cache-size"], 1024 * 1024);
  const records = await decodeAll(proxied.received);
  assert.equal(await pcRamSha256(records), await fixtureRamSha256("xbzrle"));
});

Deno.test("MigrationProxy relays the return path in both directions", async () => {
  const input = await fixture("return-path");
  const reply = concatBytes([
    encodeReturnPathMessage({ type: "PONG", value: 1 }),
    encodeReturnPathMessage({ type: "SHUT", value: 0 }),
  ]);
  const proxied = await proxyBytes([input], { reply });
  const info = completed(proxied);
  assert.deepEqual(proxied.received, input);
  assert.deepEqual(proxied.returned, reply);
  assert.deepEqual(info["return-path"], {
    transferred: 16,
    messages: 2,
    shut: 0,
  });
});

Deno.test("MigrationProxy fails when the destination answers SHUT 1", async () => {
  const input = await fixture("return-path");
  const proxied = await proxyBytes([input], {
    reply: encodeReturnPathMessage({ type: "SHUT", value: 1 }),
  });
  const error = failure(proxied);
  assert.equal(error.reason, "destination-failed");
  assert.match(error.message, /answered SHUT 1/);
  assert.equal(proxied.proxy.status, "failed");
});

Deno.test("MigrationProxy stops at a corrupted record and forwards nothing past it", async () => {
  const input = (await fixture("dirty")).slice();
  // The flags byte of the first record of the first PART: ZERO → ZERO|0x01.
  assert.equal(input[122], 0x02);
  input[122] = 0x03;
  const proxied = await proxyBytes(chunks(input, "random", 3));
  const error = failure(proxied);
  assert.equal(error.reason, "stream-error");
  assert.ok(error.cause instanceof StreamFormatError);
  assert.equal(error.cause.offset, 115);
  assert.match(
    error.message,
    /^Cannot proxy the migration: Cannot decode RAM record at offset 115: /,
  );
  const info = proxied.proxy.query();
  assert.equal(info.status, "failed");
  assert.equal(info["error-offset"], 115);
  assert.ok(proxied.received.byteLength <= 115);
  assert.deepEqual(
    proxied.received,
    input.subarray(0, proxied.received.byteLength),
  );
});

Deno.test("MigrationProxy fails and closes the source when the destination goes away", async () => {
  const input = await fixture("dirty");
  const proxied = await proxyBytes(chunks(input, "random", 5), {
    destinationStopsAfter: 100_000,
  });
  const error = failure(proxied);
  assert.equal(error.reason, "destination-failed");
  const info = proxied.proxy.query();
  assert.equal(info.status, "failed");
  assert.ok(info.sent!.transferred >= 100_000);
  assert.ok(info.sent!.transferred < input.byteLength);
});

Deno.test("MigrationProxy fails when the source ends mid-stream", async () => {
  const input = await fixture("dirty");
  const proxied = await proxyBytes([input.subarray(0, 300_000)], {
    sourceCloses: true,
  });
  const error = failure(proxied);
  assert.equal(error.reason, "source-failed");
  assert.match(error.message, /as the stream ended/);
  assert.equal(proxied.proxy.query()["error-offset"]! <= 300_000, true);
});

Deno.test("MigrationProxy holds max-bandwidth on what it sends", async () => {
  const input = await fixture("idle");
  const clock = createFakeClock();
  const limit = 100_000;
  const proxied = await proxyBytes([input], {
    proxy: { parameters: { "max-bandwidth": limit }, clock },
  });
  const info = completed(proxied);
  assert.equal(info["max-bandwidth"], limit);
  // Every 100 ms window passes at most a tenth of the limit (the chunk
  // that fills it may run over, and is paid for in the next windows).
  const bytes = info.sent!.transferred;
  assert.ok(
    info["total-time"]! >= (bytes - limit / 10) / limit * 1000,
    `${bytes} bytes in ${info["total-time"]} ms`,
  );
  assert.ok(clock.slept.length > 5);
});

Deno.test("MigrationProxy.abort() stops a running proxy", async () => {
  const [sourceEnd, proxyIn] = createMemoryTransportPair();
  const [proxyOut, destinationEnd] = createMemoryTransportPair();
  const proxy = new MigrationProxy();
  const running = proxy.run(proxyIn, proxyOut);
  const writer = sourceEnd.writable.getWriter();
  await writer.write((await fixture("idle")).subarray(0, 1000));
  proxy.abort("stopped by the test");
  await assert.rejects(running, (error) => {
    assert.ok(error instanceof MigrationAbortedError);
    assert.equal(error.reason, "cancelled");
    assert.match(error.message, /stopped by the test/);
    return true;
  });
  assert.equal(proxy.status, "failed");
  await Promise.all([sourceEnd.close(), destinationEnd.close()]);
});

Deno.test("MigrationProxy between livemig's own source and destination", async () => {
  const guest = new SimulatedGuest({
    ramBytes: 2 * 1024 * 1024,
    workload: { kind: "hot-set", setBytes: 64 * 1024, bytesPerSecond: 2e6 },
    prefill: true,
    seed: 3,
  });
  const [sourceEnd, proxyIn] = createMemoryTransportPair();
  const [proxyOut, destinationEnd] = createMemoryTransportPair();
  let loaded: Record<string, string> = {};
  const destination = new DestinationMigration({
    autostart: false,
    beforeResume: async (g) => {
      loaded = await ramSha256(g.memory);
    },
  });
  const proxy = new MigrationProxy({ capabilities: { xbzrle: true } });
  const [sent, info] = await Promise.all([
    new SourceMigration(guest, {
      capabilities: { "return-path": true },
      parameters: { "max-bandwidth": 8 * 1024 * 1024 },
    }).migrate(sourceEnd),
    proxy.run(proxyIn, proxyOut),
    destination.incoming(destinationEnd),
  ]);
  assert.equal(sent.status, "completed");
  assert.equal(info.status, "completed");
  assert.equal(info["return-path"]?.shut, 0);
  assert.deepEqual(loaded, await ramSha256(guest.memory));
  assert.equal(info["device-tail"]?.validated, true);
});

Deno.test("MigrationProxy refuses to run twice", async () => {
  const proxy = new MigrationProxy();
  const input = await fixture("idle");
  const [sourceEnd, proxyIn] = createMemoryTransportPair();
  const [proxyOut, destinationEnd] = createMemoryTransportPair();
  const running = proxy.run(proxyIn, proxyOut);
  await assert.rejects(proxy.run(proxyIn, proxyOut), TypeError);
  const writer = sourceEnd.writable.getWriter();
  await writer.write(input);
  await new Response(destinationEnd.readable).bytes();
  await destinationEnd.close();
  await running;
  await sourceEnd.close();
});

Deno.test("MigrationProxy checks max-bandwidth, max-postcopy-bandwidth and xbzrle-cache-size", () => {
  assert.throws(
    () => new MigrationProxy({ parameters: { "max-bandwidth": -1 } }),
    RangeError,
  );
  assert.throws(
    () => new MigrationProxy({ parameters: { "max-postcopy-bandwidth": 1.5 } }),
    /max-postcopy-bandwidth must be a non-negative integer/,
  );
  assert.throws(
    () => new MigrationProxy({ parameters: { "xbzrle-cache-size": 12288 } }),
    RangeError,
  );
});

Deno.test("MigrationProxy carries livemig's own postcopy: XBZRLE before the switch, ZERO/PAGE after, faults served", async () => {
  const mib = 1024 * 1024;
  // 16 MB/s of random writes over 2 MiB at 4 MiB/s never converges; each
  // pass re-sends pages that changed a little (XBZRLE material).
  const spec = { kind: "random", bytesPerSecond: 16 * mib } as const;
  const guest = new SimulatedGuest({
    ramBytes: 2 * mib,
    workload: spec,
    prefill: true,
    seed: 5,
  });
  const [sourceEnd, proxyIn] = createMemoryTransportPair();
  const [proxyOut, destinationEnd] = createMemoryTransportPair();
  const source = new SourceMigration(guest, {
    capabilities: { "postcopy-ram": true, events: true },
    parameters: { "max-bandwidth": 4 * mib },
    postcopyAfterPasses: 4,
  });
  const atStart = new Promise<{ ram: Uint8Array; progress: WorkloadProgress }>(
    (resolve) => {
      source.addEventListener("migration", (event) => {
        if ((event as CustomEvent).detail.status !== "postcopy-active") return;
        resolve({
          ram: guest.memory.blocks[0]!.bytes.slice(),
          progress: guest.workload.progress,
        });
      });
    },
  );
  // A slow background copy: the destination guest faults on what it
  // touches, through the proxy.
  const proxy = new MigrationProxy({
    capabilities: { xbzrle: true },
    parameters: { "max-postcopy-bandwidth": mib },
  });
  // What the proxy sends is recorded on its way to the destination.
  const sentBytes: Uint8Array[] = [];
  const tap = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      sentBytes.push(chunk.slice());
      controller.enqueue(chunk);
    },
  });
  void tap.readable.pipeTo(proxyOut.writable).catch(() => {});
  const destination = new DestinationMigration({ postcopy: true });
  try {
    const [sent, info, result] = await Promise.all([
      source.migrate(sourceEnd),
      proxy.run(proxyIn, {
        readable: proxyOut.readable,
        writable: tap.writable,
        description: "proxy-out",
        close: () => proxyOut.close(),
      }),
      destination.incoming(destinationEnd),
    ]);
    const loaded = result.guest as SimulatedGuest;
    loaded.pause();
    assert.equal(sent.status, "completed");
    assert.equal(info.status, "completed");
    assert.equal(info["return-path"]?.shut, 0);
    assert.equal(destination.status, "completed");
    const requests = info["postcopy-requests"]!;
    assert.ok(requests >= 1, JSON.stringify(info));
    assert.equal(requests, source.query().ram!["postcopy-requests"]);
    // The background copy at 1 MB/s takes about 2 s; a fault waits far
    // less.
    const perFaultMs = loaded.blockedMs / requests;
    assert.ok(perFaultMs < 1000, `${perFaultMs} ms per fault`);
    // The destination holds the source's RAM at the switch plus exactly
    // the writes its own guest made since (replayed from the same state).
    const { ram, progress } = await atStart;
    const replay = new GuestMemory([{ idstr: "guest.ram", bytes: ram }]);
    new Workload(spec, replay, 5, progress).write(
      loaded.workload.progress.written - progress.written,
    );
    assert.deepEqual(
      await ramSha256(loaded.memory),
      await ramSha256(replay),
    );
    const records = await decodeAll(concatBytes(sentBytes));
    const packaged = records.findIndex((r) =>
      r.type === "command" && r.command === "PACKAGED"
    );
    assert.ok(packaged > 0);
    assert.ok(
      records.slice(0, packaged).some((r) => r.type === "ram-xbzrle"),
      "XBZRLE before the switch",
    );
    const after = records.slice(packaged).filter((r) =>
      r.type === "ram-page" || r.type === "ram-zero" || r.type === "ram-xbzrle"
    );
    assert.ok(after.length > 0);
    assert.ok(after.every((r) => r.type !== "ram-xbzrle"));
    assert.equal((after[0] as { continued: boolean }).continued, false);
    assert.equal(records.at(-1)?.type, "eof");
  } finally {
    guest.pause();
    destination.guest?.pause();
  }
});

Deno.test("MigrationProxy paces postcopy at max-postcopy-bandwidth and lets a requested page through at once", async () => {
  const pageSize = 4096;
  const pages = 256;
  const requested = 128;
  const limit = 100_000;
  const head: MigrationRecord[] = [
    { type: "header", version: 3 },
    { type: "configuration", machine: "pc-i440fx-7.2" },
    { type: "command", command: "OPEN_RETURN_PATH" },
    { type: "command", command: "PING", value: 1 },
    {
      type: "command",
      command: "POSTCOPY_ADVISE",
      pageSizeSummary: pageSize,
      targetPageSize: pageSize,
    },
    {
      type: "section-start",
      sectionId: 2,
      idstr: "ram",
      instanceId: 0,
      versionId: 4,
    },
    {
      type: "ram-mem-size",
      blocks: [{ idstr: "pc.ram", usedLength: pages * pageSize }],
    },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    {
      type: "command",
      command: "POSTCOPY_RAM_DISCARD",
      block: "pc.ram",
      ranges: [{ start: 0, length: pages * pageSize }],
    },
    { type: "command", command: "PING", value: 2 },
    encodePostcopyPackage([
      { type: "command", command: "POSTCOPY_LISTEN" },
      { type: "command", command: "PING", value: 3 },
      { type: "command", command: "POSTCOPY_RUN" },
    ]),
    { type: "command", command: "PING", value: 4 },
    { type: "section-part", sectionId: 2 },
  ];
  const tail: MigrationRecord[] = [];
  for (let page = 0; page < pages; page++) {
    tail.push({
      type: "ram-page",
      block: "pc.ram",
      offset: page * pageSize,
      data: new Uint8Array(pageSize).fill(page % 255 + 1),
    });
  }
  tail.push(
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "section-end", sectionId: 2 },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: 2 },
    { type: "eof" },
  );
  const encoder = new MigrationEncoder();
  const encode = (records: MigrationRecord[]) => {
    const writer = new ByteWriter();
    encoder.encode(records, writer);
    return writer.bytes().slice();
  };
  const first = encode(head);
  const rest = encode(tail);
  const request = encodeReturnPathMessage({
    type: "REQ_PAGES_ID",
    start: requested * pageSize,
    length: pageSize,
    block: "pc.ram",
  });
  const shut = encodeReturnPathMessage({ type: "SHUT", value: 0 });

  const clock = createFakeClock();
  const [sourceEnd, proxyIn] = createMemoryTransportPair();
  const [proxyOut, destinationEnd] = createMemoryTransportPair();
  const proxy = new MigrationProxy({
    parameters: { "max-postcopy-bandwidth": limit },
    clock,
  });
  const running = proxy.run(proxyIn, proxyOut);
  // The source sends the postcopy pages only once the request reached it
  // (so the proxy holds none of them when it comes), then stays until the
  // destination's SHUT came back, as QEMU does.
  const source = (async () => {
    const writer = sourceEnd.writable.getWriter();
    await writer.write(first);
    const reader = sourceEnd.readable.getReader();
    let returned: Uint8Array = new Uint8Array();
    const readUntil = async (length: number) => {
      while (returned.byteLength < length) {
        const { value, done } = await reader.read();
        if (done) throw new Error("the return path ended early");
        returned = concatBytes([returned, value]);
      }
    };
    await readUntil(request.byteLength);
    for (let at = 0; at < rest.byteLength; at += 65536) {
      await writer.write(rest.subarray(at, at + 65536));
    }
    await readUntil(request.byteLength + shut.byteLength);
    await sourceEnd.close();
    return returned;
  })();
  const destination = (async () => {
    const writer = destinationEnd.writable.getWriter();
    const parts: Uint8Array[] = [];
    const tap = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        parts.push(chunk.slice());
        controller.enqueue(chunk);
      },
    });
    const decoded = destinationEnd.readable.pipeThrough(tap).pipeThrough(
      new MigrationDecoderStream(),
    );
    for await (const batch of decoded) {
      for (const record of batch) {
        if (
          record.type === "command" && record.command === "PING" &&
          record.value === 4
        ) {
          await writer.write(request);
        } else if (record.type === "eof") {
          await writer.write(shut);
          await destinationEnd.close();
          return concatBytes(parts);
        }
      }
    }
    throw new Error("the stream ended before EOF");
  })();
  const [info, returned, received] = await Promise.all([
    running,
    source,
    destination,
  ]);
  assert.equal(info.status, "completed");
  assert.equal(info["postcopy-requests"], 1);
  assert.deepEqual(returned, concatBytes([request, shut]));
  assert.deepEqual(received, concatBytes([first, rest]));
  // The proxy waited only for the 127 pages after the requested one (about
  // 5 s at the limit): the 128 before it (as much again) went at once.
  const pageBytes = rest.byteLength / pages;
  const pacedMs = (pages - requested - 1) * pageBytes / limit * 1000;
  const waitedMs = clock.slept.reduce((sum, ms) => sum + ms, 0);
  assert.ok(
    waitedMs >= pacedMs - 100 && waitedMs <= pacedMs + 200,
    `waited ${waitedMs} ms, expected ${pacedMs}`,
  );
});
