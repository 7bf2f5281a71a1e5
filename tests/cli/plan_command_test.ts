import assert from "node:assert/strict";
import {
  GuestMemory,
  HostedGuest,
  listenTransport,
  MigrationMonitor,
  predictMigration,
} from "../../mod.ts";
import { run } from "./_cli.ts";

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

Deno.test("plan prints a converging prediction and exits 0", async () => {
  const args = [
    "plan",
    "--ram",
    "1GiB",
    "--dirty-rate",
    "50MiB/s",
    "--bandwidth",
    "1GiB/s",
    "--downtime-limit",
    "300",
  ];
  const text = await run(args);
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, /^guest {8}1\.0 GiB RAM, dirtying 50\.0 MiB\/s/m);
  assert.match(text.out, /precopy passes at 128\.0 MiB\/s/);
  assert.match(text.out, /^prediction {3}converges in precopy: \d+ passes/m);
  assert.doesNotMatch(text.out, /to converge/);
  const json = await run([...args, "--json"]);
  assert.equal(json.code, 0);
  const plan = JSON.parse(json.out.trim().split("\n").at(-1)!);
  const expected = predictMigration({
    ramBytes: GIB,
    dirtyBytesPerSecond: 50 * MIB,
    linkBytesPerSecond: GIB,
    parameters: { "downtime-limit": 300 },
  });
  assert.equal(plan.converges, true);
  assert.equal(plan.ending, "precopy");
  assert.equal(plan.passes, expected.passes);
  assert.equal(plan["total-time"], expected.totalTimeMs);
  assert.equal(plan.downtime, expected.downtimeMs);
  assert.equal(plan["bytes-sent"], expected.bytesSent);
  assert.equal(plan.threshold, Math.round(128 * MIB * 0.3));
  assert.deepEqual(plan.suggestions, []);
  assert.match(text.out, new RegExp(`${expected.passes} passes`));
});

Deno.test("plan says what would make a guest converge, and each suggestion does", async () => {
  const base = [
    "plan",
    "--ram",
    "1GiB",
    "--dirty-rate",
    "200MiB/s",
    "--bandwidth",
    "1GiB/s",
  ];
  const text = await run(base);
  assert.equal(text.code, 1);
  assert.match(text.out, /does not converge in precopy/);
  assert.match(text.out, /^to converge {2}-p max-bandwidth=/m);
  assert.match(text.out, /^ {9}or {2}postcopy \(-c postcopy-ram=on/m);
  const json = await run([...base, "--json"]);
  assert.equal(json.code, 1);
  const plan = JSON.parse(json.out);
  assert.equal(plan.converges, false);
  assert.equal(plan.ending, "none");
  assert.ok(plan["final-pending"] > plan.threshold);
  const kinds = plan.suggestions.map((s: { kind: string }) => s.kind);
  assert.deepEqual(kinds, [
    "max-bandwidth",
    "postcopy",
    "xbzrle",
    "auto-converge",
    "downtime-limit",
  ]);
  const value = (kind: string) =>
    plan.suggestions.find((s: { kind: string }) => s.kind === kind).value;
  // Fed back, every suggestion converges within the 30 passes the
  // planner allows a suggestion; a tenth less of it does not.
  const passes = async (args: string[]) => {
    const fed = JSON.parse((await run([...args, "--json"])).out);
    return fed.ending === "precopy" ? fed.passes : Infinity;
  };
  const bandwidth = value("max-bandwidth");
  assert.ok(
    await passes([...base, "-p", `max-bandwidth=${bandwidth}B/s`]) <= 30,
  );
  assert.ok(
    await passes([
      ...base,
      "-p",
      `max-bandwidth=${Math.floor(bandwidth * 0.9)}B/s`,
    ]) > 30,
  );
  const downtime = value("downtime-limit");
  assert.ok(await passes([...base, "--downtime-limit", `${downtime}`]) <= 30);
  assert.ok(
    await passes([
      ...base,
      "--downtime-limit",
      `${Math.floor(downtime * 0.9)}`,
    ]) > 30,
  );
  const throttled = (rate: number) => [
    "plan",
    "--ram",
    "1GiB",
    "--dirty-rate",
    `${Math.floor(rate)}B/s`,
    "--bandwidth",
    "1GiB/s",
  ];
  const rate = value("auto-converge");
  assert.ok(await passes(throttled(rate)) <= 30);
  assert.ok(await passes(throttled(rate * 1.1)) > 30);
  const postcopy = await run([
    ...base,
    "-c",
    "postcopy-ram=on",
    "--postcopy-after",
    "1",
    "--json",
  ]);
  assert.equal(postcopy.code, 0);
  assert.equal(JSON.parse(postcopy.out).ending, "postcopy");
});

Deno.test("plan suggests XBZRLE with a cache that holds the hot set", async () => {
  const base = [
    "plan",
    "--ram",
    "8GiB",
    "--dirty-rate",
    "2GiB/s",
    "--hot-set",
    "1GiB",
    "--bandwidth",
    "10Gbit/s",
    "-p",
    "max-bandwidth=10Gbit/s",
  ];
  const text = await run(base);
  assert.equal(text.code, 1);
  const line = text.out.split("\n").find((l) => l.includes("xbzrle"))!;
  assert.match(line, /-c xbzrle=on -p xbzrle-cache-size=1\.0GiB,/);
  const fed = await run([
    ...base,
    "-c",
    "xbzrle=on",
    "-p",
    "xbzrle-cache-size=1.0GiB",
  ]);
  assert.equal(fed.code, 0, fed.out + fed.err);
});

Deno.test("plan refuses bad input with usage errors", async () => {
  const cases: [string[], RegExp][] = [
    [["--dirty-rate", "1MB/s", "--bandwidth", "1GB/s"], /plan needs --ram/],
    [["--ram", "1GiB", "--bandwidth", "1GB/s"], /plan needs --dirty-rate/],
    [["--ram", "1GiB", "--dirty-rate", "1MB/s"], /plan needs --bandwidth/],
    [
      ["--ram", "1GiB", "--dirty-rate", "50", "--bandwidth", "1GB/s"],
      /Cannot parse --dirty-rate "50": a bandwidth needs a unit/,
    ],
    [
      ["--ram", "1GiB", "--dirty-rate", "1MB/s", "--bandwidth", "0B/s"],
      /--bandwidth must be more than 0/,
    ],
    [
      [
        "--ram",
        "1GiB",
        "--hot-set",
        "2GiB",
        "--dirty-rate",
        "1MB/s",
        "--bandwidth",
        "1GB/s",
      ],
      /--hot-set \(2147483648 bytes\) is larger than the RAM/,
    ],
    [
      [
        "--ram",
        "1GiB",
        "--dirty-rate",
        "1MB/s",
        "--bandwidth",
        "1GB/s",
        "--postcopy-after",
        "2",
      ],
      /--postcopy-after needs -c postcopy-ram=on/,
    ],
    [
      [
        "--ram",
        "1GiB",
        "--dirty-rate",
        "1MB/s",
        "--bandwidth",
        "1GB/s",
        "-c",
        "compress=on",
      ],
      /compress/,
    ],
    [
      ["--qmp", "unix:/nonexistent", "--calc-time", "0"],
      /--calc-time takes whole seconds from 1 to 60/,
    ],
    [["extra"], /plan takes no positional argument: received 1/],
  ];
  for (const [args, message] of cases) {
    const result = await run(["plan", ...args]);
    assert.equal(result.code, 2, `${args.join(" ")}: ${result.err}`);
    assert.match(result.err, message);
    assert.equal(result.out, "");
  }
});

Deno.test("plan --qmp samples a running guest's dirty rate over QMP", async () => {
  const memory = new GuestMemory([{ idstr: "pc.ram", size: 16 * MIB }]);
  const monitor = new MigrationMonitor({ guest: new HostedGuest({ memory }) });
  const listener = await listenTransport("tcp:127.0.0.1:0");
  const serving = monitor.serve(listener);
  try {
    // livemig's monitor has no query-memory-size-summary: --ram is needed.
    const without = await run([
      "plan",
      "--qmp",
      listener.address,
      "--bandwidth",
      "1GiB/s",
    ]);
    assert.equal(without.code, 2);
    assert.match(
      without.err,
      /plan needs --ram: the monitor at tcp:127\.0\.0\.1:\d+ has no query-memory-size-summary/,
    );
    // The guest writes all of its 16 MiB once during the 1 s measurement.
    const writing = new Promise((resolve) => setTimeout(resolve, 300)).then(
      () => memory.blocks[0]!.bytes.fill(7),
    );
    const result = await run([
      "plan",
      "--qmp",
      listener.address,
      "--ram",
      "16MiB",
      "--bandwidth",
      "1GiB/s",
      "--json",
    ]);
    await writing;
    assert.equal(result.code, 0, result.err);
    assert.match(result.err, /sampling the guest at tcp:127\.0\.0\.1:\d+/);
    const plan = JSON.parse(result.out);
    const rate = plan.input["dirty-rate"] / MIB;
    assert.ok(rate >= 14 && rate <= 16, `${rate} MiB/s`);
    assert.equal(plan.input.parameters["max-bandwidth"], 128 * MIB);
    assert.equal(plan.input.parameters["downtime-limit"], 300);
    assert.equal(plan.input.capabilities.xbzrle, false);
  } finally {
    await listener.close();
    await monitor.close();
    await serving.catch(() => {});
  }
});
