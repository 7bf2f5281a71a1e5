/**
 * The cut matrix: a migration whose connection breaks after N bytes, for
 * N spread over the whole stream (seeded), in precopy, postcopy, and
 * postcopy with recovery. For each cut both ends must reach the right
 * status within a time bound: both `failed` with the source guest running
 * and its RAM intact when the cut comes before postcopy, both
 * `postcopy-paused` after (then `completed` once recovered, with
 * `ram-sha256-received` equal to the source's digest), both `completed`
 * when the stream was shorter than N.
 *
 * CI runs 24 offsets per scenario; `deno task reliability` runs 200
 * (`-- --full`).
 */
import assert from "node:assert/strict";
import { createPrng } from "../_helpers/prng.ts";
import {
  CUT_SCENARIOS,
  type CutOutcome,
  type CutPoint,
  type CutScenario,
  runCutCase,
} from "./_cut_case.ts";

const FULL = Deno.args.includes("--full");
const OFFSETS = FULL ? 200 : 24;
const SEED = 20261204;

/** Why an outcome is wrong, or undefined when it is right. */
function judge(scenario: CutScenario, o: CutOutcome): string | undefined {
  if (!o.settled) {
    return `no end within the time bound: source ${o.source}, destination ${o.destination} (${
      o.cut ? "cut" : "not cut"
    }, ${o.delivered} bytes delivered; source ${
      o.sourceStatuses.join(" > ")
    }; destination ${o.destinationStatuses.join(" > ")})`;
  }
  if (o.source === "completed" || o.destination === "completed") {
    if (o.source !== o.destination) {
      return `only one end completed: source ${o.source}, destination ${o.destination}`;
    }
    if (o.sourceGuestRunning) return "the source guest runs after completion";
    if (scenario === "postcopy-recover" && o.cut && !o.recovered) {
      return "completed over a cut connection without a recovery";
    }
    if (JSON.stringify(o.receivedSha256) !== JSON.stringify(o.sourceSha256)) {
      return `ram-sha256-received ${
        JSON.stringify(o.receivedSha256)
      } differs from the source's ram-sha256 ${JSON.stringify(o.sourceSha256)}`;
    }
    return undefined;
  }
  if (!o.cut) return `the stream was never cut, yet source ${o.source}`;
  if (o.source === "failed") {
    if (o.destination !== "failed") {
      return `source failed, destination ${o.destination}`;
    }
    // A source may fail in postcopy-active while starting postcopy (QEMU's
    // postcopy_start() failing): only if the destination never ran the
    // guest may the source run it again.
    if (o.destinationStatuses.includes("postcopy-active")) {
      return "the source failed after the destination started the guest";
    }
    if (!o.sourceGuestRunning) return "the source guest is not running again";
    if (!o.sourceRamIntact) return "the source guest's RAM is not intact";
    return undefined;
  }
  if (scenario === "precopy") {
    return `precopy cut: source ${o.source}, destination ${o.destination}`;
  }
  if (o.source !== "postcopy-paused") {
    return `postcopy cut: source ${o.source}, destination ${o.destination}`;
  }
  if (o.sourceGuestRunning) return "the source guest runs again in postcopy";
  if (o.destination === "postcopy-paused") {
    return scenario === "postcopy-recover"
      ? "both paused but the recovery did not complete"
      : undefined;
  }
  // The cut came after the source started postcopy but before the
  // destination loaded POSTCOPY_LISTEN: the destination never ran the
  // guest and fails, the source cannot know and stays paused (QEMU too).
  if (
    o.destination === "failed" &&
    !o.destinationStatuses.includes("postcopy-active")
  ) {
    return undefined;
  }
  return `postcopy cut: source ${o.source}, destination ${o.destination}`;
}

/**
 * The `i`-th of OFFSETS cut points, `jitter` in [0, 1): without postcopy,
 * evenly spread over 95% of what the reference run sent (streams vary a
 * little); with it, the first ones over the stream before the destination
 * entered postcopy (in proportion to its length, from 10% to half of the
 * cuts), the rest over the pages it was missing then.
 */
function cutPoint(
  i: number,
  jitter: number,
  { total, switchAt }: { total: number; switchAt: number | undefined },
): CutPoint {
  if (switchAt === undefined) {
    return { at: Math.floor((i + jitter) * 0.95 * total / OFFSETS) };
  }
  const share = Math.min(0.5, Math.max(0.1, switchAt / total));
  const before = Math.round(OFFSETS * share);
  return i < before
    ? { at: Math.floor((i + jitter) * switchAt / before) }
    : { inPostcopy: (i - before + jitter) / (OFFSETS - before) };
}

for (const [index, scenario] of CUT_SCENARIOS.entries()) {
  Deno.test(`cut matrix: ${scenario}, the connection cut at ${OFFSETS} offsets`, async () => {
    // The reference run measures the stream. A guest starved of time
    // may leave nothing dirty, and the migration then completes without
    // postcopy: try again, a few times.
    let reference = await runCutCase(scenario, { at: Infinity });
    for (
      let tries = 1;
      scenario !== "precopy" && reference.postcopyAt === undefined &&
      tries < 5;
      tries++
    ) {
      reference = await runCutCase(scenario, { at: Infinity });
    }
    assert.equal(judge(scenario, reference), undefined);
    assert.equal(reference.source, "completed");
    if (scenario !== "precopy") {
      assert.ok(reference.postcopyAt !== undefined, "postcopy started");
    }
    const total = reference.delivered;
    const switchAt = reference.postcopyAt;
    const prng = createPrng(SEED + index);
    const failures: string[] = [];
    const outcomes = new Map<string, number>();
    const errors = new Map<string, number>();
    let requests = 0;
    for (let i = 0; i < OFFSETS; i++) {
      const point = cutPoint(i, prng.nextUint32() / 2 ** 32, {
        total,
        switchAt,
      });
      const mode = i % 2 === 0 ? "close" : "reset";
      const outcome = await runCutCase(scenario, point, { mode });
      const problem = judge(scenario, outcome);
      if (problem !== undefined) {
        failures.push(
          `cut ${JSON.stringify(point)} of ~${total} (${mode}): ${problem}`,
        );
      }
      const key = `${outcome.source}/${outcome.destination}${
        outcome.recovered ? " recovered" : ""
      }`;
      requests += outcome.postcopyRequests;
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      for (const text of [outcome.sourceError, outcome.destinationError]) {
        if (text !== undefined) {
          const shape = text.replace(/\d+/g, "N");
          errors.set(shape, (errors.get(shape) ?? 0) + 1);
        }
      }
    }
    if (FULL) {
      // deno-lint-ignore no-console
      console.log(
        `${scenario}: ${OFFSETS} cuts over ~${total} bytes: ${
          [...outcomes].map(([k, n]) => `${k} ${n}`).join(", ")
        }; ${requests} pages requested by destination guests\n  errors seen:\n${
          [...errors].map(([k, n]) => `    ${n}× ${k}`).join("\n")
        }`,
      );
    }
    assert.deepEqual(failures, []);
  });
}
