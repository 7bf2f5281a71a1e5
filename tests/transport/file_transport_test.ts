import assert from "node:assert/strict";
import {
  openFileTransport,
  openRandomAccessFile,
} from "../../lib/transport/file_transport.ts";
import {
  connectTransport,
  listenTransport,
} from "../../lib/transport/open_transport.ts";
import { TransportError } from "../../lib/transport/transport_error.ts";
import {
  NotSupportedError,
  UnexpectedEndOfStreamError,
} from "../../lib/errors.ts";
import { createPrng } from "../_helpers/prng.ts";
import {
  assertSameBytes,
  readAll,
  writeChunked,
} from "../_helpers/transport_conformance.ts";

async function withTempDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("file: transport round-trips a stream written at offset=4K", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/vm.mig`;
    const header = new Uint8Array(4096).fill(0xaa);
    // Old bytes past the offset must go: the file is cut to the offset.
    await Deno.writeFile(path, new Uint8Array(1 << 20).fill(0xaa));
    const prng = createPrng(21);
    const data = prng.fill(new Uint8Array(3 << 20));

    const source = await connectTransport(`file:${path},offset=4K`);
    try {
      assert.equal(source.description, `file:${path},offset=4096`);
      await writeChunked(source.writable, data, prng);
    } finally {
      await source.close();
    }
    const file = await Deno.readFile(path);
    assertSameBytes(file.subarray(0, 4096), header);
    assertSameBytes(file.subarray(4096), data);

    const listener = await listenTransport(`file:${path},offset=4K`);
    try {
      assert.equal(listener.address, `file:${path},offset=4096`);
      const destination = await listener.accept();
      try {
        assertSameBytes(await readAll(destination.readable), data);
      } finally {
        await destination.close();
      }
      await assert.rejects(listener.accept(), NotSupportedError);
    } finally {
      await listener.close();
    }
  });
});

Deno.test("openFileTransport() creates a missing file when writing", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/new.mig`;
    const transport = await openFileTransport(path, { direction: "outgoing" });
    const writer = transport.writable.getWriter();
    await writer.write(new Uint8Array([1, 2, 3]));
    await writer.close();
    await transport.close();
    assert.deepEqual(await Deno.readFile(path), new Uint8Array([1, 2, 3]));
  });
});

Deno.test("openFileTransport() extends a short file to the offset", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/short.mig`;
    await Deno.writeFile(path, new Uint8Array([5]));
    const transport = await openFileTransport(path, {
      direction: "outgoing",
      offset: 3,
    });
    const writer = transport.writable.getWriter();
    await writer.write(new Uint8Array([9]));
    await writer.close();
    await transport.close();
    assert.deepEqual(await Deno.readFile(path), new Uint8Array([5, 0, 0, 9]));
  });
});

Deno.test("openFileTransport() has no return path when writing", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/vm.mig`;
    const transport = await openFileTransport(path, { direction: "outgoing" });
    try {
      await assert.rejects(transport.readable.getReader().read(), {
        name: "NotSupportedError",
        message:
          `Cannot read from "file:${path}": a file: transport has no reverse direction, so no return path`,
      });
    } finally {
      await transport.close();
    }
  });
});

Deno.test("openFileTransport() has no return path when reading", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/vm.mig`;
    await Deno.writeFile(path, new Uint8Array(8));
    const transport = await openFileTransport(path, { direction: "incoming" });
    try {
      await assert.rejects(
        transport.writable.getWriter().write(new Uint8Array(1)),
        (error: Error) => {
          assert.ok(error instanceof NotSupportedError);
          assert.equal(
            error.message,
            `Cannot write to "file:${path}": a file: transport has no reverse direction, so no return path`,
          );
          return true;
        },
      );
    } finally {
      await transport.close();
    }
  });
});

Deno.test("openFileTransport() lets an unused reverse direction close", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/vm.mig`;
    await Deno.writeFile(path, new Uint8Array(8));
    const transport = await openFileTransport(path, { direction: "incoming" });
    await transport.writable.close();
    assert.equal((await readAll(transport.readable)).byteLength, 8);
    await transport.close();
  });
});

Deno.test("openFileTransport() names the URI when the file is missing", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/missing.mig`;
    await assert.rejects(
      openFileTransport(path, { direction: "incoming", offset: 16 }),
      (error: TransportError) => {
        assert.ok(error instanceof TransportError);
        assert.equal(error.uri, `file:${path},offset=16`);
        assert.match(
          error.message,
          /^Cannot open "file:.*missing\.mig,offset=16" for reading: /,
        );
        assert.ok(error.cause instanceof Deno.errors.NotFound);
        return true;
      },
    );
  });
});

Deno.test("openFileTransport() rejects a negative offset", async () => {
  await assert.rejects(
    openFileTransport("vm.mig", { direction: "incoming", offset: -1 }),
    {
      name: "RangeError",
      message:
        "Cannot open file transport as offset must be a non-negative safe integer: received -1",
    },
  );
});

Deno.test("openRandomAccessFile() matches an in-memory oracle under random positioned writes", async () => {
  await withTempDir(async (dir) => {
    const prng = createPrng(22);
    const oracle = new Uint8Array(1 << 20);
    let size = 0;
    const file = await openRandomAccessFile(`${dir}/ram.bin`, {
      create: true,
    });
    try {
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 200; i++) {
        const length = 1 + prng.nextInt(16 << 10);
        const offset = prng.nextInt(oracle.byteLength - length);
        const bytes = prng.fill(new Uint8Array(length));
        oracle.set(bytes, offset);
        size = Math.max(size, offset + length);
        // Not awaited one by one: the file must run them in order.
        writes.push(file.writeAt(offset, bytes));
      }
      await Promise.all(writes);
      assert.equal(await file.size(), size);
      assertSameBytes(await file.readAt(0, size), oracle.subarray(0, size));
      for (let i = 0; i < 50; i++) {
        const offset = prng.nextInt(size);
        const length = prng.nextInt(size - offset + 1);
        assertSameBytes(
          await file.readAt(offset, length),
          oracle.subarray(offset, offset + length),
        );
      }
    } finally {
      await file.close();
    }
  });
});

Deno.test("openRandomAccessFile() readAt() rejects a read past the end", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/ram.bin`;
    await Deno.writeFile(path, new Uint8Array(10));
    const file = await openRandomAccessFile(path, { readOnly: true });
    try {
      await assert.rejects(file.readAt(8, 4), (error: Error) => {
        assert.ok(error instanceof UnexpectedEndOfStreamError);
        assert.equal(error.offset, 8);
        assert.equal(error.expectedBytes, 4);
        assert.equal(
          error.message,
          `Cannot read 4 bytes of "${path}" at offset 8 as the stream ended: received 2 of 4 bytes`,
        );
        return true;
      });
      assert.deepEqual(await file.readAt(10, 0), new Uint8Array(0));
    } finally {
      await file.close();
    }
  });
});

Deno.test("openRandomAccessFile() truncate() cuts and extends with zeros", async () => {
  await withTempDir(async (dir) => {
    const file = await openRandomAccessFile(`${dir}/ram.bin`, {
      create: true,
    });
    try {
      await file.writeAt(0, new Uint8Array([1, 2, 3, 4]));
      await file.truncate(2);
      await file.truncate(4);
      assert.deepEqual(await file.readAt(0, 4), new Uint8Array([1, 2, 0, 0]));
    } finally {
      await file.close();
    }
  });
});

Deno.test("openRandomAccessFile() truncate option empties the file", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/ram.bin`;
    await Deno.writeFile(path, new Uint8Array(100));
    const file = await openRandomAccessFile(path, { truncate: true });
    try {
      assert.equal(await file.size(), 0);
    } finally {
      await file.close();
    }
  });
});

Deno.test("openRandomAccessFile() does not create a file unless asked", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(
      openRandomAccessFile(`${dir}/missing.bin`),
      (error: Error) => {
        assert.ok(error instanceof TransportError);
        assert.ok(error.cause instanceof Deno.errors.NotFound);
        assert.match(
          error.message,
          /^Cannot open ".*missing\.bin" for positioned reads and writes: /,
        );
        return true;
      },
    );
  });
});

Deno.test("openRandomAccessFile() rejects writes when opened read-only", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/ram.bin`;
    await Deno.writeFile(path, new Uint8Array(4));
    const file = await openRandomAccessFile(path, { readOnly: true });
    try {
      await assert.rejects(file.writeAt(0, new Uint8Array([1])));
      assert.deepEqual(await file.readAt(0, 4), new Uint8Array(4));
    } finally {
      await file.close();
    }
  });
});

Deno.test("openRandomAccessFile() rejects bad offsets and sizes", async () => {
  await withTempDir(async (dir) => {
    const file = await openRandomAccessFile(`${dir}/ram.bin`, {
      create: true,
    });
    try {
      await assert.rejects(file.readAt(-1, 1), {
        name: "RangeError",
        message:
          "Cannot read as offset must be a non-negative safe integer: received -1",
      });
      await assert.rejects(file.readAt(0, 1.5), {
        name: "RangeError",
        message:
          "Cannot read as size must be a non-negative safe integer: received 1.5",
      });
      await assert.rejects(
        file.writeAt(2 ** 53, new Uint8Array(1)),
        RangeError,
      );
      await assert.rejects(file.truncate(-4), RangeError);
    } finally {
      await file.close();
    }
  });
});

Deno.test("openRandomAccessFile() rejects operations after close()", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/ram.bin`;
    const file = await openRandomAccessFile(path, { create: true });
    const write = file.writeAt(0, new Uint8Array([1]));
    await file.close();
    await write; // issued before close(), so it ran
    await file.close(); // a second close is harmless
    await assert.rejects(file.readAt(0, 1), {
      name: "TypeError",
      message: `Cannot read "${path}": the file is closed`,
    });
    assert.deepEqual(await Deno.readFile(path), new Uint8Array([1]));
  });
});
