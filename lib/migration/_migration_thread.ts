/**
 * The course of one source migration (QEMU's `migration_thread()`), from
 * setup to completed, failed or cancelled. Private to the source.
 *
 * ```
 * background-snapshot      runBackgroundSnapshot(), all of it
 * setup, active            runPrecopy()      until QEMU's decision says
 *                                            complete or postcopy
 * stop the guest           the downtime starts
 * [pre-switchover]         wait for continue (pause-before-switchover)
 * device                   completePrecopy()
 *  or postcopy-active …    startPostcopy(), runPostcopy()
 * completed
 * on an error              abort, close the connection, stop the dirty
 *                          log, run a guest stopped here again; then
 *                          cancelled (after cancel()) or failed
 * abandon() in postcopy    break the connection, stay postcopy-paused
 * ```
 *
 * @module
 */

import { MigrationAbortedError } from "../errors.ts";
import { runBackgroundSnapshot } from "./_background_snapshot.ts";
import { describeCause } from "./_describe_cause.ts";
import {
  type Connect,
  runPostcopy,
  startPostcopy,
} from "./_postcopy_source.ts";
import { completePrecopy, runPrecopy } from "./_precopy_loop.ts";
import type { SourceRun } from "./_source_run.ts";
import type { MigrationInfo } from "./migration_info.ts";

/**
 * Drives a run from setup to completed.
 *
 * @param run A fresh run in `setup`, its main connection open.
 * @param connect Opens further connections (the postcopy-preempt one).
 * @returns The final info, status `completed`.
 * @throws {MigrationAbortedError} When the run fails or is cancelled;
 *   before postcopy starts the guest is then running again.
 */
export async function runMigrationThread(
  run: SourceRun,
  connect: Connect | undefined,
): Promise<MigrationInfo> {
  const guest = run.config.guest;
  let pausedByUs = false;
  try {
    if (run.config.capabilities["background-snapshot"]) {
      return await runBackgroundSnapshot(run);
    }
    const decision = await runPrecopy(run);
    // Stop the guest; the downtime starts here.
    const wasRunning = guest.running;
    await guest.pause();
    pausedByUs = wasRunning;
    run.metrics.guestStopped();
    if (run.config.capabilities["pause-before-switchover"]) {
      await run.waitForContinue();
    }
    if (decision.step === "postcopy") {
      await startPostcopy(run, connect);
      pausedByUs = false; // the destination runs the guest from now on
      await runPostcopy(run, connect);
    } else {
      await completePrecopy(run);
    }
    run.metrics.completed();
    run.scanner.stop();
    run.throttle.stop();
    run.state.moveTo("completed");
    run.progress(true);
    return run.info(run.state.status);
  } catch (error) {
    const reason = run.signal.aborted ? run.signal.reason : error;
    run.fail(reason);
    if (pausedByUs) guest.resume();
    run.metrics.ended();
    throw failure(run, reason);
  }
}

/**
 * Ends a run that did not complete: cancelled or failed, or abandoned in
 * postcopy, where it stays `postcopy-paused` (the destination runs the
 * guest, so it is neither safe here nor complete there).
 */
function failure(run: SourceRun, reason: unknown): MigrationAbortedError {
  if (
    run.state.status === "postcopy-paused" &&
    reason instanceof MigrationAbortedError && reason.reason === "abandoned"
  ) {
    run.errorDesc = reason.message;
    run.progress(true);
    return reason;
  }
  if (run.state.status === "cancelling") {
    run.state.moveTo("cancelled");
    run.progress(true);
    return reason instanceof MigrationAbortedError
      ? reason
      : new MigrationAbortedError(
        "Cannot complete migration: it was cancelled",
        { reason: "cancelled", cause: reason },
      );
  }
  const failure = reason instanceof MigrationAbortedError
    ? reason
    : new MigrationAbortedError(
      `Cannot complete migration: ${describeCause(reason)}`,
      { reason: "transport-failed", cause: reason },
    );
  run.errorDesc = failure.message;
  run.state.moveTo("failed");
  run.progress(true);
  return failure;
}
