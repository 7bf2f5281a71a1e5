/**
 * Guest RAM is fast by default: huge pages when FFI is allowed, plain
 * memory and one line on stderr when not; `--hugepages` insists and
 * `--no-hugepages` opts out.
 */
import assert from "node:assert/strict";
import { NotSupportedError } from "../../mod.ts";
import { DEMO_COMMAND } from "../../lib/cli/demo_command.ts";
import { INCOMING_COMMAND } from "../../lib/cli/incoming_command.ts";
import { MIGRATE_COMMAND } from "../../lib/cli/migrate_command.ts";
import { UsageError } from "../../lib/cli/usage_error.ts";
import { captureIo } from "../_helpers/capture_io.ts";

const CLI = new URL("../../cli.ts", import.meta.url).pathname;
const WARNING =
  "livemig: guest RAM without huge pages (run deno with --allow-ffi for about 2x faster first touch, or pass --no-hugepages)\n";
const noFfi = Deno.permissions.querySync({ name: "ffi" }).state !== "granted";
const linux = Deno.build.os === "linux";

Deno.test({
  name:
    "cli demo without --allow-ffi says once that guest RAM has no huge pages",
  ignore: !noFfi || !linux,
  async fn() {
    const io = captureIo();
    const code = await DEMO_COMMAND.run(
      ["--ram", "4MiB", "--workload", "idle", "--json"],
      io,
    );
    assert.equal(code, 0, io.err);
    // Source and destination both allocate RAM: one line for the two.
    assert.equal(io.err, WARNING);
  },
});

Deno.test("cli migrate --no-hugepages says nothing about huge pages", async () => {
  const path = await Deno.makeTempFile({ suffix: ".mig" });
  try {
    const io = captureIo();
    const code = await MIGRATE_COMMAND.run(
      [`file:${path}`, "--ram", "1MiB", "--no-hugepages"],
      io,
    );
    assert.equal(code, 0, io.err);
    assert.doesNotMatch(io.err, /huge pages/);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test({
  name: "cli migrate --hugepages without --allow-ffi fails instead of warning",
  ignore: !noFfi,
  async fn() {
    const io = captureIo();
    await assert.rejects(
      MIGRATE_COMMAND.run(["file:/tmp/never.mig", "--hugepages"], io),
      (error) => {
        assert.ok(error instanceof NotSupportedError);
        assert.match(
          error.message,
          /^Cannot back guest RAM with huge pages: .*--allow-ffi/,
        );
        return true;
      },
    );
    assert.equal(io.err, "");
  },
});

Deno.test("cli incoming refuses --hugepages with --no-hugepages", async () => {
  await assert.rejects(
    INCOMING_COMMAND.run(
      ["tcp:127.0.0.1:0", "--hugepages", "--no-hugepages"],
      captureIo(),
    ),
    (error) => {
      assert.ok(error instanceof UsageError);
      assert.equal(
        error.message,
        "Cannot use --hugepages and --no-hugepages together",
      );
      return true;
    },
  );
});

Deno.test({
  name: "cli migrate with --allow-ffi gets huge pages without a word",
  ignore: !linux,
  async fn() {
    const path = await Deno.makeTempFile({ suffix: ".mig" });
    try {
      for (const flag of [[], ["--hugepages"]]) {
        const output = await new Deno.Command(Deno.execPath(), {
          args: [
            "run",
            "--allow-read",
            "--allow-write",
            "--allow-ffi",
            CLI,
            "migrate",
            `file:${path}`,
            ...["--ram", "4MiB", ...flag],
          ],
          stdin: "null",
        }).output();
        const stderr = new TextDecoder().decode(output.stderr);
        assert.equal(output.code, 0, stderr);
        assert.doesNotMatch(stderr, /huge pages/, flag.join(" "));
      }
    } finally {
      await Deno.remove(path);
    }
  },
});
