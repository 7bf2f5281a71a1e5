/**
 * A background snapshot (capability `background-snapshot`, QEMU's
 * `bg_migration_thread()`): the RAM as it was at one point, written while
 * the guest keeps running. Private to the source.
 *
 * ```
 * setup    header, CONFIGURATION, START ram: block list, EOS
 * active   stop the guest; take the device state (kept for the end);
 *          protect every page (copy-before-write); run the guest again
 *          loop: PART ram: the next pages in RAM order ≤ one step, EOS
 *                (each page as it was at the snapshot point)
 *          END ram: EOS; FULL livemig-guest, EOF, vmdesc
 * completed  the guest still runs here: a snapshot hands nothing over
 * ```
 *
 * One pass, nothing sent twice, no dirty log, no switchover decision; the
 * downtime is the pause at the start. The stream is an ordinary precopy
 * stream: any destination loads it.
 *
 * @module
 */

import { MigrationAbortedError, NotSupportedError } from "../errors.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import { sendSetup } from "./_precopy_loop.ts";
import { SnapshotDigest, SnapshotPageStream } from "./_snapshot_page_stream.ts";
import { SnapshotWriteGuard } from "./_snapshot_write_guard.ts";
import type { SourceRun } from "./_source_run.ts";
import { yieldToTasks } from "./_yield_to_tasks.ts";
import { guestStateRecords, RAM_SECTION_ID } from "./guest_device_section.ts";
import type { MigrationInfo } from "./migration_info.ts";

/**
 * Runs a background snapshot from setup to completed; the guest runs
 * throughout but for the pause at the start.
 *
 * @param run A fresh run in `setup`, its main connection open.
 * @returns The final info, status `completed`, with the snapshot's
 *   digest in `x-livemig-snapshot-ram-sha256`.
 * @throws {MigrationAbortedError} When the snapshot fails or is cancelled
 *   (the guest is running then), or a guest write skipped the guard.
 */
export async function runBackgroundSnapshot(
  run: SourceRun,
): Promise<MigrationInfo> {
  const memory = run.config.guest.memory;
  await sendSetup(run);
  // One pass, nothing sent twice: no dirty log to keep.
  memory.stopDirtyLog();
  run.metrics.setupDone();
  run.state.moveTo("active");
  const { guard, device } = await startWriteTracking(run);
  try {
    const digest = new SnapshotDigest(memory);
    await savePass(run, guard, digest);
    const channel = run.channel;
    await channel.write([
      { type: "section-end", sectionId: RAM_SECTION_ID },
      { type: "ram-eos" },
      { type: "section-footer", sectionId: RAM_SECTION_ID },
      ...device,
    ]);
    await channel.finish();
    await channel.close();
    run.metrics.completed();
    run.scanner.stop();
    run.throttle.stop();
    run.state.moveTo("completed");
    run.progress(true);
    return {
      ...run.info(run.state.status),
      "x-livemig-snapshot-ram-sha256": digest.digest(),
    };
  } finally {
    memory.guardWrites(undefined);
    guard.release();
  }
}

/**
 * Stops the guest, takes its device state, protects every page, and runs
 * the guest again: the snapshot point.
 */
async function startWriteTracking(
  run: SourceRun,
): Promise<{ guard: SnapshotWriteGuard; device: MigrationRecord[] }> {
  const { guest, snapshotCopyBytes } = run.config;
  const memory = guest.memory;
  const wasRunning = guest.running;
  await guest.pause();
  run.metrics.guestStopped();
  try {
    const device = guestStateRecords(
      guest.saveState(),
      guest.stateFields,
      memory.pageSize,
    );
    const guard = new SnapshotWriteGuard(
      memory,
      run.scanner.bitmaps,
      Math.floor(snapshotCopyBytes / memory.pageSize),
    );
    try {
      memory.guardWrites(guard);
    } catch (error) {
      if (!(error instanceof NotSupportedError)) throw error;
      throw new MigrationAbortedError(error.message, {
        reason: "source-failed",
        cause: error,
      });
    }
    return { guard, device };
  } finally {
    if (wasRunning) guest.resume();
    run.metrics.guestResumed();
  }
}

/** The single pass: PART sections of the next pages, a step each. */
async function savePass(
  run: SourceRun,
  guard: SnapshotWriteGuard,
  digest: SnapshotDigest,
): Promise<void> {
  const { clock, stepMs } = run.config;
  const { channel, scanner, signal } = run;
  while (scanner.remainingPages > 0) {
    signal.throwIfAborted();
    channel.limiter.measure();
    await channel.write([{ type: "section-part", sectionId: RAM_SECTION_ID }]);
    const started = clock.now();
    const pages = new SnapshotPageStream(scanner, guard, {
      batchPages: run.partBatchPages(),
      shouldStop: () => signal.aborted || clock.now() - started >= stepMs,
      counters: run.metrics.counters,
      digest,
    });
    for await (const batch of pages) await channel.write(batch);
    await channel.write([
      { type: "ram-eos" },
      { type: "section-footer", sectionId: RAM_SECTION_ID },
    ]);
    checkGuard(guard);
    run.progress(false);
    await yieldToTasks();
  }
}

/** Fails the snapshot once a guest write skipped the guard. */
function checkGuard(guard: SnapshotWriteGuard): void {
  const violation = guard.violation;
  if (violation === undefined) return;
  throw new MigrationAbortedError(
    `Cannot complete background snapshot: ${violation}`,
    { reason: "source-failed" },
  );
}
