/**
 * The migrate command in this process: what "completed" means with and
 * without a return path, for each kind of URI.
 */
import assert from "node:assert/strict";
import { analyzeMigrationStream, listenTransport } from "../../mod.ts";
import { MIGRATE_COMMAND } from "../../lib/cli/migrate_command.ts";
import { UsageError } from "../../lib/cli/usage_error.ts";
import type { CliIo } from "../../lib/cli/cli_io.ts";

function captureIo(): CliIo & { out: string; err: string } {
  const io = {
    out: "",
    err: "",
    errIsTerminal: false,
    writeOut(text: string) {
      io.out += text;
    },
    writeErr(text: string) {
      io.err += text;
    },
  };
  return io;
}

function lastJson(text: string): Record<string, unknown> {
  return JSON.parse(text.trimEnd().split("\n").at(-1)!);
}

/**
 * A tcp: destination that reads the whole stream and closes the
 * connection without answering: the connection is cut right after the
 * last byte, before any SHUT.
 */
async function silentDestination(): Promise<
  { address: string; received: Promise<number> }
> {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const received = (async () => {
    try {
      const transport = await listener.accept();
      let bytes = 0;
      for await (const chunk of transport.readable) bytes += chunk.byteLength;
      await transport.close();
      return bytes;
    } finally {
      await listener.close();
    }
  })();
  return { address: listener.address, received };
}

Deno.test("cli migrate to tcp: fails when the connection is cut after the last byte, before SHUT", async () => {
  const destination = await silentDestination();
  const io = captureIo();
  const code = await MIGRATE_COMMAND.run(
    [destination.address, "--ram", "4MiB", "--prefill", "--json"],
    io,
  );
  assert.ok(await destination.received > 4 << 20, "every page arrived");
  assert.equal(code, 1, io.err);
  const json = lastJson(io.out);
  assert.equal(json.status, "failed");
  assert.match(
    io.err,
    /^livemig: Cannot complete migration: the destination closed the connection without SHUT, so it never confirmed that it loaded the stream$/m,
  );
  assert.equal(
    json["error-desc"],
    "Cannot complete migration: the destination closed the connection without SHUT, so it never confirmed that it loaded the stream",
  );
});

Deno.test("cli migrate -c return-path=off completes unconfirmed and warns", async () => {
  const destination = await silentDestination();
  const io = captureIo();
  const code = await MIGRATE_COMMAND.run(
    [destination.address, "--ram", "4MiB", "-c", "return-path=off", "--json"],
    io,
  );
  await destination.received;
  assert.equal(code, 0, io.err);
  assert.equal(lastJson(io.out).status, "completed");
  assert.equal(
    io.err,
    'livemig: return-path is off: "completed" will mean that the whole stream was sent, not that the destination loaded it\n',
  );
});

Deno.test("cli migrate to exec: and file: runs without a return path and without a warning", async () => {
  const path = await Deno.makeTempFile({ suffix: ".mig" });
  try {
    for (const uri of [`file:${path}`, `exec:cat > '${path}'`]) {
      const io = captureIo();
      const code = await MIGRATE_COMMAND.run(
        [uri, "--ram", "1MiB", "--json"],
        io,
      );
      assert.equal(code, 0, `${uri}: ${io.err}`);
      assert.equal(lastJson(io.out).status, "completed");
      assert.equal(io.err, "", uri);
      const { analysis } = await analyzeMigrationStream(
        ReadableStream.from([await Deno.readFile(path)]),
      );
      assert.equal(analysis.commands.OPEN_RETURN_PATH, undefined, uri);
    }
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("cli migrate refuses -c return-path=on with a file: URI", async () => {
  const io = captureIo();
  await assert.rejects(
    MIGRATE_COMMAND.run(["file:/tmp/never.mig", "-c", "return-path=on"], io),
    (error) => {
      assert.ok(error instanceof UsageError);
      assert.equal(
        error.message,
        'Cannot use return-path with "file:/tmp/never.mig": a file cannot answer',
      );
      return true;
    },
  );
});
