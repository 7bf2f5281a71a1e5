/**
 * The migrate command in this process: what "completed" means with and
 * without a return path, for each kind of URI.
 */
import assert from "node:assert/strict";
import {
  analyzeMigrationStream,
  listenTransport,
  type MigrationStatus,
} from "../../mod.ts";
import { createFakeClock } from "../_helpers/fake_clock.ts";
import { finishCli, spawnCli, waitForLine } from "../_helpers/cli_process.ts";
import { MIGRATE_COMMAND } from "../../lib/cli/migrate_command.ts";
import { migrationInterrupts } from "../../lib/cli/on_interrupt.ts";
import { UsageError } from "../../lib/cli/usage_error.ts";
import { captureIo } from "../_helpers/capture_io.ts";

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
    [
      destination.address,
      ...["--ram", "4MiB", "-c", "return-path=off", "--json", "--no-hugepages"],
    ],
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
        [uri, "--ram", "1MiB", "--json", "--no-hugepages"],
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

Deno.test("cli migrate refuses switchover-ack without return-path before starting the guest", async () => {
  for (const uri of ["file:/tmp/never.mig", "tcp:127.0.0.1:1"]) {
    const io = captureIo();
    const args = [uri, "-c", "switchover-ack=on", "-c", "return-path=off"];
    await assert.rejects(
      MIGRATE_COMMAND.run(
        uri.startsWith("file:") ? args.slice(0, 3) : args,
        io,
      ),
      {
        name: "UsageError",
        message:
          "Capability 'switchover-ack' requires capability 'return-path'",
      },
    );
  }
});

Deno.test("cli migrate --json says failed, with exit 1, when the destination cannot be reached", async () => {
  // A port nobody listens on: bind one, then close it.
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const uri = listener.address;
  await listener.close();
  const io = captureIo();
  // The error goes to the CLI's handler (message, exit 1); the JSON first.
  await assert.rejects(
    MIGRATE_COMMAND.run([uri, "--ram", "1MiB", "--json"], io),
    { name: "TransportError", message: /Cannot connect to .*refused/ },
  );
  const info = lastJson(io.out);
  assert.equal(info.status, "failed", "not the status none");
  assert.match(String(info["error-desc"]), /^Cannot connect to /);
});

/** A stand-in for a source: its status, and what cancel/abandon did. */
function fakeSource(status: string) {
  const calls: string[] = [];
  return {
    calls,
    source: {
      status: status as MigrationStatus,
      cancel: () => void calls.push("cancel"),
      abandon: () => void calls.push("abandon"),
    },
  };
}

Deno.test("migrationInterrupts() cancels before postcopy and gives up postcopy only on a second Ctrl-C within 5 s", () => {
  const io = captureIo();
  const clock = createFakeClock();
  const active = fakeSource("active");
  const handlers = migrationInterrupts(active.source, { io, clock });
  handlers.interrupt();
  handlers.terminate();
  assert.deepEqual(active.calls, ["cancel", "cancel"]);
  assert.equal(io.err, "");

  const paused = fakeSource("postcopy-paused");
  const interrupts = migrationInterrupts(paused.source, { io, clock });
  interrupts.interrupt();
  assert.deepEqual(paused.calls, []);
  assert.equal(
    io.err,
    "livemig: cancelling now would lose the guest: the destination runs it without all of its RAM; press Ctrl-C again within 5 s (or send SIGTERM) to give it up anyway\n",
  );
  clock.advance(5001);
  interrupts.interrupt(); // too late: warns again
  assert.deepEqual(paused.calls, []);
  clock.advance(5000);
  interrupts.interrupt();
  assert.deepEqual(paused.calls, ["abandon"]);

  const terminated = fakeSource("postcopy-active");
  migrationInterrupts(terminated.source, { io, clock }).terminate();
  assert.deepEqual(terminated.calls, ["abandon"]);
});

for (const how of ["Ctrl-C twice", "SIGTERM"] as const) {
  Deno.test(`cli migrate whose postcopy connection is cut waits in postcopy-paused until ${how}`, async () => {
    const destination = await cuttingDestination(256 * 1024);
    const migrate = spawnCli([
      "migrate",
      destination.address,
      "--ram",
      "32MiB",
      "--prefill",
      "-c",
      "postcopy-ram=on",
      "--postcopy-after",
      "0",
      "-p",
      "max-postcopy-bandwidth=8MiB/s",
      "--json",
    ]);
    try {
      const [, cause] = await waitForLine(
        migrate,
        /^livemig: postcopy paused: (.*)$/,
      );
      assert.match(cause!, /Broken pipe|Connection reset by peer/);
      await waitForLine(
        migrate,
        /^livemig: the guest runs on the destination, which still needs pages only this process has, so it waits \(to heal a cut connection, start both ends with --recover URI\); Ctrl-C twice or SIGTERM gives the guest up$/,
      );
      if (how === "SIGTERM") {
        migrate.child.kill("SIGTERM");
      } else {
        migrate.child.kill("SIGINT");
        await waitForLine(
          migrate,
          /^livemig: cancelling now would lose the guest/,
        );
        migrate.child.kill("SIGINT");
      }
      const { code, json, stderr } = await finishCli(migrate);
      assert.equal(code, 1, stderr);
      assert.equal(json.status, "postcopy-paused");
      const message =
        `Cannot complete migration: abandoned in postcopy-paused (${cause}); the destination runs the guest without all of its RAM`;
      assert.equal(json["error-desc"], message);
      assert.equal(stderr.split("\n").at(-1), `livemig: ${message}`);
    } finally {
      try {
        migrate.child.kill("SIGKILL");
      } catch {
        // it has ended
      }
      await destination.done;
    }
  });
}

/**
 * A tcp: destination that reads `bytes` of one connection without
 * answering, then closes it.
 */
async function cuttingDestination(
  bytes: number,
): Promise<{ address: string; done: Promise<void> }> {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const done = (async () => {
    try {
      const transport = await listener.accept();
      let read = 0;
      for await (const chunk of transport.readable) {
        read += chunk.byteLength;
        if (read >= bytes) break;
      }
      await transport.close();
    } finally {
      await listener.close();
    }
  })();
  return { address: listener.address, done };
}

Deno.test("cli migrate -c events=on prints each MIGRATION and MIGRATION_PASS event as QEMU's JSON line", async () => {
  const path = await Deno.makeTempFile({ suffix: ".mig" });
  try {
    const io = captureIo();
    const code = await MIGRATE_COMMAND.run(
      [`file:${path}`, "--ram", "1MiB", "-c", "events=on", "--json"],
      io,
    );
    assert.equal(code, 0, io.err);
    const events = io.err.split("\n").filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line));
    const statuses = events.filter((e) => e.event === "MIGRATION").map((e) =>
      e.data.status
    );
    assert.deepEqual(statuses.slice(0, 2), ["setup", "active"]);
    assert.equal(statuses.at(-1), "completed");
    assert.ok(events.some((e) => e.event === "MIGRATION_PASS"));
    for (const event of events) {
      assert.ok(Number.isInteger(event.timestamp.seconds));
      assert.ok(Number.isInteger(event.timestamp.microseconds));
    }
  } finally {
    await Deno.remove(path);
  }
});
