/**
 * formatInfoMigrate() against every `info migrate` QEMU 7.2 answered in the
 * recordings, each compared with the `query-migrate` reply QEMU gave just
 * before on the same connection.
 */
import assert from "node:assert/strict";
import {
  formatInfoMigrate,
  type InfoMigrateSource,
} from "../../lib/qmp/format_info_migrate.ts";
import { parseQmpJson } from "../../lib/qmp/qmp_json.ts";
import type { MigrationInfo } from "../../lib/migration/migration_info.ts";
import { exchanges, loadTranscript, SCENARIOS } from "./_fixtures.ts";

/** Lines whose values move while a migration runs. */
const MOVING = new Set([
  "total time",
  "transferred ram",
  "throughput",
  "remaining ram",
  "duplicate",
  "normal",
  "normal bytes",
  "dirty sync count",
  "pages-per-second",
  "precopy ram",
  "xbzrle transferred",
  "xbzrle pages",
  "xbzrle cache miss",
  "xbzrle cache miss rate",
  "xbzrle encoding rate",
  "xbzrle overflow",
]);

/** Lines that appear only while a counter is non-zero. */
const OPTIONAL = new Set([
  "dirty pages rate",
  "postcopy request count",
  "precopy ram",
  "downtime ram",
  "postcopy ram",
]);

const SETTLED = ["completed", "failed", "cancelled", undefined];

interface Case {
  scenario: string;
  conn: string;
  query: InfoMigrateSource;
  text: string;
}

function cases(): Case[] {
  const result: Case[] = [];
  for (const scenario of SCENARIOS) {
    const last = new Map<string, InfoMigrateSource>();
    for (const exchange of exchanges(loadTranscript(scenario))) {
      const command = exchange.request?.execute;
      const reply = parseQmpJson(exchange.raw) as { return?: unknown };
      if (reply.return === undefined) continue;
      if (command === "query-migrate") {
        last.set(exchange.conn, reply.return as InfoMigrateSource);
      } else if (
        command === "human-monitor-command" &&
        exchange.request?.arguments?.["command-line"] === "info migrate"
      ) {
        const query = last.get(exchange.conn);
        if (query === undefined) continue;
        result.push({
          scenario,
          conn: exchange.conn,
          query,
          text: reply.return as string,
        });
      }
    }
  }
  return result;
}

function fields(text: string): [string, string][] {
  return text.split("\r\n").filter((line) => line !== "").map((line) => {
    const colon = line.indexOf(": ");
    return colon === -1
      ? [line, ""]
      : [line.slice(0, colon), line.slice(colon + 2)];
  });
}

const ALL = cases();

Deno.test("the recordings hold info migrate in every status worth showing", () => {
  const statuses = new Set(ALL.map((c) => c.query.status ?? "none"));
  for (
    const status of [
      "none",
      "active",
      "pre-switchover",
      "completed",
      "failed",
      "cancelled",
    ]
  ) {
    assert.ok(statuses.has(status), `no info migrate recorded in ${status}`);
  }
  assert.ok(ALL.some((c) => c.query["xbzrle-cache"] !== undefined));
  assert.ok(ALL.some((c) => c.query["socket-address"] !== undefined));
});

for (const [index, c] of ALL.entries()) {
  const status = c.query.status ?? "none";
  Deno.test(`formatInfoMigrate() writes QEMU's info migrate: ${c.scenario}.json #${index} (${c.conn}, ${status})`, () => {
    const text = formatInfoMigrate(c.query);
    if (SETTLED.includes(c.query.status) || c.query.ram === undefined) {
      assert.equal(text, c.text);
      return;
    }
    const ours = fields(text).filter(([label]) => !OPTIONAL.has(label));
    const qemu = fields(c.text).filter(([label]) => !OPTIONAL.has(label));
    assert.deepEqual(
      ours.map(([label, value]) =>
        MOVING.has(label) ? label : `${label}: ${value}`
      ),
      qemu.map(([label, value]) =>
        MOVING.has(label) ? label : `${label}: ${value}`
      ),
    );
  });
}

Deno.test("formatInfoMigrate() takes livemig's MigrationInfo and treats none as no migration", () => {
  const info: MigrationInfo = { status: "none" };
  assert.equal(
    formatInfoMigrate(info, { lineEnding: "\n" }).split("\n").length,
    8,
  );
});

Deno.test("formatInfoMigrate() writes blocked reasons, throttle, blocktime and other sockets", () => {
  const text = formatInfoMigrate({
    "blocked-reasons": ["a device"],
    status: "active",
    "total-time": 5,
    "cpu-throttle-percentage": 20,
    "postcopy-blocktime": 7,
    "postcopy-vcpu-blocktime": [5, 3, 4, 10, 3n],
    "socket-address": [
      { type: "unix", path: "/run/vm.sock" },
      { type: "vsock", cid: "3", port: "4" },
      { type: "fd", str: "7" },
    ],
    vfio: { transferred: 4096n },
    disk: { transferred: 2048, remaining: 0, total: 4096 },
  }, { globals: [], lineEnding: "\n" });
  assert.equal(
    text,
    [
      "globals:",
      "Outgoing migration blocked:",
      "  a device",
      "Migration status: active",
      "total time: 5 ms",
      "transferred disk: 2 kbytes",
      "remaining disk: 0 kbytes",
      "total disk: 4 kbytes",
      "cpu throttle percentage: 20",
      "postcopy blocktime: 7",
      "postcopy vcpu blocktime: 3-5,10",
      "socket address: [",
      "\tunix:/run/vm.sock",
      "\tvsock:3:4",
      "\tfd:7",
      "]",
      "vfio device transferred: 4 kbytes",
      "",
    ].join("\n"),
  );
});

Deno.test("formatInfoMigrate() rounds throughput like C's %0.2f", () => {
  const throughput = (mbps: number) =>
    fields(
      formatInfoMigrate({ status: "completed", ram: { mbps } }),
    ).find(([label]) => label === "throughput")![1];
  assert.equal(throughput(55.991466666666668), "55.99 mbps");
  assert.equal(throughput(0.125), "0.12 mbps");
  assert.equal(throughput(0.375), "0.38 mbps");
  assert.equal(throughput(0.394121069920225), "0.39 mbps");
});
