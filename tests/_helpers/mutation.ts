/**
 * Seeded mutations of a byte array for fuzzing decoders: bit flips,
 * truncations, deletions, duplications, insertions, and length-looking
 * words set to huge values.
 *
 * @module
 */
import { createPrng, type Prng } from "./prng.ts";

/** The kinds of mutation {@linkcode mutate} applies. */
export const MUTATIONS = [
  "flip",
  "byte",
  "truncate",
  "delete",
  "duplicate",
  "insert",
  "huge-length",
  "append",
] as const;

/** One kind of mutation. */
export type MutationKind = typeof MUTATIONS[number];

/** A mutated copy and what was done to it. */
export interface Mutation {
  /** The mutated bytes (a new array). */
  bytes: Uint8Array;
  /** The kind applied. */
  kind: MutationKind;
  /** What was done, for a failure message (`flip 0x10 at 4711`). */
  description: string;
  /** Where in the output the mutation is. */
  at: number;
}

const HUGE = [0xffff_ffff, 0x7fff_ffff, 0x8000_0000, 0x0100_0000];

/**
 * Applies one seeded mutation to a copy of `input`. The same seed always
 * gives the same mutation.
 *
 * @param input The bytes to mutate (not modified).
 * @param seed Chooses the mutation and where it applies.
 * @param focus Where mutations concentrate: `[start, end)` ranges (e.g.
 *   the non-RAM parts of a stream); half of them land in one of these.
 * @returns The mutated copy.
 */
export function mutate(
  input: Uint8Array,
  seed: number,
  focus: readonly (readonly [number, number])[] = [],
): Mutation {
  const prng = createPrng(seed);
  const kind = MUTATIONS[prng.nextInt(MUTATIONS.length)]!;
  const length = input.byteLength;
  const at = position(prng, length, focus);
  switch (kind) {
    case "flip": {
      const bytes = input.slice();
      const mask = 1 << prng.nextInt(8);
      bytes[at] = bytes[at]! ^ mask;
      return {
        bytes,
        kind,
        at,
        description: `flip 0x${mask.toString(16)} at ${at}`,
      };
    }
    case "byte": {
      const bytes = input.slice();
      const value = prng.nextInt(256);
      bytes[at] = value;
      return {
        bytes,
        kind,
        at,
        description: `byte 0x${value.toString(16)} at ${at}`,
      };
    }
    case "truncate":
      return {
        bytes: input.slice(0, at),
        kind,
        at,
        description: `truncate to ${at}`,
      };
    case "delete": {
      const count = 1 + prng.nextInt(Math.min(64, length - at));
      const bytes = new Uint8Array(length - count);
      bytes.set(input.subarray(0, at));
      bytes.set(input.subarray(at + count), at);
      return { bytes, kind, at, description: `delete ${count} at ${at}` };
    }
    case "duplicate": {
      const count = 1 + prng.nextInt(Math.min(4096, length - at));
      const bytes = new Uint8Array(length + count);
      bytes.set(input.subarray(0, at + count));
      bytes.set(input.subarray(at), at + count);
      return { bytes, kind, at, description: `duplicate ${count} at ${at}` };
    }
    case "insert": {
      const count = 1 + prng.nextInt(32);
      const bytes = new Uint8Array(length + count);
      bytes.set(input.subarray(0, at));
      prng.fill(bytes.subarray(at, at + count));
      bytes.set(input.subarray(at), at + count);
      return { bytes, kind, at, description: `insert ${count} at ${at}` };
    }
    case "append": {
      // Trailing garbage, or a copy of the stream's own tail.
      const count = 1 + prng.nextInt(Math.min(2048, Math.max(1, length)));
      const bytes = new Uint8Array(length + count);
      bytes.set(input);
      const copy = prng.nextInt(2) === 0;
      if (copy) bytes.set(input.subarray(length - count), length);
      else prng.fill(bytes.subarray(length));
      return {
        bytes,
        kind,
        at: length,
        description: `append ${count} ${copy ? "copied" : "random"} bytes`,
      };
    }
    case "huge-length": {
      const bytes = input.slice();
      const value = HUGE[prng.nextInt(HUGE.length)]!;
      const start = Math.min(at, Math.max(0, length - 4));
      new DataView(bytes.buffer).setUint32(start, value);
      return {
        bytes,
        kind,
        at: start,
        description: `be32 0x${value.toString(16)} at ${start}`,
      };
    }
  }
}

function position(
  prng: Prng,
  length: number,
  focus: readonly (readonly [number, number])[],
): number {
  if (length === 0) return 0;
  if (focus.length > 0 && prng.nextInt(2) === 0) {
    const [start, end] = focus[prng.nextInt(focus.length)]!;
    if (end > start) {
      return Math.min(length - 1, start + prng.nextInt(end - start));
    }
  }
  return prng.nextInt(length);
}
