import assert from "node:assert/strict";
import {
  checkCapabilities,
  DEFAULT_CAPABILITIES,
  DEFAULT_PARAMETERS,
  NotSupportedError,
  parseBandwidth,
  parseCapabilityArgument,
  parseDuration,
  parseParameterArgument,
  parseSize,
} from "../../mod.ts";

Deno.test("DEFAULT_PARAMETERS are QEMU 7.2's defaults (dirty-limit's: 8.1's)", () => {
  assert.deepEqual(DEFAULT_PARAMETERS, {
    "max-bandwidth": 134217728,
    "downtime-limit": 300,
    "avail-switchover-bandwidth": 0,
    "xbzrle-cache-size": 67108864,
    "max-postcopy-bandwidth": 0,
    "throttle-trigger-threshold": 50,
    "cpu-throttle-initial": 20,
    "cpu-throttle-increment": 10,
    "cpu-throttle-tailslow": false,
    "max-cpu-throttle": 99,
    "x-vcpu-dirty-limit-period": 1000,
    "vcpu-dirty-limit": 1,
    "multifd-channels": 2,
    "multifd-compression": "none",
    "multifd-zlib-level": 1,
    "multifd-zstd-level": 1,
  });
  assert.ok(Object.values(DEFAULT_CAPABILITIES).every((on) => on === false));
});

Deno.test("parseParameterArgument() accepts human units", () => {
  assert.deepEqual(parseParameterArgument("max-bandwidth=1GiB/s"), [
    "max-bandwidth",
    1024 ** 3,
  ]);
  assert.deepEqual(parseParameterArgument("max-bandwidth=100MB/s"), [
    "max-bandwidth",
    100e6,
  ]);
  assert.deepEqual(parseParameterArgument("downtime-limit=300ms"), [
    "downtime-limit",
    300,
  ]);
  assert.deepEqual(parseParameterArgument("xbzrle-cache-size=1MiB"), [
    "xbzrle-cache-size",
    1 << 20,
  ]);
  assert.deepEqual(parseParameterArgument("avail-switchover-bandwidth=0"), [
    "avail-switchover-bandwidth",
    0,
  ]);
});

Deno.test("parseParameterArgument() refuses QEMU's out-of-range values", () => {
  assert.throws(
    () => parseParameterArgument("downtime-limit=2000001"),
    /range of 0 to 2000000 ms/,
  );
  assert.throws(
    () => parseParameterArgument("xbzrle-cache-size=12288"),
    /power of two no less than the target page size/,
  );
  assert.throws(
    () => parseParameterArgument("xbzrle-cache-size=2048"),
    RangeError,
  );
});

Deno.test("parseParameterArgument() takes the multifd parameters with QEMU 7.2's checks", () => {
  assert.deepEqual(parseParameterArgument("multifd-channels=4"), [
    "multifd-channels",
    4,
  ]);
  assert.deepEqual(parseParameterArgument("multifd-compression=zstd"), [
    "multifd-compression",
    "zstd",
  ]);
  assert.throws(() => parseParameterArgument("multifd-channels=0"), {
    name: "RangeError",
    message: "Parameter 'multifd_channels' expects a value between 1 and 255",
  });
  assert.throws(() => parseParameterArgument("multifd-channels=256"), {
    message: "Parameter 'multifd_channels' expects a value between 1 and 255",
  });
  assert.throws(() => parseParameterArgument("multifd-compression=lz4"), {
    name: "TypeError",
    message: "Parameter 'multifd-compression' does not accept value 'lz4'",
  });
  assert.throws(() => parseParameterArgument("multifd-zlib-level=10"), {
    message: "Parameter 'multifd_zlib_level' expects a value between 0 and 9",
  });
  assert.throws(() => parseParameterArgument("multifd-zstd-level=21"), {
    message: "Parameter 'multifd_zstd_level' expects a value between 0 and 20",
  });
  assert.throws(
    () => parseParameterArgument("multifd-channels=two"),
    /"multifd-channels": it expects an integer/,
  );
});

Deno.test("parseParameterArgument() names what it refuses", () => {
  assert.throws(
    () => parseParameterArgument("announce-step=100"),
    NotSupportedError,
  );
  assert.throws(
    () => parseParameterArgument("compress-level=4"),
    /"compress-level": livemig does not implement it/,
  );
  assert.throws(
    () => parseParameterArgument("warp=9"),
    /"warp": it is not a migration parameter/,
  );
  assert.throws(
    () => parseParameterArgument("max-bandwidth"),
    /expected name=value/,
  );
  assert.throws(
    () => parseParameterArgument("max-bandwidth=fast"),
    /Cannot parse parameter "max-bandwidth" "fast"/,
  );
});

Deno.test("parseCapabilityArgument() takes on/off and names what it refuses", () => {
  assert.deepEqual(parseCapabilityArgument("return-path=off"), [
    "return-path",
    false,
  ]);
  assert.deepEqual(parseCapabilityArgument("events=true"), ["events", true]);
  assert.deepEqual(parseCapabilityArgument("multifd=on"), ["multifd", true]);
  assert.throws(
    () => parseCapabilityArgument("compress=on"),
    NotSupportedError,
  );
  assert.throws(
    () => parseCapabilityArgument("nope=on"),
    /not a migration capability/,
  );
  assert.throws(() => parseCapabilityArgument("xbzrle=yes"), /on or off/);
});

Deno.test("checkCapabilities() refuses QEMU's invalid combinations", () => {
  const caps = { ...DEFAULT_CAPABILITIES };
  assert.throws(
    () => checkCapabilities({ ...caps, "postcopy-preempt": true }),
    /requires "postcopy-ram"/,
  );
  assert.throws(
    () => checkCapabilities({ ...caps, "mapped-ram": true, xbzrle: true }),
    /incompatible with "xbzrle"/,
  );
  checkCapabilities({
    ...caps,
    "postcopy-ram": true,
    "postcopy-preempt": true,
  });
});

Deno.test("parseSize(), parseBandwidth(), parseDuration() read units and refuse junk", () => {
  assert.equal(parseSize("4096"), 4096);
  assert.equal(parseSize("2K"), 2048);
  assert.equal(parseSize("1.5GiB"), 1.5 * 1024 ** 3);
  assert.equal(parseBandwidth("10MiB/s"), 10 * 1024 ** 2);
  assert.equal(parseDuration("1.5s"), 1500);
  assert.equal(parseDuration("2m"), 120000);
  for (const bad of ["", "-1", "12XB", "1e9"]) {
    assert.throws(() => parseSize(bad), TypeError, bad);
  }
  assert.throws(() => parseDuration("10 parsecs"), TypeError);
});
