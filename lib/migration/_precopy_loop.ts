/**
 * The precopy phases of the source (QEMU's `qemu_savevm_state_setup()`,
 * `migration_iteration_run()` and `migration_completion()`). Private to
 * the source.
 *
 * ```
 * setup   header, CONFIGURATION, [OPEN_RETURN_PATH, PING 1],
 *         [POSTCOPY_ADVISE], START ram: block list, EOS  (dirty log on, pass 1)
 * active  loop: decide (sync when the estimate is under the threshold)
 *               complete or postcopy? → return
 *               iterate → PART ram: pages ≤ one step, EOS
 * device  END ram: final sync, every dirty page, EOS; FULL livemig-guest,
 *         EOF, vmdesc; with a return path, wait for SHUT
 * ```
 *
 * @module
 */

import { MigrationAbortedError } from "../errors.ts";
import { PageSourceStream } from "../ram/page_source_stream.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import type { SourceRun } from "./_source_run.ts";
import { yieldToTasks } from "./_yield_to_tasks.ts";
import { guestStateRecords, RAM_SECTION_ID } from "./guest_device_section.ts";
import {
  decideIteration,
  type IterationDecision,
  switchoverThreshold,
} from "./switchover_decision.ts";

/**
 * Sends the setup records and iterates until QEMU's decision says to
 * complete or to start postcopy; the guest still runs.
 *
 * @param run The run, its main connection open.
 * @returns The decision that ended the loop.
 */
export async function runPrecopy(run: SourceRun): Promise<IterationDecision> {
  await sendSetup(run);
  run.metrics.setupDone();
  run.state.moveTo("active");
  return await iterate(run);
}

/**
 * Precopy completion, with the guest stopped: END with the final pass,
 * the device state, EOF; records `downtime` once the destination has it.
 *
 * @param run The run.
 */
export async function completePrecopy(run: SourceRun): Promise<void> {
  const { guest, batchPages } = run.config;
  const channel = run.channel;
  run.state.moveTo("device");
  channel.limiter.bytesPerSecond = 0;
  await channel.write([{ type: "section-end", sectionId: RAM_SECTION_ID }]);
  run.sync();
  const rest = new PageSourceStream(run.scanner, { batchPages })
    .pipeThrough(run.pageEncoder(true));
  for await (const batch of rest) await channel.write(batch);
  await channel.write([
    { type: "section-footer", sectionId: RAM_SECTION_ID },
    ...guestStateRecords(
      guest.saveState(),
      guest.stateFields,
      guest.memory.pageSize,
    ),
  ]);
  // Closing our direction (a half-close on sockets) gives an exec:
  // command EOF and waits for it, and flushes a file, so every byte is
  // where it belongs before the migration says completed.
  await channel.finish();
  if (run.usesReturnPath) {
    const shut = await Promise.race([channel.shut, channel.failed]);
    if (shut !== 0) {
      throw new MigrationAbortedError(
        `Cannot complete migration: the destination reported an error loading the stream (SHUT ${shut})`,
        { reason: "destination-failed" },
      );
    }
  }
  run.metrics.downtimeEnded();
  await channel.close();
}

/**
 * Sends the setup records and the RAM section's START with the block
 * list, and starts the dirty-page scan with every page to send.
 *
 * @param run The run, its main connection open.
 */
export async function sendSetup(run: SourceRun): Promise<void> {
  const { capabilities, guest, machine, uuid } = run.config;
  const memory = guest.memory;
  const pageSize = memory.pageSize;
  const channel = run.channel;
  const setup: MigrationRecord[] = [
    { type: "header", version: 3 },
    // QEMU sends its UUID only when it has one (-uuid) and validate-uuid
    // is on (vmstate_uuid_needed()).
    capabilities["validate-uuid"] && uuid !== undefined
      ? { type: "configuration", machine, uuid }
      : { type: "configuration", machine },
  ];
  if (run.usesReturnPath) {
    setup.push(
      { type: "command", command: "OPEN_RETURN_PATH" },
      { type: "command", command: "PING", value: 1 },
    );
  }
  if (capabilities["postcopy-ram"]) {
    setup.push({
      type: "command",
      command: "POSTCOPY_ADVISE",
      pageSizeSummary: pageSize,
      targetPageSize: pageSize,
    });
  }
  await channel.write(setup);
  run.startScanning();
  await channel.write([
    {
      type: "section-start",
      sectionId: RAM_SECTION_ID,
      idstr: "ram",
      instanceId: 0,
      versionId: 4,
    },
    {
      type: "ram-mem-size",
      blocks: memory.blocks.map((b) => ({
        idstr: b.idstr,
        usedLength: b.bytes.byteLength,
      })),
    },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: RAM_SECTION_ID },
  ]);
}

/**
 * The iteration loop: decide, then send one step's worth of dirty pages
 * in a PART section, until the decision is to complete or to start
 * postcopy.
 */
async function iterate(run: SourceRun): Promise<IterationDecision> {
  const { clock, stepMs } = run.config;
  const channel = run.channel;
  const scanner = run.scanner;
  const signal = run.signal;
  while (true) {
    signal.throwIfAborted();
    channel.limiter.measure();
    requestPostcopyWhenDue(run);
    const decision = decide(run);
    if (decision.step === "complete" || decision.step === "postcopy") {
      return decision;
    }
    await awaitSwitchoverAck(run);
    await channel.write([{ type: "section-part", sectionId: RAM_SECTION_ID }]);
    const started = clock.now();
    const pages = new PageSourceStream(scanner, {
      batchPages: run.partBatchPages(),
      shouldStop: () => signal.aborted || clock.now() - started >= stepMs,
    }).pipeThrough(run.pageEncoder(false));
    for await (const batch of pages) await channel.write(batch);
    await channel.write([{
      type: "section-footer",
      sectionId: RAM_SECTION_ID,
    }]);
    run.progress(false);
    await yieldToTasks();
  }
}

/** QEMU's decision, with the sync it asks for when the estimate is low. */
function decide(run: SourceRun): IterationDecision {
  const { guest, parameters } = run.config;
  const pageSize = guest.memory.pageSize;
  const scanner = run.scanner;
  const state = {
    pendingBytes: scanner.remainingPages * pageSize,
    exact: false,
    thresholdBytes: switchoverThreshold({
      measuredBytesPerMs: run.metrics.bytesPerMs,
      downtimeLimitMs: parameters["downtime-limit"],
      availSwitchoverBandwidth: parameters["avail-switchover-bandwidth"],
    }),
    postcopyRequested: run.postcopyRequested,
    inPostcopy: false,
    mustPrecopyBytes: 0,
    canSwitchover: !run.config.capabilities["switchover-ack"] ||
      run.channel.switchoverAcked,
  };
  const decision = decideIteration(state);
  if (decision.step !== "sync") return decision;
  run.sync();
  requestPostcopyWhenDue(run);
  return decideIteration({
    ...state,
    pendingBytes: scanner.remainingPages * pageSize,
    exact: true,
    postcopyRequested: run.postcopyRequested,
  });
}

/**
 * With switchover-ack and nothing left to send, waits up to a step for
 * the destination's ack instead of sending empty PART sections.
 */
async function awaitSwitchoverAck(run: SourceRun): Promise<void> {
  const channel = run.channel;
  if (
    !run.config.capabilities["switchover-ack"] || channel.switchoverAcked ||
    run.scanner.remainingPages > 0
  ) {
    return;
  }
  const wait = new AbortController();
  await Promise.race([
    channel.switchoverAck,
    run.config.clock.sleep(run.config.stepMs, wait.signal).catch(() => {}),
  ]).finally(() => wait.abort());
}

/**
 * Requests postcopy once `postcopyAfterPasses` passes over RAM are
 * complete. A pass ends at a dirty-bitmap sync (QEMU's MIGRATION_PASS):
 * the setup sync starts the first pass, so N passes are complete after
 * N syncs more, and 0 asks for postcopy before any page is sent.
 */
function requestPostcopyWhenDue(run: SourceRun): void {
  const { capabilities, postcopyAfterPasses } = run.config;
  if (
    postcopyAfterPasses !== undefined && capabilities["postcopy-ram"] &&
    run.scanner.syncCount - 1 >= postcopyAfterPasses
  ) {
    run.requestPostcopy();
  }
}
