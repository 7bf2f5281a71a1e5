/**
 * The standing fuzz run (CI size): mutated copies of every committed stream
 * fixture go into analyze, the decoder stream and a destination; each case
 * must end, within a time bound, in a completed load or a typed error with
 * the same result for whole and small chunks. `deno task fuzz` runs the
 * long version (100,000 cases).
 */
import assert from "node:assert/strict";
import {
  fuzzCase,
  loadFuzzInputs,
  runFuzzCase,
  runFuzzTarget,
} from "../_helpers/fuzz.ts";

const CASES = 2000;
const PER_TEST = 250;
const SEED = 20261203;
/** Every this many cases, the small-chunk run is one byte per chunk throughout. */
const BYTEWISE_EVERY = 40;

const inputs = await loadFuzzInputs();

for (let first = 0; first < CASES; first += PER_TEST) {
  const last = Math.min(CASES, first + PER_TEST) - 1;
  Deno.test(`fuzz cases ${first}-${last} end in a load or a typed error, whatever the chunking`, async () => {
    const failures: string[] = [];
    for (let index = first; index <= last; index++) {
      const fuzz = fuzzCase(inputs, SEED, index);
      const result = await runFuzzCase(fuzz);
      let failure = result.failure;
      if (failure === undefined && index % BYTEWISE_EVERY === 0) {
        const bytewise = await runFuzzTarget(
          fuzz.target,
          fuzz.mutation.bytes,
          "bytewise",
          30_000,
        );
        if (JSON.stringify(bytewise) !== JSON.stringify(result.whole)) {
          failure = `one byte per chunk gives ${
            JSON.stringify(bytewise)
          }, whole gives ${JSON.stringify(result.whole)}`;
        }
      }
      if (failure !== undefined) {
        failures.push(
          `#${index} ${fuzz.target} ${fuzz.input.name} ${fuzz.mutation.description}: ${failure}`,
        );
      }
    }
    assert.deepEqual(failures, []);
  });
}
