/**
 * The scripts of the differential tests: what a management program asks
 * a guest's monitor, written once and run against QEMU 7.2 and livemig.
 * The cases follow the recordings in `fixtures/qmp/qemu-7.2/`.
 *
 * @module
 */

import type { QmpValue } from "../../lib/qmp/qmp_json.ts";
import {
  keys,
  migrateShape,
  type Script,
  textShape,
  type VmSpec,
} from "./_differential.ts";
import { delay } from "../_helpers/delay.ts";

/** One script. */
export interface Scenario {
  /** Its name. */
  name: string;
  /** The guests it starts, by name. */
  vms: Readonly<Record<string, VmSpec>>;
  /** The least number of entries it writes down (a check that it ran). */
  atLeast: number;
  /** The exchanges. */
  run(script: Script): Promise<void>;
}

const EVENTS_ON = {
  capabilities: [{ capability: "events", state: true }],
};

/** The migration commands both monitors must list in `query-commands`. */
const MIGRATION_COMMANDS = [
  "calc-dirty-rate",
  "cont",
  "human-monitor-command",
  "migrate",
  "migrate-continue",
  "migrate-incoming",
  "migrate-pause",
  "migrate-recover",
  "migrate-set-capabilities",
  "migrate-set-parameters",
  "migrate-start-postcopy",
  "migrate_cancel",
  "qmp_capabilities",
  "query-commands",
  "query-dirty-rate",
  "query-migrate",
  "query-migrate-capabilities",
  "query-migrate-parameters",
  "query-status",
  "query-version",
  "quit",
  "stop",
];

const hmp = (line: string) => ({ "command-line": line });

/** Sets `events` on both guests and starts the destination listening. */
async function prepare(
  s: Script,
  source: QmpValue[] = [],
): Promise<string> {
  await s.execute("dst", "migrate-set-capabilities", EVENTS_ON);
  await s.execute("dst", "migrate-incoming", { uri: "tcp:127.0.0.1:0" });
  await s.execute("src", "migrate-set-capabilities", {
    capabilities: [{ capability: "events", state: true }, ...source],
  });
  return await s.incomingPort("dst");
}

/** `migrate` to the destination's port (the port is left out of the entry). */
async function migrate(s: Script, port: string): Promise<void> {
  await s.execute("src", "migrate", { uri: `tcp:127.0.0.1:${port}` }, {
    label: "tcp:DST",
  });
}

/** Commands outside a migration, on a running guest and an incoming one. */
async function commands(s: Script): Promise<void> {
  await s.execute("src", "query-migrate");
  await s.execute("src", "human-monitor-command", hmp("info migrate"));
  await s.execute("src", "query-migrate-capabilities");
  await s.execute("src", "query-migrate-parameters");
  await s.execute(
    "src",
    "human-monitor-command",
    hmp("info migrate_parameters"),
  );
  for (
    const capabilities of [
      [{ capability: "postcopy-preempt", state: true }],
      [{ capability: "warp-drive", state: true }],
      [{ capability: "xbzrle", state: "on" }],
    ]
  ) {
    await s.execute("src", "migrate-set-capabilities", { capabilities });
  }
  for (
    const parameters of [
      { "downtime-limit": 3_000_000 },
      { "xbzrle-cache-size": 1000 },
      { "max-bandwidth": -1 },
      { "downtime-limit": -1 },
      { "compress-level": 256 },
      { "avail-switchover-bandwidth": 1 },
      { "max-cpu-throttle": 10 },
      { "multifd-zlib-level": 5 },
    ]
  ) {
    await s.execute("src", "migrate-set-parameters", parameters);
  }
  await s.execute("src", "query-migrate-parameters");
  await s.execute("src", "migrate-set-parameters", {
    "max-bandwidth": 134_217_728,
  });
  await s.execute("src", "migrate-start-postcopy");
  await s.execute("src", "migrate-set-capabilities", {
    capabilities: [{ capability: "postcopy-ram", state: true }],
  });
  await s.execute("src", "migrate-start-postcopy");
  await s.execute("src", "migrate-set-capabilities", {
    capabilities: [{ capability: "postcopy-ram", state: false }],
  });
  await s.execute("src", "migrate-continue", { state: "pre-switchover" });
  await s.execute("src", "migrate-pause");
  await s.execute("src", "migrate-recover", { uri: "tcp:127.0.0.1:1" });
  await s.execute("src", "migrate-incoming", { uri: "tcp:127.0.0.1:0" });
  await s.execute("src", "migrate", { uri: "tcp:127.0.0.1:1", resume: true });
  await s.execute("src", "migrate_cancel");
  await s.execute("src", "migrate-set-capabilities", EVENTS_ON);
  for (
    const uri of [
      "bogus:foo",
      "file:/tmp/livemig-nowhere",
      "",
      "tcp:",
      "tcp:127.0.0.1",
      "unix:",
    ]
  ) {
    await s.execute("src", "migrate", { uri });
    s.events("src");
    await s.execute("src", "query-migrate");
  }
  for (const uri of ["tcp:127.0.0.1:1", "unix:/tmp/livemig-no-such-socket"]) {
    await s.execute("src", "migrate", { uri });
    await s.waitForStatus("src", "failed");
    s.events("src");
    await s.execute("src", "query-migrate");
    await s.execute("src", "human-monitor-command", hmp("info migrate"));
  }
  await s.execute("src", "migrate_cancel");
  await s.execute("src", "migrate-continue", { state: "failed" });
  await dirtyRate(s);
  await runStates(s);
  await incomingCommands(s);
  await s.execute("src", "quit");
  s.events("src");
  s.note("src", "exit code after quit", await s.vm("src").exited);
}

async function dirtyRate(s: Script): Promise<void> {
  const shape = (value: QmpValue) => {
    const info = value as Record<string, QmpValue>;
    return { keys: keys(value), status: info.status, mode: info.mode };
  };
  await s.execute("src", "query-dirty-rate", undefined, { shape });
  await s.execute("src", "calculate-dirty-rate", { "calc-time": 1 });
  for (
    const args of [
      { "calc-time": 0 },
      { "calc-time": 61 },
      { "calc-time": 1, "sample-pages": 1 },
      { "calc-time": 1, "sample-pages": 100_000 },
      { "calc-time": 1, "sample-pages": 256, mode: "dirty-ring" },
    ]
  ) {
    await s.execute("src", "calc-dirty-rate", args);
  }
  await s.execute("src", "calc-dirty-rate", { "calc-time": 1 });
  await delay(200); // QEMU's measuring thread says "measuring" once it runs
  await s.execute("src", "query-dirty-rate", undefined, { shape });
  await s.execute("src", "calc-dirty-rate", { "calc-time": 1 });
  await delay(1500);
  await s.execute("src", "query-dirty-rate", undefined, {
    shape: (value) => ({
      ...(shape(value) as object),
      "dirty-rate": (value as Record<string, QmpValue>)["dirty-rate"],
    }),
  });
}

async function runStates(s: Script): Promise<void> {
  await s.execute("src", "query-version", undefined, {
    shape: (value) => {
      const { qemu } = value as { qemu: { major: number; minor: number } };
      return { major: qemu.major, minor: qemu.minor, keys: keys(value) };
    },
  });
  await s.execute("src", "query-commands", undefined, {
    shape: (value) => {
      const names = new Set((value as { name: string }[]).map((c) => c.name));
      return MIGRATION_COMMANDS.filter((name) => !names.has(name));
    },
  });
  await s.execute("src", "query-status");
  for (const command of ["stop", "stop", "cont", "cont"]) {
    await s.execute("src", command);
    s.events("src");
    await s.execute("src", "query-status");
  }
  await s.execute("src", "human-monitor-command", hmp("info status"));
  await s.execute("src", "human-monitor-command", hmp("no-such-command"));
}

async function incomingCommands(s: Script): Promise<void> {
  await s.execute("dst", "query-status");
  await s.execute("dst", "query-migrate");
  for (const command of ["stop", "cont"]) {
    await s.execute("dst", command);
    s.events("dst");
    await s.execute("dst", "query-status");
  }
  await s.execute("dst", "human-monitor-command", hmp("info status"));
  await s.execute("dst", "migrate", { uri: "tcp:127.0.0.1:1" });
  await s.execute("dst", "migrate-recover", { uri: "tcp:127.0.0.1:0" });
  await s.execute("dst", "migrate-pause");
  await s.execute("dst", "migrate-set-capabilities", EVENTS_ON);
  await s.execute("dst", "migrate-incoming", { uri: "bogus:foo" });
  s.events("dst");
  await s.execute("dst", "query-migrate");
  await s.execute("dst", "migrate-incoming", { uri: "tcp:127.0.0.1:0" });
  s.events("dst");
  await s.execute("dst", "query-migrate", undefined, { shape: migrateShape });
  await s.execute("dst", "human-monitor-command", hmp("info migrate"), {
    shape: textShape,
  });
  await s.execute("dst", "migrate-incoming", { uri: "tcp:127.0.0.1:0" });
  await s.execute("dst", "migrate_cancel");
  await s.execute("dst", "query-migrate", undefined, { shape: migrateShape });
}

/** An idle guest migrated over tcp; what both ends say before and after. */
async function precopy(s: Script): Promise<void> {
  await s.execute("dst", "query-status");
  const port = await prepare(s);
  await s.execute("src", "query-migrate");
  await migrate(s, port);
  await s.waitForStatus("src", "completed");
  await s.waitForStatus("dst", "completed");
  s.events("src");
  s.events("dst");
  await afterCompletion(s, port);
  await s.execute("src", "cont");
  s.events("src");
  await s.execute("src", "query-status");
  await s.execute("src", "stop");
  s.events("src");
  await s.execute("src", "query-status");
}

/** What both ends answer once a migration completed. */
async function afterCompletion(s: Script, port: string): Promise<void> {
  await s.execute("src", "query-migrate", undefined, { shape: migrateShape });
  await s.execute("src", "human-monitor-command", hmp("info migrate"), {
    shape: textShape,
  });
  await s.execute("src", "query-status");
  await s.execute("dst", "query-migrate", undefined, { shape: migrateShape });
  await s.execute("dst", "human-monitor-command", hmp("info migrate"), {
    shape: textShape,
  });
  await s.execute("dst", "query-status");
  await s.execute("src", "migrate_cancel");
  s.events("src");
  await s.execute("src", "query-migrate", undefined, { shape: migrateShape });
  await migrate(s, port);
  await s.execute("src", "migrate-continue", { state: "completed" });
  await s.execute("dst", "migrate-incoming", { uri: "tcp:127.0.0.1:0" });
  await s.execute("dst", "migrate_cancel");
  s.events("dst");
}

/** The same with pause-before-switchover: pre-switchover, then migrate-continue. */
async function pauseBeforeSwitchover(s: Script): Promise<void> {
  const port = await prepare(s, [
    { capability: "pause-before-switchover", state: true },
  ]);
  await s.execute("src", "migrate-continue", { state: "pre-switchover" });
  await migrate(s, port);
  await s.waitForStatus("src", "pre-switchover");
  s.events("src");
  await s.execute("src", "query-migrate", undefined, { shape: migrateShape });
  await s.execute("src", "human-monitor-command", hmp("info migrate"), {
    shape: textShape,
  });
  await s.execute("src", "query-status");
  await s.execute("src", "cont");
  await s.execute("dst", "query-migrate", undefined, { shape: migrateShape });
  await s.execute("dst", "query-status");
  for (
    const [command, args] of [
      ["migrate-set-capabilities", {
        capabilities: [{ capability: "xbzrle", state: true }],
      }],
      ["migrate", { uri: "tcp:127.0.0.1:1" }],
      ["migrate-pause", undefined],
      ["migrate-start-postcopy", undefined],
      ["migrate-continue", { state: "active" }],
      ["migrate-continue", { state: "device" }],
      ["migrate-set-parameters", { "downtime-limit": 400 }],
    ] as const
  ) {
    await s.execute("src", command, args);
  }
  await s.execute("src", "query-migrate-parameters", undefined, {
    shape: (value) => (value as Record<string, QmpValue>)["downtime-limit"],
  });
  s.events("src");
  await s.execute("src", "migrate-continue", { state: "pre-switchover" });
  await s.waitForStatus("src", "completed");
  await s.waitForStatus("dst", "completed");
  s.events("src");
  s.events("dst");
  await afterCompletion(s, port);
}

/**
 * `migrate` and `migrate_cancel` sent together, the migration held back
 * by a low max-bandwidth so it cannot complete first.
 */
async function cancelInSetup(s: Script): Promise<void> {
  const port = await prepare(s);
  await s.execute("src", "migrate-set-parameters", { "max-bandwidth": 8192 });
  const src = s.vm("src").qmp;
  const [migrated, cancelled] = await Promise.all([
    src.execute("migrate", { uri: `tcp:127.0.0.1:${port}` }),
    src.execute("migrate_cancel"),
  ]);
  s.note("src", "migrate + migrate_cancel", [migrated, cancelled]);
  await s.waitForStatus("src", "cancelled");
  await s.waitForStatus("dst", "failed");
  await cancelled_(s);
}

/** Cancelled half a second into active. */
async function cancelInActive(s: Script): Promise<void> {
  const port = await prepare(s);
  await s.execute("src", "migrate-set-parameters", {
    "downtime-limit": 1,
    "max-bandwidth": 8192,
  });
  await migrate(s, port);
  await s.waitForStatus("src", "active");
  await delay(500);
  await s.execute("src", "query-migrate", undefined, { shape: migrateShape });
  await s.execute("src", "migrate_cancel");
  await s.waitForStatus("src", "cancelled");
  await s.waitForStatus("dst", "failed");
  await cancelled_(s);
  await s.execute("src", "migrate_cancel");
  await s.execute("src", "migrate-set-capabilities", {
    capabilities: [{ capability: "xbzrle", state: true }],
  });
}

/** Cancelled while paused in pre-switchover. */
async function cancelInPreSwitchover(s: Script): Promise<void> {
  const port = await prepare(s, [
    { capability: "pause-before-switchover", state: true },
  ]);
  await migrate(s, port);
  await s.waitForStatus("src", "pre-switchover");
  await s.execute("src", "query-status");
  await s.execute("src", "migrate_cancel");
  await s.waitForStatus("src", "cancelled");
  await s.waitForStatus("dst", "failed");
  await cancelled_(s);
  await s.execute("src", "migrate-continue", { state: "pre-switchover" });
}

/** What a cancelled migration leaves: both ends' events, the source running. */
async function cancelled_(s: Script): Promise<void> {
  s.events("src");
  s.events("dst");
  await s.execute("src", "query-migrate");
  await s.execute("src", "human-monitor-command", hmp("info migrate"));
  await s.execute("src", "query-status");
  s.note("dst", "exit code", await s.vm("dst").exited);
}

/** `migrate_cancel` after completion, on both ends. */
async function cancelAfterCompletion(s: Script): Promise<void> {
  const port = await prepare(s);
  await migrate(s, port);
  await s.waitForStatus("src", "completed");
  await s.waitForStatus("dst", "completed");
  await s.execute("src", "migrate_cancel");
  await s.execute("dst", "migrate_cancel");
  s.events("src");
  s.events("dst");
  await s.execute("src", "query-migrate", undefined, { shape: migrateShape });
  await s.execute("src", "query-status");
  await s.execute("dst", "query-migrate", undefined, { shape: migrateShape });
}

const PAIR = { src: {}, dst: { incoming: true } } as const;

/** The scripts. */
export const SCENARIOS: readonly Scenario[] = [
  { name: "commands", vms: PAIR, atLeast: 100, run: commands },
  { name: "precopy", vms: PAIR, atLeast: 20, run: precopy },
  {
    name: "pause-before-switchover",
    vms: PAIR,
    atLeast: 30,
    run: pauseBeforeSwitchover,
  },
  { name: "cancel-setup", vms: PAIR, atLeast: 8, run: cancelInSetup },
  { name: "cancel-active", vms: PAIR, atLeast: 10, run: cancelInActive },
  {
    name: "cancel-pre-switchover",
    vms: PAIR,
    atLeast: 10,
    run: cancelInPreSwitchover,
  },
  {
    name: "cancel-completed",
    vms: PAIR,
    atLeast: 8,
    run: cancelAfterCompletion,
  },
];
