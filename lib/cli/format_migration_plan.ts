import {
  formatBytes,
  type MigrationModelInput,
  type MigrationPlan,
  type MigrationPrediction,
  type PlanSuggestion,
} from "../../mod.ts";

/**
 * The planner's answer for a person: what was assumed, the prediction, and
 * when precopy does not converge, what would make it.
 *
 * @example Usage
 * ```ts
 * import { planMigration } from "../../mod.ts";
 * import { formatMigrationPlan } from "./format_migration_plan.ts";
 * import assert from "node:assert/strict";
 *
 * const MiB = 1 << 20;
 * const input = { ramBytes: 1024 * MiB, dirtyBytesPerSecond: 50 * MiB, linkBytesPerSecond: 1024 * MiB };
 * const text = formatMigrationPlan(input, planMigration(input));
 * assert.match(text, /^prediction   converges in precopy: \d+ passes/m);
 * ```
 *
 * @param input What the plan assumed.
 * @param plan The plan.
 * @returns Lines of text.
 */
export function formatMigrationPlan(
  input: MigrationModelInput,
  plan: MigrationPlan,
): string {
  const p = plan.prediction;
  const hot = input.hotSetBytes === undefined
    ? "over all of RAM"
    : `over a ${formatBytes(input.hotSetBytes)} hot set`;
  const limit = input.parameters?.["downtime-limit"] ?? 300;
  const lines = [
    `guest        ${formatBytes(input.ramBytes)} RAM, dirtying ${
      rate(input.dirtyBytesPerSecond)
    } ${hot}`,
    `link         ${rate(input.linkBytesPerSecond)}; precopy passes at ${
      rate(p.precopyBytesPerSecond)
    } (min of link and max-bandwidth)`,
    `threshold    ${
      formatBytes(p.thresholdBytes)
    } may be left for the switchover (downtime-limit ${limit} ms)`,
    `prediction   ${describePrediction(p)}`,
  ];
  if (p.ending === "none") {
    lines.push(
      `             precopy cannot get below ${
        formatBytes(p.finalPendingBytes)
      } pending: more than the threshold`,
    );
  }
  plan.suggestions.forEach((suggestion, i) => {
    const label = i === 0 ? "to converge " : "         or ";
    lines.push(`${label} ${describeSuggestion(suggestion, input)}`);
  });
  return lines.join("\n") + "\n";
}

function describePrediction(p: MigrationPrediction): string {
  const numbers = `${p.passes} passes, ${seconds(p.totalTimeMs)} total, ${
    ms(p.downtimeMs)
  } downtime, ${formatBytes(p.bytesSent)} sent`;
  switch (p.ending) {
    case "precopy":
      return `converges in precopy: ${numbers}`;
    case "postcopy":
      return `completes in postcopy: ${numbers}`;
    case "none":
      return `does not converge in precopy (${p.passes} passes, ${
        seconds(p.totalTimeMs)
      } followed)`;
  }
}

function describeSuggestion(s: PlanSuggestion, input: MigrationModelInput) {
  const p = s.prediction;
  const then = `${p.passes} passes, ${seconds(p.totalTimeMs)} total, ${
    ms(p.downtimeMs)
  } downtime`;
  switch (s.kind) {
    case "max-bandwidth":
      return `-p max-bandwidth=${rate(s.value!)} (the link carries ${
        rate(input.linkBytesPerSecond)
      }): ${then}`;
    case "bandwidth":
      return `a link of at least ${
        rate(s.value!)
      } (and max-bandwidth to match): ${then}`;
    case "postcopy":
      return `postcopy (-c postcopy-ram=on, after 1 pass): ${then}; the guest waits for each page it touches that has not arrived`;
    case "xbzrle":
      return `-c xbzrle=on -p xbzrle-cache-size=${
        formatBytes(s.value!).replace(" ", "")
      }, if the guest changes few bytes per page: ${then}`;
    case "auto-converge":
      return `throttle the guest to ${
        rate(s.value!)
      } of dirtying (auto-converge, dirty-limit): ${then}`;
    case "downtime-limit":
      return `-p downtime-limit=${s.value}ms: ${then}`;
  }
}

function rate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

function seconds(msValue: number): string {
  return `${(msValue / 1000).toFixed(msValue < 10_000 ? 2 : 1)} s`;
}

function ms(value: number): string {
  return `${value} ms`;
}
