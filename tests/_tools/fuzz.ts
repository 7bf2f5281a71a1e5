/**
 * The long fuzz run: `deno task fuzz [--cases N] [--seed S]
 * [--bytewise-every K] [--timeout-ms T]` mutates the committed stream
 * fixtures N times (100,000 by default) into analyze, the decoder and a
 * destination, each whole and in small chunks (every K-th case, 1,000 by
 * default, also one byte per chunk throughout), and prints every failing
 * case and the counts. Exits 1 when a case failed.
 */
import { parseArgs } from "node:util";
import {
  FUZZ_TARGETS,
  fuzzCase,
  loadFuzzInputs,
  runFuzzCase,
} from "../_helpers/fuzz.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    cases: { type: "string", default: "100000" },
    seed: { type: "string", default: "1" },
    "bytewise-every": { type: "string", default: "1000" },
    "timeout-ms": { type: "string", default: "10000" },
  },
});
const total = Number(values.cases);
const seed = Number(values.seed);
const bytewiseEvery = Number(values["bytewise-every"]);
const inputs = await loadFuzzInputs();
const counts = { loaded: 0, typed: 0, failed: 0, bytewise: 0 };
const byError = new Map<string, number>();
const perTarget = new Map(FUZZ_TARGETS.map((target) => [target, 0]));
const started = performance.now();
for (let index = 0; index < total; index++) {
  const fuzz = fuzzCase(inputs, seed, index);
  const bytewise = bytewiseEvery > 0 && index % bytewiseEvery === 0;
  if (bytewise) counts.bytewise++;
  perTarget.set(fuzz.target, perTarget.get(fuzz.target)! + 1);
  const result = await runFuzzCase(fuzz, {
    timeoutMs: Number(values["timeout-ms"]),
    bytewise,
  });
  if (result.failure !== undefined) {
    counts.failed++;
    // deno-lint-ignore no-console
    console.log(
      `FAIL #${index} ${fuzz.target} ${fuzz.input.name} ${fuzz.mutation.description} (seed ${fuzz.seed}): ${result.failure}`,
    );
  } else if (result.whole.kind === "ok") {
    counts.loaded++;
  } else if (result.whole.kind === "typed") {
    counts.typed++;
    byError.set(result.whole.name, (byError.get(result.whole.name) ?? 0) + 1);
  }
  if ((index + 1) % 1000 === 0) {
    // deno-lint-ignore no-console
    console.error(
      `${index + 1}/${total} cases, ${counts.failed} failed, ${
        ((performance.now() - started) / 1000).toFixed(0)
      } s`,
    );
  }
}
const seconds = ((performance.now() - started) / 1000).toFixed(0);
// deno-lint-ignore no-console
console.log(
  `${total} cases (seed ${seed}; ${
    [...perTarget].map(([target, n]) => `${target} ${n}`).join(", ")
  }; ${counts.bytewise} also one byte per chunk) in ${seconds} s: ${counts.loaded} loaded, ${counts.typed} typed errors with an offset (${
    [...byError].map(([name, n]) => `${name} ${n}`).join(", ")
  }), ${counts.failed} failures`,
);
if (counts.failed > 0) Deno.exitCode = 1;
