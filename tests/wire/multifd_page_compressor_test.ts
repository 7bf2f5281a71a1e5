import assert from "node:assert/strict";
import {
  type MultifdCompression,
  MultifdPageCompressor,
  MultifdPageDecompressor,
  StreamFormatError,
} from "../../mod.ts";
import { createPrng } from "../_helpers/prng.ts";

const PAGE = 4096;

/** `count` pages: a few random ones, the rest patterned (compressible). */
function pages(count: number, seed: number): Uint8Array[] {
  const prng = createPrng(seed);
  return Array.from({ length: count }, (_, i) => {
    const page = new Uint8Array(PAGE);
    if (i % 5 === 0) {
      for (let j = 0; j < PAGE; j++) page[j] = prng.nextInt(256);
    } else {
      page.fill(i & 0xff).fill(prng.nextInt(256), 100, 140);
    }
    return page;
  });
}

function joined(list: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(list.length * PAGE);
  list.forEach((page, i) => bytes.set(page, i * PAGE));
  return bytes;
}

const METHODS: MultifdCompression[] = ["none", "zlib", "zstd"];

for (const method of METHODS) {
  Deno.test(`MultifdPageCompressor (${method}) packets decompress in order with one decompressor`, async () => {
    const compressor = new MultifdPageCompressor(method);
    const decompressor = new MultifdPageDecompressor(method);
    try {
      for (const [i, count] of [1, 128, 7, 0, 33].entries()) {
        const input = pages(count, i + 1);
        const data = await compressor.compress(input);
        assert.deepEqual(
          await decompressor.decompress(data, count),
          joined(input),
        );
      }
    } finally {
      compressor.close();
      decompressor.close();
    }
  });

  Deno.test(`MultifdPageCompressor (${method}) runs overlapping calls in call order`, async () => {
    const compressor = new MultifdPageCompressor(method);
    const decompressor = new MultifdPageDecompressor(method);
    try {
      const inputs = [pages(3, 7), pages(1, 8), pages(5, 9)];
      const data = await Promise.all(inputs.map((p) => compressor.compress(p)));
      const out = await Promise.all(
        data.map((d, i) => decompressor.decompress(d, inputs[i]!.length)),
      );
      assert.deepEqual(out, inputs.map(joined));
    } finally {
      compressor.close();
      decompressor.close();
    }
  });
}

Deno.test("MultifdPageCompressor (none) sends the pages as they are", async () => {
  const compressor = new MultifdPageCompressor("none");
  const input = pages(3, 1);
  assert.deepEqual(await compressor.compress(input), joined(input));
  assert.deepEqual(await compressor.compress([]), new Uint8Array(0));
});

Deno.test("MultifdPageCompressor (zlib) opens one zlib stream and ends each packet with a sync flush", async () => {
  const compressor = new MultifdPageCompressor("zlib");
  try {
    const first = await compressor.compress(pages(2, 1));
    const second = await compressor.compress(pages(2, 2));
    assert.deepEqual(first.subarray(0, 2), new Uint8Array([0x78, 0x01]));
    assert.notEqual(second[0], 0x78, "no second zlib header");
    for (const data of [first, second]) {
      assert.deepEqual(data.subarray(-4), new Uint8Array([0, 0, 0xff, 0xff]));
    }
  } finally {
    compressor.close();
  }
});

Deno.test("MultifdPageCompressor (zstd) opens one frame and never ends it", async () => {
  const compressor = new MultifdPageCompressor("zstd");
  const decompressor = new MultifdPageDecompressor("zstd");
  try {
    const first = await compressor.compress(pages(2, 1));
    const second = await compressor.compress(pages(2, 2));
    assert.deepEqual(
      first.subarray(0, 4),
      new Uint8Array([0x28, 0xb5, 0x2f, 0xfd]),
    );
    assert.notDeepEqual(
      second.subarray(0, 4),
      new Uint8Array([0x28, 0xb5, 0x2f, 0xfd]),
    );
    await decompressor.decompress(first, 2);
    await decompressor.decompress(second, 2);
  } finally {
    compressor.close();
    decompressor.close();
  }
});

for (const method of ["zlib", "zstd"] as const) {
  Deno.test(`MultifdPageCompressor (${method}) keeps its state from packet to packet`, async () => {
    const compressor = new MultifdPageCompressor(method);
    const decompressor = new MultifdPageDecompressor(method);
    const fresh = new MultifdPageDecompressor(method);
    try {
      const input = pages(1, 42); // one random page
      const first = await compressor.compress(input);
      const again = await compressor.compress(input);
      assert.ok(first.byteLength > PAGE / 2, `${first.byteLength} bytes`);
      assert.ok(again.byteLength < 64, `${again.byteLength} bytes`);
      await decompressor.decompress(first, 1);
      assert.deepEqual(await decompressor.decompress(again, 1), joined(input));
      // A receiver that missed the first packet cannot decode the second.
      await assert.rejects(fresh.decompress(again, 1), StreamFormatError);
    } finally {
      compressor.close();
      decompressor.close();
      fresh.close();
    }
  });
}

Deno.test("MultifdPageCompressor refuses levels QEMU 7.2 refuses for the method", () => {
  for (
    const [method, level] of [["zlib", 10], ["zstd", 21], ["zlib", -1], [
      "zstd",
      1.5,
    ]] as const
  ) {
    assert.throws(
      () => new MultifdPageCompressor(method, { level }),
      (error) =>
        error instanceof RangeError &&
        error.message.startsWith(
          `Cannot construct MultifdPageCompressor as the ${method} level`,
        ),
    );
  }
  new MultifdPageCompressor("none", { level: 99 }).close();
});

Deno.test("MultifdPageCompressor honours the level", async () => {
  const input = pages(16, 5);
  const sizes = [];
  for (const level of [0, 9]) {
    const compressor = new MultifdPageCompressor("zlib", { level });
    sizes.push((await compressor.compress(input)).byteLength);
    compressor.close();
  }
  assert.ok(sizes[0]! > 16 * PAGE, "level 0 stores");
  assert.ok(sizes[1]! < 5 * PAGE, "level 9 compresses");
});

Deno.test("MultifdPageCompressor fails once closed", async () => {
  const compressor = new MultifdPageCompressor("zstd");
  compressor.close();
  await assert.rejects(compressor.compress(pages(1, 1)), TypeError);
});

for (const method of METHODS) {
  Deno.test(`MultifdPageDecompressor (${method}) refuses data that gives another page count`, async () => {
    const compressor = new MultifdPageCompressor(method);
    const decompressor = new MultifdPageDecompressor(method);
    try {
      const data = await compressor.compress(pages(2, 3));
      await assert.rejects(
        decompressor.decompress(data, 3, { offset: 777 }),
        (error) =>
          error instanceof StreamFormatError && error.offset === 777 &&
          error.message.startsWith(
            "Cannot decompress multifd packet data at offset 777: ",
          ),
      );
    } finally {
      compressor.close();
      decompressor.close();
    }
  });
}

for (const method of ["zlib", "zstd"] as const) {
  Deno.test(`MultifdPageDecompressor (${method}) refuses corrupt data and stays failed`, async () => {
    const compressor = new MultifdPageCompressor(method);
    const decompressor = new MultifdPageDecompressor(method);
    try {
      const data = await compressor.compress(pages(2, 3));
      const bad = data.slice();
      bad.fill(0xff, 0, 8);
      await assert.rejects(
        decompressor.decompress(bad, 2, { offset: 1408 }),
        (error) =>
          error instanceof StreamFormatError && error.offset === 1408 &&
          error.cause !== undefined &&
          new RegExp(`the ${method} data is corrupt`).test(error.message),
      );
      await assert.rejects(decompressor.decompress(data, 2), StreamFormatError);
    } finally {
      compressor.close();
      decompressor.close();
    }
  });

  Deno.test(`MultifdPageDecompressor (${method}) takes no data for a packet without pages`, async () => {
    const decompressor = new MultifdPageDecompressor(method);
    try {
      assert.deepEqual(
        await decompressor.decompress(new Uint8Array(0), 0),
        new Uint8Array(0),
      );
      await assert.rejects(
        decompressor.decompress(new Uint8Array(3), 0),
        StreamFormatError,
      );
    } finally {
      decompressor.close();
    }
  });
}
