import assert from "node:assert/strict";
import { parseGuestFlags } from "../../lib/cli/guest_flags.ts";
import { UsageError } from "../../lib/cli/usage_error.ts";

const OPTIONS = { usage: "Usage: test\n", workload: "idle", prefill: false };

Deno.test("parseGuestFlags() suggests GiB for a --ram in GB", () => {
  assert.throws(
    () => parseGuestFlags({ ram: "1GB" }, OPTIONS),
    new UsageError(
      "Cannot use --ram 1GB: it must be a positive multiple of 4096 bytes (1GB is 1000000000 bytes; did you mean 1GiB?)",
      OPTIONS.usage,
    ),
  );
  assert.throws(
    () => parseGuestFlags({ ram: "100" }, OPTIONS),
    new UsageError(
      "Cannot use --ram 100: it must be a positive multiple of 4096 bytes",
      OPTIONS.usage,
    ),
  );
  assert.equal(parseGuestFlags({ ram: "1GiB" }, OPTIONS).ramBytes, 1024 ** 3);
});

Deno.test("parseGuestFlags() wants a unit for a workload's rate", () => {
  assert.throws(
    () => parseGuestFlags({ workload: "random:100" }, OPTIONS),
    /needs a unit, e\.g\. 100MiB\/s/,
  );
});
