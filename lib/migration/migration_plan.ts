/**
 * The planner: a {@linkcode predictMigration} prediction, and what would
 * make a migration converge, each found by asking the same model again
 * with one thing changed:
 *
 * ```
 * max-bandwidth / bandwidth  the least precopy rate that converges
 *                            (max-bandwidth when the link carries it)
 * postcopy                   postcopy-ram after one pass
 * xbzrle                     XBZRLE with a cache that holds the hot set,
 *                            if the guest changes few bytes a page
 * auto-converge              the highest dirty rate that converges: what a
 *                            throttle (auto-converge, dirty-limit) must reach
 * downtime-limit             the least downtime-limit that converges
 * ```
 *
 * @module
 */

import {
  type MigrationModelInput,
  type MigrationModelOptions,
  type MigrationPrediction,
  predictMigration,
} from "./migration_model.ts";
import { DEFAULT_PARAMETERS } from "./migration_parameters.ts";

/** One way to make the migration converge (or end sooner). */
export interface PlanSuggestion {
  /** What to change. */
  kind:
    | "max-bandwidth"
    | "bandwidth"
    | "postcopy"
    | "xbzrle"
    | "auto-converge"
    | "downtime-limit";
  /**
   * The value to set: bytes/s for `max-bandwidth`, `bandwidth` and
   * `auto-converge` (the dirty rate to throttle to), ms for
   * `downtime-limit`, bytes of `xbzrle-cache-size` for `xbzrle`; absent
   * for `postcopy`.
   */
  value?: number;
  /** The prediction with the change. */
  prediction: MigrationPrediction;
}

/** Options for {@linkcode planMigration}: the model's, and one more. */
export interface MigrationPlanOptions extends MigrationModelOptions {
  /**
   * Most passes a suggested change may take to converge.
   *
   * @default {30}
   */
  suggestionMaxPasses?: number;
}

/** A prediction with its suggestions. */
export interface MigrationPlan {
  /** The prediction as asked. */
  prediction: MigrationPrediction;
  /** What would make it converge; empty when it converges in precopy. */
  suggestions: PlanSuggestion[];
}

/**
 * Predicts a migration and, when precopy does not converge, finds what
 * would make it converge.
 *
 * @example Usage
 * ```ts
 * import { planMigration } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const MiB = 1 << 20;
 * const plan = planMigration({
 *   ramBytes: 1024 * MiB, dirtyBytesPerSecond: 200 * MiB, linkBytesPerSecond: 1024 * MiB,
 * });
 * assert.equal(plan.prediction.converges, false);
 * const raise = plan.suggestions.find((s) => s.kind === "max-bandwidth")!;
 * assert.ok(raise.value! > 200 * MiB && raise.prediction.converges);
 * assert.ok(plan.suggestions.some((s) => s.kind === "postcopy"));
 * ```
 *
 * @param input The guest, the link and the settings.
 * @param options The model's options.
 * @returns The plan.
 */
export function planMigration(
  input: MigrationModelInput,
  options: MigrationPlanOptions = {},
): MigrationPlan {
  const prediction = predictMigration(input, options);
  if (prediction.ending === "precopy") return { prediction, suggestions: [] };
  const suggestions: PlanSuggestion[] = [];
  const predict = (changed: MigrationModelInput) =>
    predictMigration(changed, options);
  // A change counts when precopy converges in a few passes: one that
  // converges only after hundreds rests on the model's last digit.
  const maxPasses = options.suggestionMaxPasses ?? 30;
  const converges = (p: MigrationPrediction) =>
    p.ending === "precopy" && p.passes <= maxPasses ? p : undefined;
  const bandwidth = bandwidthSuggestion(
    input,
    (changed) => converges(predict(changed)),
  );
  if (bandwidth) suggestions.push(bandwidth);
  if (!input.capabilities?.["postcopy-ram"]) {
    suggestions.push({
      kind: "postcopy",
      prediction: predict({
        ...input,
        capabilities: { ...input.capabilities, "postcopy-ram": true },
        postcopyAfterPasses: 1,
      }),
    });
  }
  if (!input.capabilities?.xbzrle) {
    // XBZRLE needs the pages it re-sends in its cache: the hot set.
    const cache = Math.max(
      input.parameters?.["xbzrle-cache-size"] ??
        DEFAULT_PARAMETERS["xbzrle-cache-size"],
      input.hotSetBytes ?? input.ramBytes,
    );
    const xbzrle = converges(predict({
      ...input,
      capabilities: { ...input.capabilities, xbzrle: true },
      parameters: { ...input.parameters, "xbzrle-cache-size": cache },
    }));
    if (xbzrle) {
      suggestions.push({ kind: "xbzrle", value: cache, prediction: xbzrle });
    }
  }
  const rate = leastConverging(0, input.dirtyBytesPerSecond, (value) => {
    return converges(predict({ ...input, dirtyBytesPerSecond: value }));
  }, { highest: true });
  if (rate) suggestions.push({ kind: "auto-converge", ...rate });
  const downtime = leastConverging(
    parameter(input, "downtime-limit"),
    2_000_000,
    (value) => {
      return converges(predict({
        ...input,
        parameters: { ...input.parameters, "downtime-limit": value },
      }));
    },
  );
  if (downtime) {
    suggestions.push({
      kind: "downtime-limit",
      value: Math.ceil(downtime.value),
      prediction: downtime.prediction,
    });
  }
  return { prediction, suggestions };
}

/** The least precopy rate that converges, as max-bandwidth or a link. */
function bandwidthSuggestion(
  input: MigrationModelInput,
  converges: (input: MigrationModelInput) => MigrationPrediction | undefined,
): PlanSuggestion | undefined {
  const limit = parameter(input, "max-bandwidth");
  const link = input.linkBytesPerSecond;
  const from = limit > 0 ? Math.min(limit, link) : link;
  const found = leastConverging(from, from * 1024, (value) => {
    return converges({
      ...input,
      linkBytesPerSecond: Math.max(link, value),
      parameters: { ...input.parameters, "max-bandwidth": value },
    });
  });
  if (!found) return undefined;
  const value = Math.ceil(found.value / (1 << 20)) * (1 << 20);
  return {
    kind: value <= link ? "max-bandwidth" : "bandwidth",
    value,
    prediction: found.prediction,
  };
}

function parameter(
  input: MigrationModelInput,
  name: "max-bandwidth" | "downtime-limit",
): number {
  return input.parameters?.[name] ?? DEFAULT_PARAMETERS[name];
}

/**
 * Bisects [from, to] for the least value (the highest, with `highest`)
 * for which `test` gives a prediction, to within 1%.
 */
function leastConverging(
  from: number,
  to: number,
  test: (value: number) => MigrationPrediction | undefined,
  options: { highest?: boolean } = {},
): { value: number; prediction: MigrationPrediction } | undefined {
  const highest = options.highest ?? false;
  let good = highest ? from : to;
  let prediction = test(good);
  if (!prediction) return undefined;
  let bad = highest ? to : from;
  while (Math.abs(good - bad) > Math.max(1, Math.abs(good) * 0.01)) {
    const middle = (good + bad) / 2;
    const tried = test(middle);
    if (tried) {
      good = middle;
      prediction = tried;
    } else {
      bad = middle;
    }
  }
  return { value: good, prediction };
}
