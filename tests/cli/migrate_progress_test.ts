import assert from "node:assert/strict";
import { main } from "../../cli.ts";
import { capture } from "./_cli.ts";

Deno.test("migrate --progress tty shows the model's ETA and its noise", async () => {
  const path = await Deno.makeTempFile({ suffix: ".mig" });
  try {
    const io = capture();
    const code = await main([
      "migrate",
      `file:${path}`,
      "--ram",
      "16MiB",
      "--prefill",
      "--workload",
      "random:2MiB/s",
      "-p",
      "max-bandwidth=8MiB/s",
      "--progress",
      "tty",
    ], io);
    assert.equal(code, 0, io.err);
    const lines = io.err.split("\r\x1b[K").filter((l) =>
      l.startsWith("active")
    );
    assert.ok(lines.length >= 3, io.err);
    assert.ok(
      lines.some((l) => /ETA \d+\.\d s \(\+\d+\.\d\) {2}pass \d+$/.test(l)),
      lines.join("\n"),
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("migrate --progress refuses an unknown mode", async () => {
  const io = capture();
  assert.equal(await main(["migrate", "file:/x", "--progress", "bar"], io), 2);
  assert.match(
    io.err,
    /Cannot use --progress "bar": expected auto, tty, lines, off/,
  );
});
