/**
 * The fuzz harness: mutated copies of the committed stream fixtures go into
 * `analyze`, the bare decoder stream and a destination, each under a time
 * bound and under two chunkings; every case must end in a completed load or
 * a typed error that names where the bytes went wrong, the same for both
 * chunkings.
 *
 * @module
 */
import {
  analyzeMigrationStream,
  DestinationMigration,
  MigrationAbortedError,
  MigrationDecoderStream,
  MigrationProtocolError,
  StreamFormatError,
  type Transport,
} from "../../mod.ts";
import { type Chunking, chunks } from "./chunking.ts";
import { mutate, type Mutation } from "./mutation.ts";
import { createPrng } from "./prng.ts";

/** Where a fuzz case goes. */
export type FuzzTarget = "analyze" | "decoder" | "destination";

/** Every target, for loops. */
export const FUZZ_TARGETS: readonly FuzzTarget[] = [
  "analyze",
  "decoder",
  "destination",
];

/** How one run of a case ended. */
export type FuzzOutcome =
  | { kind: "ok" }
  | { kind: "typed"; name: string; offset: number | undefined; message: string }
  | { kind: "untyped"; name: string; message: string }
  | { kind: "hang" };

/** A committed stream fixture to mutate. */
export interface FuzzInput {
  /** The fixture's name. */
  name: string;
  /** Its bytes. */
  bytes: Uint8Array;
  /** Ranges where mutations concentrate (headers and the device tail). */
  focus: readonly (readonly [number, number])[];
}

/** Loads the stream fixtures under fixtures/qemu/. */
export async function loadFuzzInputs(): Promise<FuzzInput[]> {
  const root = new URL("../../fixtures/qemu/", import.meta.url);
  const inputs: FuzzInput[] = [];
  for await (const entry of Deno.readDir(root)) {
    if (!entry.isDirectory) continue;
    const url = new URL(`${entry.name}/stream.bin`, root);
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(url);
    } catch {
      continue;
    }
    const length = bytes.byteLength;
    inputs.push({
      name: entry.name,
      bytes,
      focus: [[0, Math.min(length, 4096)], [
        Math.max(0, length - 48 * 1024),
        length,
      ]],
    });
  }
  return inputs.sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Cuts a mutated stream for the small-chunk run: one byte per chunk where
 * a decoder makes its decisions about a mutation — the first 512 bytes
 * (header, configuration), 1 KiB either side of the mutation and the last
 * 2 KiB (EOF, the vmdesc trailer, what follows it) — and seeded random
 * chunks of 1–4096 bytes elsewhere, so a 700 KB stream is a few thousand
 * chunks rather than 700,000.
 *
 * @param bytes The stream.
 * @param at Where the mutation is.
 * @param seed Seed for the random chunk sizes.
 * @returns The chunks.
 */
export function focusedChunks(
  bytes: Uint8Array,
  at: number,
  seed: number,
): Uint8Array[] {
  const length = bytes.byteLength;
  const windows = [
    [0, 512],
    [at - 1024, at + 1024],
    [length - 2048, length],
  ];
  const inWindow = (pos: number) =>
    windows.some(([start, end]) => pos >= start! && pos < end!);
  const nextWindow = (pos: number) =>
    Math.min(
      length,
      ...windows.map(([start]) => start!).filter((s) => s > pos),
    );
  const prng = createPrng(seed);
  const out: Uint8Array[] = [];
  for (let pos = 0; pos < length;) {
    const size = inWindow(pos)
      ? 1
      : Math.min(1 + prng.nextInt(4096), nextWindow(pos) - pos);
    out.push(bytes.subarray(pos, pos + size));
    pos += size;
  }
  return out;
}

/**
 * Runs `bytes` through `target` once.
 *
 * @param target Where the bytes go.
 * @param bytes The stream.
 * @param chunking How the bytes arrive: a named chunking or the chunks.
 * @param timeoutMs When a run counts as hung.
 */
export async function runFuzzTarget(
  target: FuzzTarget,
  bytes: Uint8Array,
  chunking: Chunking | Uint8Array[],
  timeoutMs: number,
): Promise<FuzzOutcome> {
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<FuzzOutcome>((resolve) => {
    timer = setTimeout(() => {
      abort.abort();
      resolve({ kind: "hang" });
    }, timeoutMs);
  });
  try {
    return await Promise.race([
      attempt(target, bytes, chunking, abort.signal),
      hang,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function attempt(
  target: FuzzTarget,
  bytes: Uint8Array,
  chunking: Chunking | Uint8Array[],
  signal: AbortSignal,
): Promise<FuzzOutcome> {
  try {
    const readable = ReadableStream.from(
      typeof chunking === "string"
        ? chunks(bytes, chunking, bytes.byteLength, 61)
        : chunking,
    );
    switch (target) {
      case "analyze":
        await analyzeMigrationStream(readable);
        break;
      case "decoder":
        await readable
          .pipeThrough(
            new MigrationDecoderStream({ kind: "file" }),
          )
          .pipeTo(new WritableStream(), { signal });
        break;
      case "destination":
        await loadIntoDestination(readable, signal);
        break;
    }
    return { kind: "ok" };
  } catch (error) {
    return classify(error);
  }
}

async function loadIntoDestination(
  readable: ReadableStream<Uint8Array>,
  signal: AbortSignal,
): Promise<void> {
  const transport: Transport = {
    readable,
    writable: new WritableStream(),
    description: "fuzz input",
    close: () => Promise.resolve(),
  };
  const destination = new DestinationMigration({
    autostart: false,
    maxRamBytes: 256 * 1024 * 1024,
  });
  signal.addEventListener("abort", () => destination.abort("hung"), {
    once: true,
  });
  const result = await destination.incoming(transport);
  result.guest.pause();
}

/**
 * Sorts a thrown value: typed (a decode error with its offset, a protocol
 * or aborted migration error whose cause chain is typed, a RangeError from
 * a documented limit) or not.
 */
export function classify(error: unknown): FuzzOutcome {
  let e: unknown = error;
  for (let depth = 0; e !== undefined && depth < 8; depth++) {
    if (e instanceof StreamFormatError) {
      return {
        kind: "typed",
        name: e.name,
        offset: e.offset,
        message: e.message,
      };
    }
    if (e instanceof MigrationProtocolError) {
      return {
        kind: "typed",
        name: e.name,
        offset: undefined,
        message: e.message,
      };
    }
    if (e instanceof RangeError && /^Cannot /.test(e.message)) {
      return {
        kind: "typed",
        name: e.name,
        offset: undefined,
        message: e.message,
      };
    }
    if (!(e instanceof MigrationAbortedError)) break;
    e = e.cause;
  }
  const name = error instanceof Error ? error.name : typeof error;
  const message = error instanceof Error ? error.message : String(error);
  return { kind: "untyped", name, message };
}

/** One fuzz case: a mutation of an input into a target. */
export interface FuzzCase {
  /** The fixture mutated. */
  input: FuzzInput;
  /** The mutation. */
  mutation: Mutation;
  /** Where the bytes go. */
  target: FuzzTarget;
  /** The seed that made the mutation. */
  seed: number;
}

/**
 * The `index`-th case of a run seeded with `seed`: inputs and targets in
 * turn, each with its own mutation seed.
 */
export function fuzzCase(
  inputs: readonly FuzzInput[],
  seed: number,
  index: number,
): FuzzCase {
  const input = inputs[index % inputs.length]!;
  const target =
    FUZZ_TARGETS[Math.floor(index / inputs.length) % FUZZ_TARGETS.length]!;
  const caseSeed = (seed * 0x9e37_79b1 + index * 0x85eb_ca6b) >>> 0;
  return {
    input,
    target,
    seed: caseSeed,
    mutation: mutate(input.bytes, caseSeed, input.focus),
  };
}

/** What one case showed. */
export interface FuzzResult {
  /** The outcome with whole chunks. */
  whole: FuzzOutcome;
  /** The outcome with small chunks. */
  small: FuzzOutcome;
  /** Why the case fails, or undefined when it passed. */
  failure: string | undefined;
}

/** Options for {@linkcode runFuzzCase}. */
export interface RunFuzzCaseOptions {
  /**
   * When a run counts as hung, in milliseconds (three times this for the
   * one-byte-per-chunk run).
   *
   * @default {10_000}
   */
  timeoutMs?: number;
  /**
   * Inputs up to this size run one byte per chunk as their small chunking.
   *
   * @default {16 * 1024}
   */
  bytewiseLimit?: number;
  /**
   * Whether to also run one byte per chunk throughout, however large the
   * input, and compare it with the whole run.
   *
   * @default {false}
   */
  bytewise?: boolean;
}

/**
 * Runs one case whole and in small chunks: one byte per chunk for inputs
 * up to `bytewiseLimit` bytes, {@linkcode focusedChunks} above; with
 * `bytewise`, also one byte per chunk throughout.
 */
export async function runFuzzCase(
  fuzz: FuzzCase,
  options: RunFuzzCaseOptions = {},
): Promise<FuzzResult> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const bytes = fuzz.mutation.bytes;
  const smallChunking: Chunking | Uint8Array[] =
    bytes.byteLength <= (options.bytewiseLimit ?? 16 * 1024)
      ? "bytewise"
      : focusedChunks(bytes, fuzz.mutation.at, fuzz.seed);
  const whole = await runFuzzTarget(fuzz.target, bytes, "whole", timeoutMs);
  const small = await runFuzzTarget(
    fuzz.target,
    bytes,
    smallChunking,
    timeoutMs,
  );
  let failure = failureOf(whole, ["small", small]);
  if (failure === undefined && options.bytewise) {
    const bytewise = await runFuzzTarget(
      fuzz.target,
      bytes,
      "bytewise",
      3 * timeoutMs,
    );
    failure = failureOf(whole, ["one-byte", bytewise]);
  }
  return { whole, small, failure };
}

function failureOf(
  whole: FuzzOutcome,
  [label, other]: [string, FuzzOutcome],
): string | undefined {
  for (const [name, outcome] of [["whole", whole], [label, other]] as const) {
    if (outcome.kind === "hang") return `${name} chunks: no result in time`;
    if (outcome.kind === "untyped") {
      return `${name} chunks: untyped ${outcome.name}: ${outcome.message}`;
    }
    if (outcome.kind === "typed" && outcome.offset === undefined) {
      return `${name} chunks: ${outcome.name} names no offset: ${outcome.message}`;
    }
  }
  if (whole.kind !== other.kind) {
    return `chunking changes the result: whole ${describe(whole)}, ${label} ${
      describe(other)
    }`;
  }
  if (
    whole.kind === "typed" && other.kind === "typed" &&
    (whole.offset !== other.offset || whole.name !== other.name)
  ) {
    return `chunking changes the error: whole ${describe(whole)}, ${label} ${
      describe(other)
    }`;
  }
  return undefined;
}

function describe(outcome: FuzzOutcome): string {
  switch (outcome.kind) {
    case "typed":
      return `${outcome.name} at ${outcome.offset ?? "-"}: ${outcome.message}`;
    case "untyped":
      return `${outcome.name}: ${outcome.message}`;
    default:
      return outcome.kind;
  }
}
