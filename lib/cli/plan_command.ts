import {
  type MigrationModelInput,
  type MigrationPlan,
  parseBandwidth,
  parseDuration,
  parseSize,
  planMigration,
  type PlanSuggestion,
} from "../../mod.ts";
import { type Command, defineCommand } from "./define_command.ts";
import { formatJson } from "./format_json.ts";
import { formatMigrationPlan } from "./format_migration_plan.ts";
import { parseMigrationSettings } from "./parse_migration_settings.ts";
import {
  type SampledGuest,
  sampleGuestOverQmp,
} from "./sample_guest_over_qmp.ts";
import { asUsageError, UsageError } from "./usage_error.ts";

const USAGE =
  `Usage: livemig plan --ram SIZE --dirty-rate RATE --bandwidth RATE [options]
       livemig plan --qmp SOCKET --bandwidth RATE [options]

Predicts a precopy migration before it runs: whether it converges, the
passes, total time, downtime and bytes sent, and when it does not converge,
what would make it (more bandwidth, postcopy, xbzrle, a throttle, a longer
downtime-limit). The model replays livemig's own precopy loop with the
switchover decision the engine uses (QEMU's: threshold = bandwidth x
downtime-limit).

Options:
  --ram SIZE           Guest RAM, e.g. 1GiB
  --dirty-rate RATE    Bytes/s the guest writes (one page dirtied per page
                       size written), e.g. 50MiB/s
  --hot-set SIZE       The writes fall in this much RAM (default: all of it)
  --bandwidth RATE     What the link carries, e.g. 1GiB/s or 10Gbit/s
                       (precopy also stays under max-bandwidth, 128MiB/s
                       unless -p sets it)
  --downtime-limit MS  Longest acceptable pause (default 300; 1s, 300ms ...)
  -c, --capability NAME=on|off
                       xbzrle and postcopy-ram change the prediction
  -p, --parameter NAME=VALUE
                       max-bandwidth, avail-switchover-bandwidth,
                       xbzrle-cache-size, max-postcopy-bandwidth, ...
  --postcopy-after N   With -c postcopy-ram=on: start postcopy after N passes
  --qmp SOCKET         Sample a running guest (QEMU 7.2 or livemig run) over
                       QMP: RAM from query-memory-size-summary, dirty rate
                       from calc-dirty-rate, parameters and capabilities
                       from the monitor; flags given override them
  --calc-time S        Seconds calc-dirty-rate measures for (default 1)
  --json               Print the plan as one JSON object (last line)
  -h, --help           Show this help

Exit status: 0 the migration converges (in precopy or postcopy), 1 it
does not or the guest could not be sampled, 2 usage error.
`;

const FLAGS = {
  ram: { type: "string" },
  "dirty-rate": { type: "string" },
  "hot-set": { type: "string" },
  bandwidth: { type: "string" },
  "downtime-limit": { type: "string" },
  capability: { type: "string", short: "c", multiple: true },
  parameter: { type: "string", short: "p", multiple: true },
  "postcopy-after": { type: "string" },
  qmp: { type: "string" },
  "calc-time": { type: "string" },
  json: { type: "boolean" },
} as const;

/**
 * `livemig plan`: predicts a migration from the guest's RAM, dirty rate
 * and the link (given, or sampled from a running guest over QMP), and
 * says what would make it converge; exits 0 when it converges, 1 when not.
 *
 * @example Usage
 * ```ts
 * import { PLAN_COMMAND } from "./plan_command.ts";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * const io = { writeOut: (text: string) => (out += text), writeErr: () => {}, errIsTerminal: false };
 * const args = ["--ram", "1GiB", "--dirty-rate", "50MiB/s", "--bandwidth", "1GiB/s", "--json"];
 * assert.equal(await PLAN_COMMAND.run(args, io), 0);
 * assert.equal(JSON.parse(out).converges, true);
 * ```
 */
export const PLAN_COMMAND: Command = defineCommand({
  usage: USAGE,
  flags: FLAGS,
  positionals: [],
  wrongCount: (count) => `plan takes no positional argument: received ${count}`,
  async run({ flags }, io) {
    const settings = asUsageError(
      USAGE,
      () => parseMigrationSettings(flags.capability, flags.parameter),
    );
    const given = asUsageError(USAGE, () => parseGiven(flags));
    let sampled: SampledGuest | undefined;
    if (flags.qmp !== undefined) {
      const calcTimeS = asUsageError(USAGE, () => parseCalcTime(flags));
      io.writeErr(
        `sampling the guest at ${flags.qmp} (calc-dirty-rate, ${calcTimeS} s)\n`,
      );
      sampled = await sampleGuestOverQmp(flags.qmp, { calcTimeS });
    }
    const ramBytes = given.ramBytes ?? sampled?.ramBytes;
    const dirty = given.dirtyBytesPerSecond ?? sampled?.dirtyBytesPerSecond;
    if (ramBytes === undefined) {
      throw new UsageError(
        sampled
          ? `plan needs --ram: the monitor at ${flags.qmp} has no query-memory-size-summary`
          : "plan needs --ram SIZE (or --qmp SOCKET)",
        USAGE,
      );
    }
    if (dirty === undefined) {
      throw new UsageError(
        "plan needs --dirty-rate RATE (or --qmp SOCKET)",
        USAGE,
      );
    }
    if (given.linkBytesPerSecond === undefined) {
      throw new UsageError("plan needs --bandwidth RATE (the link)", USAGE);
    }
    if (given.hotSetBytes !== undefined && given.hotSetBytes > ramBytes) {
      throw new UsageError(
        `--hot-set (${given.hotSetBytes} bytes) is larger than the RAM (${ramBytes} bytes)`,
        USAGE,
      );
    }
    const parameters = { ...sampled?.parameters, ...settings.parameters };
    if (given.downtimeLimitMs !== undefined) {
      parameters["downtime-limit"] = given.downtimeLimitMs;
    }
    const input: MigrationModelInput = {
      ramBytes,
      dirtyBytesPerSecond: dirty,
      linkBytesPerSecond: given.linkBytesPerSecond,
      parameters,
      capabilities: { ...sampled?.capabilities, ...settings.capabilities },
      ...(given.hotSetBytes !== undefined
        ? { hotSetBytes: given.hotSetBytes }
        : {}),
      ...(given.postcopyAfter !== undefined
        ? { postcopyAfterPasses: given.postcopyAfter }
        : {}),
    };
    if (
      input.postcopyAfterPasses !== undefined &&
      !input.capabilities?.["postcopy-ram"]
    ) {
      throw new UsageError(
        "--postcopy-after needs -c postcopy-ram=on",
        USAGE,
      );
    }
    const plan = planMigration(input);
    if (flags.json) {
      io.writeOut(formatJson(planJson(input, plan)) + "\n");
    } else {
      io.writeOut(formatMigrationPlan(input, plan));
    }
    return plan.prediction.converges ? 0 : 1;
  },
});

interface GivenValues {
  ramBytes?: number;
  dirtyBytesPerSecond?: number;
  hotSetBytes?: number;
  linkBytesPerSecond?: number;
  downtimeLimitMs?: number;
  postcopyAfter?: number;
}

function parseGiven(
  flags: { [K in keyof typeof FLAGS]?: unknown },
): GivenValues {
  const text = (name: keyof typeof FLAGS) =>
    typeof flags[name] === "string" ? flags[name] as string : undefined;
  const values: GivenValues = {};
  const ram = text("ram");
  if (ram !== undefined) values.ramBytes = parseSize(ram, "--ram");
  const dirty = text("dirty-rate");
  if (dirty !== undefined) {
    values.dirtyBytesPerSecond = parseBandwidth(dirty, "--dirty-rate");
  }
  const hot = text("hot-set");
  if (hot !== undefined) values.hotSetBytes = parseSize(hot, "--hot-set");
  const link = text("bandwidth");
  if (link !== undefined) {
    values.linkBytesPerSecond = parseBandwidth(link, "--bandwidth");
    if (values.linkBytesPerSecond === 0) {
      throw new RangeError("--bandwidth must be more than 0");
    }
  }
  const downtime = text("downtime-limit");
  if (downtime !== undefined) {
    values.downtimeLimitMs = parseDuration(downtime, "--downtime-limit");
  }
  const after = text("postcopy-after");
  if (after !== undefined) {
    const passes = Number(after);
    if (!Number.isInteger(passes) || passes < 0 || after.trim() === "") {
      throw new TypeError(
        `--postcopy-after takes a number of passes: received "${after}"`,
      );
    }
    values.postcopyAfter = passes;
  }
  return values;
}

function parseCalcTime(flags: { "calc-time"?: string }): number {
  const text = flags["calc-time"] ?? "1";
  const seconds = Number(text);
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 60) {
    throw new RangeError(
      `--calc-time takes whole seconds from 1 to 60, as calc-dirty-rate: received "${text}"`,
    );
  }
  return seconds;
}

/** The plan as JSON, with QEMU-style names. */
function planJson(
  input: MigrationModelInput,
  plan: MigrationPlan,
): Record<string, unknown> {
  const p = plan.prediction;
  return {
    converges: p.converges,
    ending: p.ending,
    ...predictionJson(p),
    "bytes-sent": p.bytesSent,
    "threshold": p.thresholdBytes,
    "precopy-bandwidth": p.precopyBytesPerSecond,
    "final-pending": p.finalPendingBytes,
    input: {
      ram: input.ramBytes,
      "dirty-rate": input.dirtyBytesPerSecond,
      "hot-set": input.hotSetBytes ?? input.ramBytes,
      bandwidth: input.linkBytesPerSecond,
      parameters: input.parameters ?? {},
      capabilities: input.capabilities ?? {},
    },
    suggestions: plan.suggestions.map((s: PlanSuggestion) => ({
      kind: s.kind,
      ...(s.value !== undefined ? { value: s.value } : {}),
      ending: s.prediction.ending,
      ...predictionJson(s.prediction),
    })),
  };
}

function predictionJson(
  p: MigrationPlan["prediction"],
): Record<string, number> {
  return {
    passes: p.passes,
    "total-time": p.totalTimeMs,
    downtime: p.downtimeMs,
  };
}
