import assert from "node:assert/strict";
import { spawnExecTransport } from "../../lib/transport/exec_transport.ts";
import {
  connectTransport,
  listenTransport,
} from "../../lib/transport/open_transport.ts";
import { ExecCommandError } from "../../lib/transport/exec_command_error.ts";
import { TransportError } from "../../lib/transport/transport_error.ts";
import { NotSupportedError } from "../../lib/errors.ts";
import { createPrng } from "../_helpers/prng.ts";
import {
  assertSameBytes,
  readAll,
  writeChunked,
} from "../_helpers/transport_conformance.ts";

/** exec: needs --allow-run; without it these tests are skipped. */
const ignore = Deno.permissions.querySync({ name: "run", command: "/bin/sh" })
  .state !== "granted";

Deno.test({
  name: "exec: transport round-trips through exec:cat > FILE and exec:cat FILE",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const path = `${dir}/vm.mig`;
      const prng = createPrng(11);
      const data = prng.fill(new Uint8Array(3 << 20));

      const source = await connectTransport(`exec:cat > '${path}'`);
      try {
        await writeChunked(source.writable, data, prng);
      } finally {
        await source.close();
      }

      const listener = await listenTransport(`exec:cat '${path}'`);
      try {
        const destination = await listener.accept();
        try {
          assertSameBytes(await readAll(destination.readable), data);
        } finally {
          await destination.close();
        }
      } finally {
        await listener.close();
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "spawnExecTransport() carries both directions: stdin out, stdout back",
  ignore,
  async fn() {
    const transport = spawnExecTransport("cat");
    try {
      const prng = createPrng(12);
      const data = prng.fill(new Uint8Array(2 << 20));
      const [, echoed] = await Promise.all([
        writeChunked(transport.writable, data, prng),
        readAll(transport.readable),
      ]);
      assertSameBytes(echoed, data);
    } finally {
      await transport.close();
    }
  },
});

Deno.test({
  name:
    "spawnExecTransport() rejects closing the writable with the exit code and stderr",
  ignore,
  async fn() {
    const transport = spawnExecTransport("cat > /nonexistent/dir/vm.mig");
    try {
      const writer = transport.writable.getWriter();
      const error = await writer.write(new Uint8Array(16))
        .then(() => writer.close())
        .then(() => undefined, (error) => error);
      assert.ok(error instanceof ExecCommandError, String(error));
      assert.ok(error instanceof TransportError);
      assert.notEqual(error.exitCode, 0);
      assert.equal(error.signal, null);
      assert.match(error.stderr, /nonexistent/);
      assert.match(
        error.message,
        /^Cannot complete "exec:cat > \/nonexistent\/dir\/vm\.mig": the command exited with code [1-9]\d*: .*nonexistent/,
      );
    } finally {
      await transport.close();
    }
  },
});

Deno.test({
  name:
    "spawnExecTransport() errors the readable at its end when the command failed",
  ignore,
  async fn() {
    const transport = spawnExecTransport(
      "printf partial; echo first >&2; echo boom >&2; exit 3",
    );
    try {
      const reader = transport.readable.getReader();
      let text = "";
      const error = await (async () => {
        while (true) {
          const { done, value } = await reader.read();
          if (done) return undefined;
          text += new TextDecoder().decode(value);
        }
      })().catch((error) => error);
      assert.equal(text, "partial");
      assert.ok(error instanceof ExecCommandError, String(error));
      assert.equal(error.exitCode, 3);
      assert.equal(error.stderr, "first\nboom\n");
      assert.equal(
        error.message,
        'Cannot complete "exec:printf partial; echo first >&2; echo boom >&2; exit 3": the command exited with code 3: first\nboom',
      );
    } finally {
      await transport.close();
    }
  },
});

Deno.test({
  name:
    "spawnExecTransport() says a command exited before reading what was written to it",
  ignore,
  async fn() {
    const transport = spawnExecTransport("head -c 1000 >/dev/null");
    try {
      const writer = transport.writable.getWriter();
      const chunk = new Uint8Array(64 * 1024);
      const error = await (async () => {
        for (let i = 0; i < 1024; i++) await writer.write(chunk);
      })().then(() => undefined, (error) => error);
      assert.ok(error instanceof TransportError, String(error));
      assert.match(
        error.message,
        /^Cannot write to "exec:head -c 1000 >\/dev\/null": the command exited with code 0 before reading all of its input: Broken pipe/,
      );
    } finally {
      await transport.close();
    }
  },
});

Deno.test({
  name: "spawnExecTransport() reports a command killed by a signal",
  ignore,
  async fn() {
    const transport = spawnExecTransport("kill -9 $$");
    try {
      const error = await readAll(transport.readable).catch((error) => error);
      assert.ok(error instanceof ExecCommandError, String(error));
      assert.equal(error.signal, "SIGKILL");
      assert.equal(error.exitCode, 137);
      assert.match(
        error.message,
        /the command was killed by SIGKILL and wrote nothing to stderr$/,
      );
    } finally {
      await transport.close();
    }
  },
});

Deno.test({
  name: "spawnExecTransport() keeps only the tail of stderr",
  ignore,
  async fn() {
    const transport = spawnExecTransport(
      "printf 'aaaaaaaaaa' >&2; printf 'bbbb' >&2; exit 1",
      { stderrTailBytes: 6 },
    );
    try {
      const error = await readAll(transport.readable).catch((error) => error);
      assert.ok(error instanceof ExecCommandError, String(error));
      assert.equal(error.stderr, "aabbbb");
    } finally {
      await transport.close();
    }
  },
});

Deno.test({
  name:
    "spawnExecTransport() rejects writes once the command stopped reading, naming the URI",
  ignore,
  async fn() {
    const transport = spawnExecTransport("exec 0<&-");
    try {
      const writer = transport.writable.getWriter();
      const error = await (async () => {
        for (let i = 0; i < 1024; i++) {
          await writer.write(new Uint8Array(65536));
        }
      })().catch((error) => error);
      assert.ok(error instanceof TransportError, String(error));
      assert.match(
        error.message,
        /^Cannot write to "exec:exec 0<&-": /,
      );
    } finally {
      await transport.close();
    }
  },
});

Deno.test({
  name: "spawnExecTransport() close() kills a command that still runs",
  ignore,
  async fn() {
    const transport = spawnExecTransport("sleep 60");
    const reading = readAll(transport.readable);
    await transport.close();
    assert.equal((await reading).byteLength, 0);
  },
});

Deno.test({
  name:
    "spawnExecTransport() close() returns while a child of the command holds the pipes",
  ignore,
  async fn() {
    // The shell forks sleep, so killing the shell leaves sleep holding
    // stdout and stderr open for a moment.
    const transport = spawnExecTransport("sleep 2; true");
    await transport.close();
  },
});

Deno.test({
  name: "listenTransport() for exec: yields the command once",
  ignore,
  async fn() {
    const listener = await listenTransport("exec:printf QEVM");
    try {
      assert.equal(listener.address, "exec:printf QEVM");
      const transport = await listener.accept();
      try {
        assert.equal(
          new TextDecoder().decode(await readAll(transport.readable)),
          "QEVM",
        );
        await assert.rejects(listener.accept(), NotSupportedError);
      } finally {
        await transport.close();
      }
    } finally {
      await listener.close();
    }
  },
});

Deno.test({
  name:
    "listenTransport() for exec: kills the command if it was never accepted",
  ignore,
  async fn() {
    const listener = await listenTransport("exec:sleep 60");
    await listener.close();
    await assert.rejects(listener.accept(), TransportError);
  },
});
