/**
 * Guest RAM backed by transparent huge pages, through Linux's libc (FFI).
 *
 * QEMU asks the kernel for huge pages on guest RAM
 * (`madvise(MADV_HUGEPAGE)`): first touch of RAM then costs one fault per
 * 2 MiB instead of one per 4 KiB, about twice as fast. Reaching `madvise`
 * from Deno needs `--allow-ffi` and `libc.so.6`; without them the allocator
 * says why instead of allocating.
 *
 * @module
 */

import { populateInChunks } from "./_populate_in_chunks.ts";

/** `madvise` advice: back the range with transparent huge pages. */
const MADV_HUGEPAGE = 14;
/** `madvise` advice: fault the range in for writing (Linux 5.14+). */
const MADV_POPULATE_WRITE = 23;
/** The size (and alignment) of an x86-64 transparent huge page. */
const HUGE_PAGE = 2 * 1024 * 1024;

/** Options for {@linkcode createHugePageAllocator}. */
export interface HugePageAllocatorOptions {
  /**
   * Whether to fault each new block in on another thread
   * (`madvise(MADV_POPULATE_WRITE)` 8 MiB at a time, so that the caller's
   * own memory mapping never waits long behind it; best effort: older
   * kernels refuse it) while the caller goes on, as a destination wants for RAM that is about
   * to be written page by page.
   *
   * @default {false}
   */
  populate?: boolean;
}

/**
 * What {@linkcode createHugePageAllocator} found: an allocator for
 * {@linkcode GuestMemoryOptions.allocate}, or why huge pages are
 * unavailable.
 */
export type HugePageAllocator =
  | {
    /** Huge pages can be asked for. */
    available: true;
    /**
     * Allocates `size` bytes aligned to 2 MiB and advised as huge pages,
     * over a `SharedArrayBuffer` (so that workers can write them in place).
     * The bytes are zero, as `new Uint8Array(size)` would be.
     */
    allocate: (size: number) => Uint8Array;
  }
  | {
    /** Huge pages cannot be asked for: allocate plain memory. */
    available: false;
    /**
     * Why: not Linux, no `--allow-ffi` (asked for without prompting), or
     * the error opening libc.
     */
    reason: string;
  };

/**
 * Opens libc and returns an allocator that asks Linux for transparent huge
 * pages (`madvise(MADV_HUGEPAGE)`) on each new guest RAM block, as QEMU
 * does for guest RAM, and with `populate` also faults the block in on
 * another thread; or, when FFI is not allowed or libc is not there, the
 * reason it cannot.
 *
 * @example Usage
 * ```ts
 * import { createHugePageAllocator, GuestMemory } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const hugePages = createHugePageAllocator();
 * if (hugePages.available) {
 *   const memory = new GuestMemory([{ idstr: "pc.ram", size: 4 << 20 }], {
 *     allocate: hugePages.allocate,
 *   });
 *   assert.equal(memory.blocks[0]!.bytes.byteLength, 4 << 20);
 * } else {
 *   assert.match(hugePages.reason, /ffi|libc/i); // e.g. run without --allow-ffi
 * }
 * ```
 *
 * @param options Whether to fault new blocks in on another thread.
 * @returns The allocator, or why there is none.
 */
export function createHugePageAllocator(
  options: HugePageAllocatorOptions = {},
): HugePageAllocator {
  if (Deno.build.os !== "linux") {
    return { available: false, reason: "transparent huge pages need Linux" };
  }
  // Asking first keeps Deno from prompting for the permission on a terminal.
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return {
      available: false,
      reason: "FFI is not allowed (run deno with --allow-ffi)",
    };
  }
  let libc;
  try {
    libc = Deno.dlopen("libc.so.6", {
      madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
      madviseInBackground: {
        name: "madvise",
        parameters: ["pointer", "usize", "i32"],
        result: "i32",
        nonblocking: true,
      },
    });
  } catch (error) {
    return {
      available: false,
      reason: error instanceof Error ? error.message : String(error),
    };
  }
  const symbols = libc.symbols;
  const populate = options.populate ?? false;
  return {
    available: true,
    allocate(size: number): Uint8Array {
      const buffer = new SharedArrayBuffer(size + HUGE_PAGE);
      const pointer = Deno.UnsafePointer.of(new Uint8Array(buffer));
      const base = BigInt(Deno.UnsafePointer.value(pointer));
      const aligned = (base + BigInt(HUGE_PAGE - 1)) & ~BigInt(HUGE_PAGE - 1);
      const start = Deno.UnsafePointer.create(aligned);
      symbols.madvise(start, BigInt(size), MADV_HUGEPAGE);
      if (populate) {
        // Best effort: older kernels refuse MADV_POPULATE_WRITE.
        populateInChunks(
          (address, length) =>
            symbols.madviseInBackground(
              Deno.UnsafePointer.create(address),
              BigInt(length),
              MADV_POPULATE_WRITE,
            ),
          { address: aligned, size },
          buffer,
        ).catch(() => {});
      }
      return new Uint8Array(buffer, Number(aligned - base), size);
    },
  };
}
