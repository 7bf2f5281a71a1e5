/**
 * The long fuzz run: `deno task fuzz [--cases N] [--seed S]` mutates the
 * committed stream fixtures N times (100,000 by default) into analyze, the
 * decoder and a destination, and prints the counts and every failing case.
 */
import { parseArgs } from "node:util";
import { fuzzCase, loadFuzzInputs, runFuzzCase } from "../_helpers/fuzz.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    cases: { type: "string", default: "100000" },
    seed: { type: "string", default: "1" },
    "timeout-ms": { type: "string", default: "10000" },
  },
});
const total = Number(values.cases);
const seed = Number(values.seed);
const inputs = await loadFuzzInputs();
const counts = { ok: 0, typed: 0, failed: 0 };
const byError = new Map<string, number>();
const started = performance.now();
for (let index = 0; index < total; index++) {
  const fuzz = fuzzCase(inputs, seed, index);
  const result = await runFuzzCase(fuzz, {
    timeoutMs: Number(values["timeout-ms"]),
  });
  if (result.failure !== undefined) {
    counts.failed++;
    // deno-lint-ignore no-console
    console.log(
      `FAIL #${index} ${fuzz.target} ${fuzz.input.name} ${fuzz.mutation.description} (seed ${fuzz.seed}): ${result.failure}`,
    );
  } else if (result.whole.kind === "ok") {
    counts.ok++;
  } else {
    counts.typed++;
    if (result.whole.kind === "typed") {
      byError.set(result.whole.name, (byError.get(result.whole.name) ?? 0) + 1);
    }
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
// deno-lint-ignore no-console
console.log(
  `${total} cases: ${counts.ok} loaded, ${counts.typed} typed errors (${
    [...byError].map(([name, n]) => `${name} ${n}`).join(", ")
  }), ${counts.failed} failures`,
);
if (counts.failed > 0) Deno.exitCode = 1;
