/**
 * QEMU's per-iteration decision on the source (`migration_iteration_run()`
 * in QEMU's `migration/migration.c`, with the pending estimate of
 * `ram_state_pending_estimate/exact` in `migration/ram.c`), as a pure
 * function:
 *
 * ```
 * threshold = bandwidth (bytes/ms, last 100 ms window) × downtime-limit (ms)
 *             (bandwidth = avail-switchover-bandwidth / 1000 when that is set;
 *              0 until the first window closes)
 * 1. pending = dirty pages still to send × page size (an estimate)
 * 2. if the estimate < threshold: sync the dirty bitmap for the exact value
 * 3. if pending == 0 or pending < threshold: complete (stop the guest, switch over)
 * 4. else if postcopy was requested, is not running, and the part that
 *    cannot go in postcopy <= threshold: start postcopy
 * 5. else: send one more iteration step
 * ```
 *
 * Extra stop rules (iteration caps, give-up policies) are not QEMU's and
 * are not here.
 *
 * @module
 */

/** What the loop knows at a decision point. */
export interface IterationState {
  /** Bytes still to send: dirty pages × page size. */
  pendingBytes: number;
  /** Whether `pendingBytes` comes from a fresh dirty-bitmap sync. */
  exact: boolean;
  /** threshold = bandwidth × downtime-limit, in bytes. */
  thresholdBytes: number;
  /** Whether `migrate-start-postcopy` was requested. */
  postcopyRequested: boolean;
  /** Whether postcopy is already running. */
  inPostcopy: boolean;
  /**
   * Pending bytes that cannot be sent in postcopy (non-RAM iterative
   * state); 0 for RAM-only guests.
   */
  mustPrecopyBytes: number;
  /**
   * Whether the guest may be stopped for switchover: with `switchover-ack`
   * (QEMU 8.1 on), only once the destination's SWITCHOVER_ACK arrived.
   *
   * @default {true}
   */
  canSwitchover?: boolean;
}

/** The loop's next step, with the reason kept for logs and tests. */
export type IterationDecision =
  | { step: "sync" }
  | { step: "complete"; reason: "nothing-pending" | "fits-downtime" }
  | { step: "postcopy" }
  | { step: "iterate" };

/**
 * Decides the next step of the precopy loop, exactly as QEMU does.
 *
 * @example Usage
 * ```ts
 * import { decideIteration } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * const state = {
 *   pendingBytes: 8 << 20, exact: false, thresholdBytes: 40 << 20,
 *   postcopyRequested: false, inPostcopy: false, mustPrecopyBytes: 0,
 * };
 * assert.deepEqual(decideIteration(state), { step: "sync" });
 * assert.deepEqual(decideIteration({ ...state, exact: true }), { step: "complete", reason: "fits-downtime" });
 * assert.deepEqual(decideIteration({ ...state, pendingBytes: 64 << 20 }), { step: "iterate" });
 * // switchover-ack: no switchover before the destination's ack.
 * assert.deepEqual(decideIteration({ ...state, exact: true, canSwitchover: false }), { step: "iterate" });
 * ```
 *
 * @param state What the loop measured.
 * @returns The next step.
 */
export function decideIteration(state: IterationState): IterationDecision {
  const { pendingBytes, thresholdBytes } = state;
  const canSwitchover = state.canSwitchover ?? true;
  if (!state.exact && !state.inPostcopy && pendingBytes < thresholdBytes) {
    return { step: "sync" };
  }
  if (pendingBytes === 0 && canSwitchover) {
    return { step: "complete", reason: "nothing-pending" };
  }
  if (pendingBytes < thresholdBytes && canSwitchover) {
    return { step: "complete", reason: "fits-downtime" };
  }
  if (
    canSwitchover && state.postcopyRequested && !state.inPostcopy &&
    state.mustPrecopyBytes <= thresholdBytes
  ) {
    return { step: "postcopy" };
  }
  return { step: "iterate" };
}

/**
 * The switchover threshold in bytes: bandwidth × downtime-limit, where the
 * bandwidth is `avail-switchover-bandwidth` when set, else the last
 * measured one.
 *
 * @example Usage
 * ```ts
 * import { switchoverThreshold } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * // 100 MB/s measured, 300 ms downtime: 30 MB may remain.
 * assert.equal(switchoverThreshold({ measuredBytesPerMs: 100_000, downtimeLimitMs: 300, availSwitchoverBandwidth: 0 }), 30_000_000);
 * assert.equal(switchoverThreshold({ measuredBytesPerMs: 100_000, downtimeLimitMs: 300, availSwitchoverBandwidth: 1_000_000 }), 300_000);
 * ```
 *
 * @param input The measured bandwidth (bytes/ms; 0 before the first
 *   window), `downtime-limit` (ms) and `avail-switchover-bandwidth`
 *   (bytes/s; 0 = use the measurement).
 * @returns The threshold in bytes.
 */
export function switchoverThreshold(input: {
  measuredBytesPerMs: number;
  downtimeLimitMs: number;
  availSwitchoverBandwidth: number;
}): number {
  const bytesPerMs = input.availSwitchoverBandwidth > 0
    ? input.availSwitchoverBandwidth / 1000
    : input.measuredBytesPerMs;
  return bytesPerMs * input.downtimeLimitMs;
}

/**
 * QEMU's `expected-downtime` while the migration runs: the bytes still to
 * send divided by the bandwidth, in milliseconds; `downtime-limit` until a
 * bandwidth is known.
 *
 * @example Usage
 * ```ts
 * import { expectedDowntime } from "@livemig/livemig";
 * import assert from "node:assert/strict";
 *
 * assert.equal(expectedDowntime({ remainingBytes: 5_000_000, bytesPerMs: 100_000, downtimeLimitMs: 300 }), 50);
 * assert.equal(expectedDowntime({ remainingBytes: 5_000_000, bytesPerMs: 0, downtimeLimitMs: 300 }), 300);
 * ```
 *
 * @param input Remaining bytes, bandwidth in bytes/ms and `downtime-limit`.
 * @returns Milliseconds.
 */
export function expectedDowntime(input: {
  remainingBytes: number;
  bytesPerMs: number;
  downtimeLimitMs: number;
}): number {
  if (!(input.bytesPerMs > 0)) return input.downtimeLimitMs;
  return Math.round(input.remainingBytes / input.bytesPerMs);
}
