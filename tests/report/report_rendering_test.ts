/**
 * Renders a real migration's report with headless Chromium, as a person
 * would look at it. Skips with a message when Chromium is not installed
 * (Debian package `chromium`; .ci/run installs it).
 */
import assert from "node:assert/strict";
import { main } from "../../cli.ts";
import { capture } from "../cli/_cli.ts";

function findChromium(): string | undefined {
  for (const name of ["chromium", "chromium-browser"]) {
    try {
      const status = new Deno.Command(name, {
        args: ["--version"],
        stdout: "null",
        stderr: "null",
      }).outputSync();
      if (status.success) return name;
    } catch {
      // not installed under this name
    }
  }
  return undefined;
}

const chromium = findChromium();

Deno.test({
  name: "migrate --report writes an SVG that Chromium renders",
  ignore: chromium === undefined,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const io = capture();
      const code = await main([
        "migrate",
        `file:${dir}/stream.mig`,
        "--ram",
        "32MiB",
        "--prefill",
        "--workload",
        "random:8MiB/s",
        "-p",
        "max-bandwidth=32MiB/s",
        "--report",
        `${dir}/report.svg`,
      ], io);
      assert.equal(code, 0, io.err);
      assert.match(io.err, /report written to .*report\.svg/);
      const svg = await Deno.readTextFile(`${dir}/report.svg`);
      assert.match(svg, /livemig migrate file:/);
      const shot = await new Deno.Command(chromium!, {
        args: [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--hide-scrollbars",
          `--user-data-dir=${dir}/profile`,
          "--window-size=1000,580",
          `--screenshot=${dir}/report.png`,
          `file://${dir}/report.svg`,
        ],
        stdout: "null",
        stderr: "piped",
      }).output();
      assert.ok(shot.success, new TextDecoder().decode(shot.stderr));
      const png = await Deno.readFile(`${dir}/report.png`);
      assert.deepEqual([...png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
      // A blank page compresses to a few hundred bytes; the chart does not.
      assert.ok(png.byteLength > 10_000, `${png.byteLength} bytes`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

if (chromium === undefined) {
  // deno-lint-ignore no-console
  console.warn(
    "report_rendering_test: chromium is not installed (apt-get install -y chromium); the rendering test is skipped",
  );
}
