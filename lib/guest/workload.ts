/**
 * Seeded workloads that dirty guest RAM the way migration research
 * describes guests: idle, uniform random writes, a hot writable working
 * set (Clark et al., "Live Migration of Virtual Machines", NSDI 2005),
 * sequential sweeps like QEMU's own migration test guest (one byte per
 * page per pass), and RAM filled with non-zero data.
 *
 * @module
 */

import { parseBandwidth, parseSize } from "../bytes/human_units.ts";
import { SeededRandom } from "../bytes/seeded_random.ts";
import type { GuestMemory } from "./guest_memory.ts";

/** What a workload does. Rates are bytes of RAM dirtied per second. */
export type WorkloadSpec =
  | { kind: "idle" }
  | { kind: "random"; bytesPerSecond: number }
  | { kind: "hot-set"; setBytes: number; bytesPerSecond: number }
  | { kind: "sweep"; bytesPerSecond: number }
  | {
    kind: "fill";
    /**
     * `random` (the default): non-zero pseudo-random data, which does not
     * compress; `address`: every 32-bit word holds its own address in the
     * RAM blocks laid end to end (as QEMU test firmware fills RAM), which
     * compresses some (deflate: to about 60%).
     */
    pattern?: "random" | "address";
  };

/** The default rate of `sweep` when none is given. */
const DEFAULT_SWEEP_RATE = 32 * 1024 * 1024;

/**
 * Parses a workload as the command line writes it: `idle`,
 * `random:RATE`, `hot-set:SIZE@RATE`, `sweep[:RATE]` or
 * `fill[:random|address]`, with human units (`hot-set:64MiB@200MB/s`).
 *
 * @example Usage
 * ```ts
 * import { parseWorkload } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.deepEqual(parseWorkload("hot-set:4MiB@10MB/s"), {
 *   kind: "hot-set", setBytes: 4 * 1024 * 1024, bytesPerSecond: 10_000_000,
 * });
 * assert.deepEqual(parseWorkload("idle"), { kind: "idle" });
 * assert.deepEqual(parseWorkload("fill:address"), { kind: "fill", pattern: "address" });
 * assert.throws(() => parseWorkload("random"), TypeError);
 * ```
 *
 * @param text The workload.
 * @returns The spec.
 * @throws {TypeError} If the text is not a workload.
 */
export function parseWorkload(text: string): WorkloadSpec {
  const [kind, argument] = splitOnce(text, ":");
  switch (kind) {
    case "idle":
      if (argument !== undefined) {
        throw new TypeError(
          `Cannot parse workload "${text}": "${kind}" takes no argument`,
        );
      }
      return { kind };
    case "fill":
      if (argument === undefined) return { kind };
      if (argument !== "random" && argument !== "address") {
        throw new TypeError(
          `Cannot parse workload "${text}": "fill" takes random or address`,
        );
      }
      return { kind, pattern: argument };
    case "random":
      if (argument === undefined) {
        throw new TypeError(
          `Cannot parse workload "${text}": expected random:RATE, e.g. random:50MB/s`,
        );
      }
      return {
        kind,
        bytesPerSecond: parseBandwidth(argument, "workload rate"),
      };
    case "sweep":
      return {
        kind,
        bytesPerSecond: argument === undefined
          ? DEFAULT_SWEEP_RATE
          : parseBandwidth(argument, "workload rate"),
      };
    case "hot-set": {
      const [size, rate] = splitOnce(argument ?? "", "@");
      if (!size || rate === undefined) {
        throw new TypeError(
          `Cannot parse workload "${text}": expected hot-set:SIZE@RATE, e.g. hot-set:64MiB@200MB/s`,
        );
      }
      return {
        kind,
        setBytes: parseSize(size, "hot-set size"),
        bytesPerSecond: parseBandwidth(rate, "workload rate"),
      };
    }
    default:
      throw new TypeError(
        `Cannot parse workload "${text}": expected idle, random:RATE, hot-set:SIZE@RATE, sweep[:RATE] or fill[:random|address]`,
      );
  }
}

/**
 * Formats a workload the way {@linkcode parseWorkload} reads it.
 *
 * @example Usage
 * ```ts
 * import { formatWorkload } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(formatWorkload({ kind: "random", bytesPerSecond: 1000 }), "random:1KB/s");
 * assert.equal(formatWorkload({ kind: "hot-set", setBytes: 16 << 20, bytesPerSecond: 32e6 }), "hot-set:16MiB@32MB/s");
 * ```
 *
 * @param spec The workload.
 * @returns The text.
 */
export function formatWorkload(spec: WorkloadSpec): string {
  switch (spec.kind) {
    case "idle":
      return spec.kind;
    case "fill":
      return spec.pattern === undefined ? "fill" : `fill:${spec.pattern}`;
    case "random":
    case "sweep":
      return `${spec.kind}:${compact(spec.bytesPerSecond)}/s`;
    case "hot-set":
      return `hot-set:${compact(spec.setBytes)}@${
        compact(spec.bytesPerSecond)
      }/s`;
  }
}

/** The shortest exact unit: 16777216 → "16MiB", 32000000 → "32MB". */
function compact(bytes: number): string {
  let best = `${bytes}B`;
  const units: [string, number][] = [
    ["GiB", 1024 ** 3],
    ["MiB", 1024 ** 2],
    ["KiB", 1024],
    ["GB", 1e9],
    ["MB", 1e6],
    ["KB", 1e3],
  ];
  for (const [unit, scale] of units) {
    const text = `${bytes / scale}${unit}`;
    if (bytes % scale === 0 && text.length < best.length) best = text;
  }
  return best;
}

/** A workload's progress, to save with the guest and continue later. */
export interface WorkloadProgress {
  /** The seeded generator's state. */
  random: number;
  /** Next page of a sweep, in the flat page space over all blocks. */
  cursor: number;
  /** Completed sweeps over RAM. */
  pass: number;
  /** Page writes so far. */
  written: number;
}

/**
 * Runs a {@linkcode WorkloadSpec} against guest memory: each
 * {@linkcode Workload.step} writes as many pages as the rate allows for the
 * elapsed time, marking them in the dirty log. Given the same seed and the
 * same steps it writes the same bytes.
 *
 * @example Usage
 * ```ts
 * import { GuestMemory, Workload } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const memory = new GuestMemory([{ idstr: "guest.ram", size: 64 * 4096 }]);
 * memory.startDirtyLog();
 * const workload = new Workload({ kind: "sweep", bytesPerSecond: 4096 * 1000 }, memory, 1);
 * assert.equal(workload.step(10), 10); // 10 pages in 10 ms
 * assert.equal(memory.syncDirtyLog()[0]!.count(), 10);
 * assert.equal(memory.blocks[0]!.bytes[9 * 4096], 1);
 * ```
 */
export class Workload {
  readonly #spec: WorkloadSpec;
  readonly #memory: GuestMemory;
  readonly #random: SeededRandom;
  readonly #pageSize: number;
  readonly #totalPages: number;
  readonly #blockStarts: number[];
  #carry = 0;
  #owed = 0;
  #pending:
    | { flatPage: number; offset: number; increment: boolean }
    | undefined;
  #cursor: number;
  #pass: number;
  #written: number;

  /**
   * Constructs a new instance.
   *
   * @param spec What to do.
   * @param memory The RAM to write.
   * @param seed Seed of the generator.
   * @param progress Progress saved by a previous run, to continue it.
   */
  constructor(
    spec: WorkloadSpec,
    memory: GuestMemory,
    seed: number,
    progress?: WorkloadProgress,
  ) {
    if ("bytesPerSecond" in spec && !(spec.bytesPerSecond >= 0)) {
      throw new RangeError(
        `Cannot construct Workload as its rate must be >= 0: received ${spec.bytesPerSecond}`,
      );
    }
    this.#spec = spec;
    this.#memory = memory;
    this.#random = new SeededRandom(seed, progress?.random);
    this.#pageSize = memory.pageSize;
    this.#blockStarts = [];
    let pages = 0;
    for (const block of memory.blocks) {
      this.#blockStarts.push(pages);
      pages += block.pageCount;
    }
    this.#totalPages = pages;
    this.#cursor = progress?.cursor ?? 0;
    this.#pass = progress?.pass ?? 0;
    this.#written = progress?.written ?? 0;
    for (
      const [name, value] of [
        ["bytesPerSecond", "bytesPerSecond" in spec ? spec.bytesPerSecond : 0],
        ["setBytes", spec.kind === "hot-set" ? spec.setBytes : 0],
      ] as const
    ) {
      // Both travel in the guest's device state as 64-bit integers.
      if (!Number.isSafeInteger(value) || value < 0) {
        throw new RangeError(
          `Cannot construct Workload as ${name} must be a whole number of bytes >= 0: received ${value}`,
        );
      }
    }
    if (spec.kind === "hot-set" && spec.setBytes > memory.totalBytes) {
      throw new RangeError(
        `Cannot construct Workload as the hot set (${spec.setBytes} bytes) is larger than RAM (${memory.totalBytes} bytes)`,
      );
    }
  }

  /** The workload. */
  get spec(): WorkloadSpec {
    return this.#spec;
  }

  /** Where the workload is, to save and continue. */
  get progress(): WorkloadProgress {
    return {
      random: this.#random.state,
      cursor: this.#cursor,
      pass: this.#pass,
      written: this.#written,
    };
  }

  /**
   * Fills all of RAM with non-zero pseudo-random data (or, for
   * `fill:address`, each word with its address) and marks it dirty (the
   * `fill` workload does this once, before migrating).
   */
  fill(): void {
    if (this.#spec.kind === "fill" && this.#spec.pattern === "address") {
      this.#fillAddresses();
      return;
    }
    // One megabyte of generated data, copied across RAM, with each page's
    // first word replaced by its own generated value: every page is
    // non-zero and distinct, at the speed of a memory copy.
    const pattern = this.#random.fill(new Uint8Array(1 << 20));
    for (const block of this.#memory.blocks) {
      const bytes = block.bytes;
      for (let at = 0; at < bytes.byteLength; at += pattern.byteLength) {
        bytes.set(pattern.subarray(0, bytes.byteLength - at), at);
      }
      const words = (bytes.byteOffset & 3) === 0
        ? new Uint32Array(
          bytes.buffer,
          bytes.byteOffset,
          bytes.byteLength >>> 2,
        )
        : undefined;
      for (let page = 0; page < block.pageCount; page++) {
        const value = this.#random.nextUint32() | 1;
        const at = page * this.#pageSize;
        if (words) {
          words[at >>> 2] = value;
        } else {
          bytes[at] = value;
          bytes[at + 1] = value >>> 8;
          bytes[at + 2] = value >>> 16;
          bytes[at + 3] = value >>> 24;
        }
      }
      this.#memory.markDirty(block.idstr, 0, bytes.byteLength);
    }
  }

  /** `fill:address`: every 32-bit word holds its own (flat) address. */
  #fillAddresses(): void {
    for (const block of this.#memory.blocks) {
      const bytes = block.bytes;
      const count = bytes.byteLength >>> 2;
      if ((bytes.byteOffset & 3) === 0) {
        const words = new Uint32Array(bytes.buffer, bytes.byteOffset, count);
        for (let i = 0; i < count; i++) words[i] = block.base + i * 4;
      } else {
        const view = new DataView(
          bytes.buffer,
          bytes.byteOffset,
          bytes.byteLength,
        );
        for (let i = 0; i < count; i++) {
          view.setUint32(i * 4, block.base + i * 4, true);
        }
      }
      this.#memory.markDirty(block.idstr, 0, bytes.byteLength);
    }
  }

  /**
   * The page the workload is waiting for in postcopy, as
   * `[blockIndex, page]`, or `undefined` when it is not blocked.
   */
  get blocked(): [number, number] | undefined {
    if (this.#pending === undefined) return undefined;
    return this.#locate(this.#pending.flatPage);
  }

  /**
   * Writes the pages due after `elapsedMs` milliseconds at the workload's
   * rate (at most one second's worth at once). In postcopy it stops at the
   * first page that has not arrived ({@linkcode Workload.blocked}); call
   * {@linkcode Workload.continue} once it is there.
   *
   * @param elapsedMs Milliseconds since the previous step.
   * @returns How many pages were written.
   */
  step(elapsedMs: number): number {
    const spec = this.#spec;
    if (
      spec.kind === "idle" || spec.kind === "fill" || this.#totalPages === 0
    ) {
      return 0;
    }
    const ms = Math.min(Math.max(elapsedMs, 0), 1000);
    const due = spec.bytesPerSecond * ms / 1000 / this.#pageSize + this.#carry;
    const pages = Math.floor(due);
    this.#carry = due - pages;
    this.#owed += pages;
    return this.continue();
  }

  /**
   * Writes exactly `pages` more pages (replaying a known number of writes,
   * e.g. to check what a guest wrote).
   *
   * @param pages How many page writes.
   * @returns How many were written (fewer when blocked in postcopy).
   */
  write(pages: number): number {
    this.#owed += pages;
    return this.continue();
  }

  /**
   * Goes on with the writes owed by earlier steps (after a postcopy page
   * arrived).
   *
   * @returns How many pages were written.
   */
  continue(): number {
    const spec = this.#spec;
    if (spec.kind === "idle" || spec.kind === "fill") return 0;
    const limit = spec.kind === "hot-set"
      ? Math.max(1, Math.floor(spec.setBytes / this.#pageSize))
      : this.#totalPages;
    let written = 0;
    while (this.#owed > 0) {
      let write = this.#pending;
      if (write === undefined) {
        if (spec.kind === "sweep") {
          write = { flatPage: this.#cursor, offset: 0, increment: true };
          if (++this.#cursor >= this.#totalPages) {
            this.#cursor = 0;
            this.#pass++;
          }
        } else {
          write = {
            flatPage: this.#random.nextInt(limit),
            offset: this.#random.nextInt(this.#pageSize >>> 2) << 2,
            increment: false,
          };
        }
      }
      const [index, page] = this.#locate(write.flatPage);
      // A page that has not arrived (postcopy) blocks the workload; one
      // that has is kept as received before its first write, if asked.
      if (!this.#memory.preparePageWrite(index, page)) {
        this.#pending = write;
        break;
      }
      this.#pending = undefined;
      this.#touch(index, page, write.offset, write.increment);
      this.#owed--;
      written++;
    }
    this.#written += written;
    return written;
  }

  #locate(flatPage: number): [number, number] {
    const starts = this.#blockStarts;
    let index = starts.length - 1;
    while (starts[index]! > flatPage) index--;
    return [index, flatPage - starts[index]!];
  }

  #touch(
    index: number,
    page: number,
    offset: number,
    increment: boolean,
  ): void {
    const block = this.#memory.blocks[index]!;
    const at = page * this.#pageSize + offset;
    if (increment) {
      block.bytes[at] = (block.bytes[at]! + 1) & 0xff;
    } else {
      const value = this.#random.nextUint32();
      block.bytes[at] = value;
      block.bytes[at + 1] = value >>> 8;
      block.bytes[at + 2] = value >>> 16;
      block.bytes[at + 3] = value >>> 24;
    }
    this.#memory.markPageDirty(index, page);
  }
}

function splitOnce(
  text: string,
  separator: string,
): [string, string | undefined] {
  const at = text.indexOf(separator);
  return at < 0 ? [text, undefined] : [text.slice(0, at), text.slice(at + 1)];
}
