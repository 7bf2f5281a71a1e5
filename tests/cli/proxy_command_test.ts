/**
 * The proxy command between `migrate` and a destination, as separate
 * processes, when things go wrong: each end reports the real cause.
 */
import assert from "node:assert/strict";
import { listenTransport } from "../../mod.ts";
import { finishCli, spawnCli, waitForLine } from "../_helpers/cli_process.ts";

/** A tcp: address where nothing listens (a port just closed). */
async function closedAddress(): Promise<string> {
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const address = listener.address;
  await listener.close();
  return address;
}

Deno.test("cli proxy whose target is not listening: both ends name the real cause", async () => {
  const target = await closedAddress();
  const proxy = spawnCli(["proxy", "tcp:127.0.0.1:0", target, "--json"]);
  const [, address] = await waitForLine(
    proxy,
    /waiting for a migration at (tcp:\S+),/,
  );
  const migrate = spawnCli([
    "migrate",
    address!,
    "--ram",
    "32MiB",
    "--prefill",
    "--json",
  ]);
  const [proxied, migrated] = await Promise.all([
    finishCli(proxy),
    finishCli(migrate),
  ]);
  assert.equal(proxied.code, 1);
  assert.match(
    proxied.stderr,
    new RegExp(`Cannot connect to "${target}": Connection refused`),
  );
  assert.equal(proxied.json.status, "failed");
  assert.equal(migrated.code, 1, migrated.stderr);
  assert.match(
    migrated.stderr,
    /livemig: Cannot complete migration: Cannot (write to|read from) "tcp:127\.0\.0\.1:\d+": (Broken pipe|Connection reset by peer)/,
  );
  assert.equal(migrated.json.status, "failed");
  assert.match(
    String(migrated.json["error-desc"]),
    /Broken pipe|Connection reset by peer/,
  );
});
