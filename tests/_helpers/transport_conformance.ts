/**
 * One behaviour suite for every {@linkcode Transport}: each transport's test
 * file calls {@linkcode runTransportConformance} with a factory for a
 * connected pair, the way Hono runs one router suite over every router.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Transport } from "../../lib/transport/transport.ts";
import { concatBytes } from "../../lib/bytes/concat_bytes.ts";
import { createPrng, type Prng } from "./prng.ts";

/** Two connected transports and what to release after the test. */
export interface TransportPairFixture {
  /** One end. */
  a: Transport;
  /** The other end. */
  b: Transport;
  /** Releases anything besides the two transports (a listener, a file). */
  dispose?(): Promise<void>;
}

/** What {@linkcode runTransportConformance} needs to know. */
export interface TransportConformanceOptions {
  /** Names the transport in test names, e.g. `"TCP"`. */
  name: string;
  /** Creates a connected pair; called once per test. */
  newPair(): Promise<TransportPairFixture>;
  /**
   * How aborting one side's `writable` reaches the peer's `readable`: an
   * in-process pair errors it with the abort reason; a socket carries no
   * reason, so the peer may see an error or just the end.
   */
  abortReachesPeerAs: "the same error" | "an error or the end";
  /**
   * Most bytes the pair may buffer between a writer and a reader that does
   * not read (queues, staging buffers, kernel socket buffers).
   */
  maxBufferedBytes: number;
  /**
   * How long a pending `writer.ready` must stay pending to count as held
   * back. Sockets need real time to fill their kernel buffers; in-process
   * pairs can use 0 (one macrotask turn).
   */
  settleMs: number;
  /** Skips the suite, e.g. when a permission is missing. */
  ignore?: boolean;
}

/**
 * Registers the conformance tests for one transport.
 *
 * @param options The transport under test.
 */
export function runTransportConformance(
  options: TransportConformanceOptions,
): void {
  const { name, ignore = false } = options;

  function test(
    behaviour: string,
    fn: (pair: TransportPairFixture) => Promise<void>,
  ): void {
    Deno.test({
      name: `${name} transport ${behaviour}`,
      ignore,
      async fn() {
        const pair = await options.newPair();
        try {
          await fn(pair);
        } finally {
          await Promise.all([pair.a.close(), pair.b.close()]);
          await pair.dispose?.();
        }
      },
    });
  }

  for (
    const [direction, seed] of [["from a to b", 1], ["from b to a", 2]] as const
  ) {
    test(
      `carries bytes ${direction} intact and in order under random chunking`,
      async ({ a, b }) => {
        const [from, to] = direction === "from a to b" ? [a, b] : [b, a];
        const prng = createPrng(seed);
        const data = prng.fill(new Uint8Array(3 << 20));
        const [, received] = await Promise.all([
          writeChunked(from.writable, data, prng),
          readAll(to.readable),
        ]);
        assertSameBytes(received, data);
      },
    );
  }

  test("carries both directions at once", async ({ a, b }) => {
    const prng = createPrng(3);
    const toB = prng.fill(new Uint8Array(4 << 20));
    const toA = prng.fill(new Uint8Array(4 << 20));
    const [, , atB, atA] = await Promise.all([
      writeChunked(a.writable, toB, createPrng(4)),
      writeChunked(b.writable, toA, createPrng(5)),
      readAll(b.readable),
      readAll(a.readable),
    ]);
    assertSameBytes(atB, toB);
    assertSameBytes(atA, toA);
  });

  test(
    "ends the peer's readable when its writable closes, and keeps the reverse direction open",
    async ({ a, b }) => {
      const writer = a.writable.getWriter();
      await writer.write(new Uint8Array([1, 2, 3]));
      await writer.close();
      assertSameBytes(await readAll(b.readable), new Uint8Array([1, 2, 3]));

      const returnPath = b.writable.getWriter();
      await returnPath.write(new Uint8Array([4, 5]));
      await returnPath.close();
      assertSameBytes(await readAll(a.readable), new Uint8Array([4, 5]));
    },
  );

  test("close() ends the peer's readable", async ({ a, b }) => {
    const writer = a.writable.getWriter();
    await writer.write(new Uint8Array([7]));
    const reading = readAll(b.readable);
    await a.close();
    writer.releaseLock();
    assertSameBytes(await reading, new Uint8Array([7]));
  });

  test("close() ends a pending read on its own readable", async ({ a }) => {
    const reader = a.readable.getReader();
    const read = reader.read();
    await a.close();
    assert.equal((await read).done, true);
  });

  test("close() makes its own writes reject", async ({ a }) => {
    const writer = a.writable.getWriter();
    await a.close();
    await assert.rejects(
      writer.write(new Uint8Array(64 << 10)),
      (error: Error) => {
        assert.match(error.message, /^Cannot write to "/);
        assert.ok(error.message.includes(`"${a.description}"`), error.message);
        return true;
      },
    );
  });

  test("close() makes the peer's writes fail", async ({ a, b }) => {
    await a.close();
    const error = await writeUntilRejected(b.writable, 256 << 20);
    assert.ok(error instanceof Error, String(error));
  });

  test(
    "holds a writer back while the peer does not read, then lets it finish",
    async ({ a, b }) => {
      const chunk = createPrng(6).fill(new Uint8Array(64 << 10));
      const writer = a.writable.getWriter();
      let written = 0;
      while (await settles(writer.ready, options.settleMs)) {
        assert.ok(
          written <= options.maxBufferedBytes,
          `Writer was not held back after ${written} bytes`,
        );
        writer.write(chunk).catch(() => {});
        written += chunk.byteLength;
      }
      assert.ok(written > 0, "The first write was already held back");

      const reading = readAll(b.readable);
      await writer.ready;
      writer.write(chunk).catch(() => {});
      written += chunk.byteLength;
      await writer.close();
      const received = await reading;
      assert.equal(received.byteLength, written);
      for (let offset = 0; offset < written; offset += chunk.byteLength) {
        assertSameBytes(
          received.subarray(offset, offset + chunk.byteLength),
          chunk,
        );
      }
    },
  );

  test("propagates an abort of its writable to the peer", async ({ a, b }) => {
    const reason = new Error("Source failed");
    const writer = a.writable.getWriter();
    await writer.write(new Uint8Array([1]));
    const reader = b.readable.getReader();
    let result: unknown;
    try {
      await writer.abort(reason);
      while (!(await reader.read()).done);
      result = "end";
    } catch (error) {
      result = error;
    }
    if (options.abortReachesPeerAs === "the same error") {
      assert.equal(result, reason);
    } else {
      assert.ok(result === "end" || result instanceof Error, String(result));
    }
  });

  test(
    "fails the peer's writes once its reader cancelled and its writer closed",
    async ({ a, b }) => {
      await b.readable.cancel(new Error("Destination gave up"));
      await b.writable.close();
      const error = await writeUntilRejected(a.writable, 256 << 20);
      assert.ok(error instanceof Error, String(error));
    },
  );
}

/**
 * Writes `data` in chunks of seeded random sizes, mostly large, some of a
 * few bytes, honouring `ready`, then closes the writable.
 */
export async function writeChunked(
  writable: WritableStream<Uint8Array>,
  data: Uint8Array,
  prng: Prng,
): Promise<void> {
  const writer = writable.getWriter();
  for (let offset = 0; offset < data.byteLength;) {
    const size = prng.nextInt(4) === 0
      ? 1 + prng.nextInt(64)
      : 1 + prng.nextInt(128 << 10);
    await writer.ready;
    writer.write(data.subarray(offset, offset + size)).catch(() => {});
    offset += size;
  }
  await writer.close();
}

/** Reads a stream to its end and joins the chunks. */
export async function readAll(
  readable: ReadableStream<Uint8Array>,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of readable) chunks.push(chunk.slice());
  return concatBytes(chunks);
}

/** Asserts two byte arrays are equal, naming the first differing offset. */
export function assertSameBytes(
  actual: Uint8Array,
  expected: Uint8Array,
): void {
  const length = Math.min(actual.byteLength, expected.byteLength);
  for (let i = 0; i < length; i++) {
    if (actual[i] !== expected[i]) {
      assert.fail(
        `Bytes differ at offset ${i}: ${actual[i]} instead of ${expected[i]}`,
      );
    }
  }
  assert.equal(actual.byteLength, expected.byteLength, "Byte counts differ");
}

/** Writes 64 KiB chunks until a write rejects; returns the rejection. */
async function writeUntilRejected(
  writable: WritableStream<Uint8Array>,
  limitBytes: number,
): Promise<unknown> {
  const writer = writable.getWriter();
  const chunk = new Uint8Array(64 << 10);
  for (let written = 0; written <= limitBytes; written += chunk.byteLength) {
    try {
      await writer.write(chunk);
    } catch (error) {
      return error;
    }
  }
  assert.fail(`Writes still succeed after ${limitBytes} bytes`);
}

/** Whether `promise` settles within `ms` milliseconds. */
async function settles(
  promise: Promise<unknown>,
  ms: number,
): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const settled = await Promise.race([
    promise.then(() => true, () => true),
    new Promise<false>((resolve) =>
      timer = setTimeout(() => resolve(false), ms)
    ),
  ]);
  clearTimeout(timer);
  return settled;
}
