import assert from "node:assert/strict";
import { parseBandwidth, parseParameterArgument } from "../../mod.ts";

Deno.test("parseBandwidth() reads byte and bit rates", () => {
  const cases: [string, number][] = [
    ["100MB/s", 100_000_000],
    ["100MiB/s", 100 * 1024 ** 2],
    ["1.5GiB/s", 1.5 * 1024 ** 3],
    ["512kB/s", 512_000],
    ["512KiB/s", 512 * 1024],
    ["800B/s", 800],
    ["100Mbit/s", 12_500_000],
    ["10Gbit/s", 1_250_000_000],
    ["8kbit/s", 1000],
    ["0", 0],
  ];
  for (const [text, bytesPerSecond] of cases) {
    assert.equal(parseBandwidth(text), bytesPerSecond, text);
  }
});

Deno.test("parseBandwidth() refuses a bare number, suggesting a unit", () => {
  assert.throws(
    () => parseBandwidth("100", 'parameter "max-bandwidth"'),
    new TypeError(
      'Cannot parse parameter "max-bandwidth" "100": a bandwidth needs a unit, e.g. 100MiB/s or 100Mbit/s (a bare number would be bytes per second)',
    ),
  );
  assert.throws(
    () => parseParameterArgument("max-bandwidth=100"),
    /needs a unit, e\.g\. 100MiB\/s/,
  );
});

Deno.test("parseBandwidth() refuses units that mix up bits and bytes", () => {
  for (
    const text of ["10mbps", "10Mbps", "10MBps", "10Mb/s", "10mb/s", "10MB"]
  ) {
    assert.throws(
      () => parseBandwidth(text),
      /write 10MB\/s \(bytes\), 10MiB\/s \(binary bytes\) or 10Mbit\/s \(bits\) per second/,
      text,
    );
  }
  for (const text of ["fast", "-1MB/s", "1e9B/s", "10 parsecs/s", "10iB/s"]) {
    assert.throws(() => parseBandwidth(text), TypeError, text);
  }
});

Deno.test("parseBandwidth() suggests real units for a unit with no prefix it knows", () => {
  for (const text of ["64XB/s", "64iB/s", "64foo"]) {
    assert.throws(
      () => parseBandwidth(text),
      /write 64MB\/s \(bytes\), 64MiB\/s \(binary bytes\) or 64Mbit\/s \(bits\) per second$/,
      text,
    );
  }
});
