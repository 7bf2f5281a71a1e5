/**
 * `calc-dirty-rate` and `query-dirty-rate` as QEMU 7.2's `page-sampling`
 * mode does them (`migration/dirtyrate.c`): `sample-pages` pages per GiB
 * of each RAM block of at least 128 KiB are picked at random and copied;
 * after `calc-time` seconds the copies are compared with the pages, and
 *
 * ```
 * dirty-rate (MiB/s) = changed samples × RAM MiB × 1000 / (samples × ms measured)
 * ```
 *
 * The pages are compared whole (QEMU compares CRC32s). The sampling needs
 * no dirty log, so it works while a migration runs. QEMU's other modes
 * need KVM: `dirty-ring` gets QEMU's refusal without a dirty ring,
 * `dirty-bitmap` livemig's. Private to lib/qmp/.
 *
 * @module
 */

import { SeededRandom } from "../bytes/seeded_random.ts";
import type { MigratableGuest } from "../guest/migratable_guest.ts";
import { type Clock, SYSTEM_CLOCK } from "../streams/clock.ts";
import { QmpError } from "./qmp_error.ts";
import type { QmpValue } from "./qmp_json.ts";

/** QEMU's smallest block worth sampling: 128 KiB. */
const MIN_BLOCK_BYTES = 128 << 10;

/** One sampled page and its bytes at the start. */
interface Sample {
  bytes: Uint8Array;
  copy: Uint8Array;
}

/** The measurement state `query-dirty-rate` reports. */
export class DirtyRateSampler {
  readonly #guest: () => MigratableGuest | undefined;
  readonly #clock: Clock;
  readonly #random = new SeededRandom(1);
  readonly #abort = new AbortController();
  #status: "unstarted" | "measuring" | "measured" = "unstarted";
  #samplePages = 0;
  #calcTime = 0;
  #startTime = 0;
  #dirtyRate = 0;

  /**
   * @param guest The guest to sample, when there is one.
   * @param clock The clock of the measurement.
   */
  constructor(guest: () => MigratableGuest | undefined, clock = SYSTEM_CLOCK) {
    this.#guest = guest;
    this.#clock = clock;
  }

  /**
   * `calc-dirty-rate`: starts a measurement and returns at once.
   *
   * @param args The command's arguments.
   * @throws {QmpError} With QEMU's refusal.
   */
  start(args: Readonly<Record<string, QmpValue>>): void {
    if (this.#status === "measuring") {
      throw new QmpError({ desc: "the dirty rate is already being measured." });
    }
    const calcTime = Number(args["calc-time"]);
    if (calcTime < 1 || calcTime > 60) {
      throw new QmpError({ desc: "calc-time is out of range[1, 60]." });
    }
    const mode = (args.mode as string | undefined) ?? "page-sampling";
    if (args["sample-pages"] !== undefined && mode !== "page-sampling") {
      throw new QmpError({
        desc: "either sample-pages or dirty-ring can be specified.",
      });
    }
    const samplePages = Number(args["sample-pages"] ?? 512);
    if (samplePages < 128 || samplePages > 16384) {
      throw new QmpError({ desc: "sample-pages is out of range[128, 16384]." });
    }
    if (mode === "dirty-ring") {
      throw new QmpError({
        desc: "mode dirty-ring is not enabled, use other method instead.",
      });
    }
    if (mode !== "page-sampling") {
      throw new QmpError({
        desc:
          `Cannot calculate the dirty rate in mode "${mode}": livemig measures it by page sampling (mode page-sampling)`,
      });
    }
    this.#status = "measuring";
    this.#samplePages = samplePages;
    this.#calcTime = calcTime;
    this.#startTime = Math.floor(this.#clock.now() / 1000);
    void this.#measure(calcTime * 1000, samplePages);
  }

  /** `query-dirty-rate`. */
  query(): QmpValue {
    const info: Record<string, QmpValue> = {
      status: this.#status,
      "sample-pages": this.#samplePages,
      mode: "page-sampling",
      "start-time": this.#startTime,
      "calc-time": this.#calcTime,
    };
    if (this.#status === "measured") info["dirty-rate"] = this.#dirtyRate;
    return info;
  }

  /** Ends a measurement under way; it is not reported. */
  stop(): void {
    this.#abort.abort();
  }

  async #measure(ms: number, samplePages: number): Promise<void> {
    const samples = this.#sample(samplePages);
    const started = this.#clock.now();
    try {
      await this.#clock.sleep(ms, this.#abort.signal);
    } catch {
      return;
    }
    const elapsed = Math.max(1, Math.round(this.#clock.now() - started));
    const changed =
      samples.list.filter(({ bytes, copy }) => !equalBytes(bytes, copy)).length;
    this.#dirtyRate = samples.list.length === 0 ? 0 : Math.floor(
      changed * samples.totalMiB * 1000 / (samples.list.length * elapsed),
    );
    this.#status = "measured";
  }

  #sample(samplePages: number): { list: Sample[]; totalMiB: number } {
    const memory = this.#guest()?.memory;
    const list: Sample[] = [];
    let totalBytes = 0;
    for (const block of memory?.blocks ?? []) {
      const size = block.bytes.byteLength;
      if (size < MIN_BLOCK_BYTES) continue;
      totalBytes += size;
      const pageSize = memory!.pageSize;
      const count = Math.max(1, Math.floor(samplePages * size / 2 ** 30));
      for (let i = 0; i < count; i++) {
        const page = this.#random.nextInt(size / pageSize);
        const bytes = block.bytes.subarray(
          page * pageSize,
          (page + 1) * pageSize,
        );
        list.push({ bytes, copy: bytes.slice() });
      }
    }
    return { list, totalMiB: Math.floor(totalBytes / 2 ** 20) };
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
