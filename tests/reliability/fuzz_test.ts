/**
 * The standing fuzz run (CI size): mutated copies of every committed stream
 * fixture go into analyze, the decoder stream and a destination; each case
 * must end, within a time bound, in a completed load or a typed error that
 * names its offset, with the same result whole and in small chunks (one
 * byte per chunk where the decoder decides, see `focusedChunks`). A few
 * cases also run one byte per chunk throughout. `deno task fuzz` runs the
 * long version (100,000 cases).
 */
import assert from "node:assert/strict";
import {
  focusedChunks,
  fuzzCase,
  loadFuzzInputs,
  runFuzzCase,
} from "../_helpers/fuzz.ts";

const CASES = 2000;
const PER_TEST = 250;
const SEED = 20261203;
/**
 * Every this many cases, the small-chunk run is one byte per chunk
 * throughout. Cases take the fixtures in turn (sorted: dirty, idle,
 * return-path, xbzrle), so offsets 1 and 2 pick the two ~105 KB ones; the
 * 700 KB one takes seconds per target byte by byte.
 */
const BYTEWISE_EVERY = 80;

const inputs = await loadFuzzInputs();

Deno.test("fuzz inputs are every committed stream fixture", () => {
  assert.deepEqual(inputs.map((input) => input.name), [
    "dirty",
    "idle",
    "return-path",
    "xbzrle",
  ]);
});

Deno.test("focusedChunks() cuts one byte per chunk around the mutation, at both ends, and larger chunks elsewhere", () => {
  const bytes = new Uint8Array(100_000).map((_, i) => i);
  const pieces = focusedChunks(bytes, 50_000, 7);
  assert.deepEqual(
    new Uint8Array(pieces.flatMap((piece) => [...piece])),
    bytes,
  );
  let pos = 0;
  const sizeAt = new Map<number, number>();
  for (const piece of pieces) {
    sizeAt.set(pos, piece.byteLength);
    pos += piece.byteLength;
  }
  for (const at of [0, 511, 48_976, 50_000, 51_023, 97_952, 99_999]) {
    assert.equal(sizeAt.get(at), 1, `offset ${at}`);
  }
  assert.ok(pieces.length < 6000, `${pieces.length} chunks`);
});

for (let first = 0; first < CASES; first += PER_TEST) {
  const last = Math.min(CASES, first + PER_TEST) - 1;
  Deno.test(`fuzz cases ${first}-${last} end in a load or a typed error, whatever the chunking`, async () => {
    const failures: string[] = [];
    for (let index = first; index <= last; index++) {
      const fuzz = fuzzCase(inputs, SEED, index);
      const { failure } = await runFuzzCase(fuzz, {
        bytewise: [1, 2].includes(index % BYTEWISE_EVERY),
      });
      if (failure !== undefined) {
        failures.push(
          `#${index} ${fuzz.target} ${fuzz.input.name} ${fuzz.mutation.description}: ${failure}`,
        );
      }
    }
    assert.deepEqual(failures, []);
  });
}
