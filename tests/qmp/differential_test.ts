/**
 * Differential tests: each script of QMP exchanges runs against QEMU 7.2
 * processes and against `cli.ts run` processes through the same client
 * code, and the answers must be the same — success or error, the error's
 * class and desc, capability names and order, parameter keys and values,
 * the shape of `query-migrate`, the status sequence in `MIGRATION` events
 * and where `STOP`/`RESUME` fall among them — except where listed in
 * {@linkcode EXCEPTIONS} (the README's "Control plane" section gives the
 * same list with the reasons).
 */
import assert from "node:assert/strict";
import { qemuSkipReason } from "../_helpers/qemu.ts";
import { loadTranscript } from "./_fixtures.ts";
import {
  comparableEvents,
  compareEntries,
  type Difference,
  type Entry,
  type Implementation,
  Script,
  startTcpSink,
  startVm,
  stringify,
  type Vm,
  type VmSpec,
} from "./_differential.ts";
import { SCENARIOS } from "./_differential_scenarios.ts";
import { delay } from "../_helpers/delay.ts";

/** A difference the tests accept, and why. */
interface Exception {
  scenarios: readonly string[];
  reason: string;
  applies(difference: Difference): boolean;
}

/** The event orders a `migrate_cancel` sent right behind `migrate` may give. */
const CANCEL_BEHIND_MIGRATE: readonly (readonly string[])[] = [
  ["MIGRATION setup", "MIGRATION cancelling", "MIGRATION cancelled"],
  [
    "MIGRATION setup",
    "MIGRATION cancelling",
    "MIGRATION_PASS",
    "MIGRATION cancelled",
  ],
  [
    "MIGRATION setup",
    "MIGRATION_PASS",
    "MIGRATION active",
    "MIGRATION cancelling",
    "MIGRATION cancelled",
  ],
];

/** The documented exceptions (README, "Control plane"). */
const EXCEPTIONS: readonly Exception[] = [
  {
    scenarios: ["cancel-setup"],
    reason:
      "A migrate_cancel sent right behind migrate runs whenever the main loop gets to it, in either implementation: in setup before the setup pass (setup, cancelling, cancelled), in setup after the migration thread started its setup pass (setup, cancelling, MIGRATION_PASS, cancelled, QEMU 7.2 only), or once active. Each run must end in one of these orders; which one is timing.",
    applies: (d) =>
      d.what === "events" && d.conn === "src" &&
      [d.qemu, d.livemig].every((events) =>
        CANCEL_BEHIND_MIGRATE.some((order) =>
          stringify(order) === stringify(events)
        )
      ),
  },
  {
    scenarios: ["cancel-pre-switchover"],
    reason:
      "A migrate_cancel in pre-switchover: QEMU 7.2 wakes its paused migration thread and sets cancelling, and the thread sometimes moves to device first (its recording has no device; a live run under load had pre-switchover, device, cancelling). livemig goes from pre-switchover to cancelling.",
    applies: (d) => {
      if (d.what !== "events" || d.conn !== "src") return false;
      const qemu = d.qemu as string[];
      const at = qemu.indexOf("MIGRATION device");
      return at > 0 && qemu[at - 1] === "MIGRATION pre-switchover" &&
        stringify(qemu.toSpliced(at, 1)) === stringify(d.livemig);
    },
  },
  {
    scenarios: ["precopy", "pause-before-switchover"],
    reason:
      "livemig's RAM counters count every byte of the stream, the device state too; QEMU 7.2's count only RAM pages. After an idle guest's migration livemig's info migrate has a downtime ram line (the device state, sent while the guest was stopped) where QEMU's has none.",
    applies: (d) =>
      d.what.startsWith("human-monitor-command") &&
      stringify((d.livemig as { return: string[] }).return.filter((line) =>
          line !== "downtime ram:"
        )) === stringify((d.qemu as { return: string[] }).return),
  },
];

/** Runs `scenario` against one implementation. */
async function runScenario(
  implementation: Implementation,
  scenario: (typeof SCENARIOS)[number],
): Promise<Entry[]> {
  const vms: Record<string, Vm> = {};
  try {
    for (const [name, spec] of Object.entries(scenario.vms)) {
      vms[name] = await startVm(implementation, spec as VmSpec);
    }
    const script = new Script(vms);
    await scenario.run(script);
    return script.entries;
  } finally {
    await Promise.all(Object.values(vms).map((vm) => vm.stop()));
  }
}

const skip = qemuSkipReason();

for (const scenario of SCENARIOS) {
  Deno.test({
    name:
      `QMP script "${scenario.name}" gets the same answers from cli.ts run as from QEMU 7.2`,
    ignore: skip !== undefined,
    async fn() {
      const qemu = await runScenario("qemu", scenario);
      const livemig = await runScenario("livemig", scenario);
      const differences = compareEntries(qemu, livemig).filter((difference) =>
        !EXCEPTIONS.some((exception) =>
          exception.scenarios.includes(scenario.name) &&
          exception.applies(difference)
        )
      );
      assert.deepEqual(differences.map(describe), []);
      assert.ok(qemu.length >= scenario.atLeast, `only ${qemu.length} entries`);
    },
  });
}

function describe(difference: Difference): string {
  return `${difference.conn} ${difference.what}\n  QEMU:    ${
    stringify(difference.qemu)
  }\n  livemig: ${stringify(difference.livemig)}`;
}

/**
 * A cancel in `device` cannot be had from a live QEMU 7.2 on demand: its
 * last pass runs holding the main lock, so the cancel waits until the
 * socket drains and may land after completion (the recording tool tried
 * until it landed). So livemig's run of the same script is compared with
 * that recording.
 */
Deno.test('QMP script "cancel-device" gets the answers QEMU 7.2 gave in its recording', async () => {
  const recording = loadTranscript("cancel-device").transcript;
  const qemuEvents = comparableEvents(
    recording.filter((e) => e.conn === "src" && e.event !== undefined).map((
      e,
    ) => e.event === "MIGRATION" ? `MIGRATION ${e.data!.status}` : e.event!),
  );
  const vm = await startVm("livemig", { ramMiB: 128, prefill: true });
  const sink = startTcpSink();
  const s = new Script({ src: vm });
  try {
    await s.execute("src", "migrate-set-capabilities", {
      capabilities: [
        { capability: "events", state: true },
        { capability: "pause-before-switchover", state: true },
      ],
    });
    await s.execute("src", "migrate-set-parameters", {
      "downtime-limit": 2_000_000,
      "max-bandwidth": 4_194_304,
    });
    await s.execute("src", "migrate", { uri: `tcp:127.0.0.1:${sink.port}` });
    await s.waitForStatus("src", "pre-switchover");
    await s.execute("src", "query-status");
    sink.pause();
    await s.execute("src", "migrate-continue", { state: "pre-switchover" });
    await s.waitForStatus("src", "device");
    await delay(300); // the last pass fills the socket buffers and blocks
    await s.execute("src", "migrate_cancel");
    sink.resume();
    await s.waitForStatus("src", "cancelled");
    s.events("src");
    await s.execute("src", "query-migrate");
    await s.execute("src", "query-status");
  } finally {
    await vm.stop();
    await sink.close();
  }
  const results = s.entries.map((entry) => entry.result);
  assert.deepEqual(results, [
    { return: {} },
    { return: {} },
    { return: {} },
    { return: { status: "finish-migrate", singlestep: false, running: false } },
    { return: {} },
    { return: {} },
    qemuEvents,
    { return: { status: "cancelled" } },
    { return: { status: "running", singlestep: false, running: true } },
  ]);
});
