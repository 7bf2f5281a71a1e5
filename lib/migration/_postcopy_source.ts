/**
 * Postcopy on the source (QEMU's `postcopy_start()`, the postcopy part of
 * the migration thread, `postcopy_pause()` and `postcopy_do_resume()`).
 * Private to the source.
 *
 * ```
 * start      final sync; POSTCOPY_RAM_DISCARD for every page still to
 *            send; PING 2; PACKAGED [LISTEN, FULL livemig-guest, PING 3,
 *            RUN]; PING 4                       (the destination runs now)
 * background PART ram: requested pages first, then the scan goes on from
 *            the last one; … END ram, EOS, EOF; wait for SHUT
 * preempt    a second connection carrying requested pages only
 * pause      the connection broke: postcopy-paused until resume()
 * recover    RECV_BITMAP per block → pages the destination lacks;
 *            RESUME → RESUME_ACK 1; postcopy-active again
 * ```
 *
 * @module
 */

import { MigrationAbortedError } from "../errors.ts";
import { DirtyBitmap } from "../guest/dirty_bitmap.ts";
import type { GuestMemory } from "../guest/guest_memory.ts";
import { PostcopyPageSourceStream } from "../postcopy/postcopy_page_source_stream.ts";
import type { DirtyPageScanner } from "../ram/dirty_page_scanner.ts";
import type { Transport } from "../transport/transport.ts";
import { MAX_DISCARDS_PER_COMMAND } from "../wire/mig_cmd.ts";
import type { MigrationRecord } from "../wire/migration_record.ts";
import { encodePostcopyPackage } from "../wire/postcopy_package.ts";
import { describeCause } from "./_describe_cause.ts";
import { OutgoingChannel } from "./_outgoing_channel.ts";
import { PreemptChannel } from "./_preempt_channel.ts";
import type { SourceRun } from "./_source_run.ts";
import { yieldToIo } from "./_yield_to_io.ts";
import { yieldToTasks } from "./_yield_to_tasks.ts";
import { guestStateRecords, RAM_SECTION_ID } from "./guest_device_section.ts";

/** Longest stretch of postcopy background work between two socket polls. */
const IO_TURN_MS = 0.5;

/** Opens further connections to the destination (the preempt channel). */
export type Connect = () => Promise<Transport>;

/**
 * Postcopy start, with the guest stopped: final sync, discard every page
 * still to send, then the package with the device state; the destination
 * runs the guest once RUN arrives, and the downtime ends.
 *
 * @param run The run.
 * @param connect Opens the preempt connection, with `postcopy-preempt`.
 */
export async function startPostcopy(
  run: SourceRun,
  connect: Connect | undefined,
): Promise<void> {
  const { capabilities, guest, parameters } = run.config;
  const pageSize = guest.memory.pageSize;
  const channel = run.channel;
  run.state.moveTo("postcopy-active");
  channel.limiter.bytesPerSecond = parameters["max-postcopy-bandwidth"];
  run.sync();
  const discards = discardCommands(guest.memory, run.scanner);
  channel.forgetCurrentBlock();
  run.lastBlock.name = undefined;
  await channel.write([...discards, {
    type: "command",
    command: "PING",
    value: 2,
  }]);
  const device = guestStateRecords(
    guest.saveState(),
    guest.stateFields,
    pageSize,
  )
    .slice(0, 3); // FULL section: header, state, footer (no EOF or vmdesc in postcopy)
  await channel.write([
    encodePostcopyPackage([
      { type: "command", command: "POSTCOPY_LISTEN" },
      ...device,
      { type: "command", command: "PING", value: 3 },
      { type: "command", command: "POSTCOPY_RUN" },
    ], { pageSize }),
    { type: "command", command: "PING", value: 4 },
  ]);
  run.metrics.downtimeEnded();
  run.metrics.postcopyStarted();
  if (capabilities["postcopy-preempt"] && connect) {
    run.usePreempt(openPreempt(run, await connect()));
  }
}

/**
 * The postcopy background copy, serving requested pages first, across
 * connection failures (postcopy-paused) and recoveries.
 *
 * @param run The run, postcopy started.
 * @param connect Opens a preempt connection after a recovery, when
 *   `resume()` brought none.
 */
export async function runPostcopy(
  run: SourceRun,
  connect: Connect | undefined,
): Promise<void> {
  // Giving up breaks the connection in use; the loop then pauses and stops.
  const breakOff = () => run.channel.fail(run.abandoned.reason);
  run.abandoned.addEventListener("abort", breakOff, { once: true });
  if (run.abandoned.aborted) breakOff();
  try {
    let channel = run.channel;
    while (true) {
      try {
        await background(run, channel);
        await channel.close();
        return;
      } catch (error) {
        channel.fail(error);
        run.preempt?.close();
        run.usePreempt(undefined);
        if (run.state.status === "cancelling") throw error;
        pause(run, error);
      }
      channel = await reconnect(run, connect);
    }
  } finally {
    run.abandoned.removeEventListener("abort", breakOff);
  }
}

/**
 * postcopy-paused: the destination runs the guest and waits for the pages
 * still here. Throws when the app gave the migration up.
 */
function pause(run: SourceRun, error: unknown): void {
  if (error !== run.abandoned.reason) run.errorDesc = describeCause(error);
  if (run.state.status !== "postcopy-paused") {
    run.state.moveTo("postcopy-paused");
  }
  run.progress(true);
  if (run.abandoned.aborted) throw abandonedError(run);
}

/** The error a migration given up in postcopy ends with. */
function abandonedError(run: SourceRun): MigrationAbortedError {
  const where = run.errorDesc === undefined
    ? "postcopy"
    : `postcopy-paused (${run.errorDesc})`;
  return new MigrationAbortedError(
    `Cannot complete migration: abandoned in ${where}; the destination runs the guest without all of its RAM`,
    { reason: "abandoned", cause: run.abandoned.reason },
  );
}

/**
 * Waits for a new connection, then recovers; a failed recovery goes back
 * to paused and waits again.
 */
async function reconnect(
  run: SourceRun,
  connect: Connect | undefined,
): Promise<OutgoingChannel> {
  while (true) {
    const next = await run.waitForResume().catch((error) => {
      throw run.abandoned.aborted ? abandonedError(run) : error;
    });
    run.state.moveTo("postcopy-recover");
    const channel = run.openChannel(next.transport, true);
    try {
      await recover(run, channel);
      if (run.config.capabilities["postcopy-preempt"]) {
        const preempt = next.preempt ?? (connect ? await connect() : undefined);
        if (preempt) run.usePreempt(openPreempt(run, preempt));
      }
      run.lastBlock.name = undefined;
      run.errorDesc = undefined;
      run.state.moveTo("postcopy-active");
      run.progress(true);
      return channel;
    } catch (error) {
      channel.fail(error);
      pause(run, error);
    }
  }
}

/** The recovery handshake: RECV_BITMAP per block, then RESUME. */
async function recover(
  run: SourceRun,
  channel: OutgoingChannel,
): Promise<void> {
  const memory = run.config.guest.memory;
  const scanner = run.scanner;
  await channel.write(
    memory.blocks.map((
      b,
    ) => ({
      type: "command",
      command: "RECV_BITMAP",
      block: b.idstr,
    } as const)),
  );
  for (const block of memory.blocks) {
    const bytes = await Promise.race([
      channel.bitmap(block.idstr),
      channel.failed,
    ]);
    const received = DirtyBitmap.fromLittleEndian(bytes, block.pageCount);
    const toSend = new DirtyBitmap(block.pageCount);
    toSend.setAll();
    toSend.andNot(received);
    scanner.replace(block.index, toSend);
  }
  await channel.write([{ type: "command", command: "POSTCOPY_RESUME" }]);
  const ack = await Promise.race([channel.resumeAck, channel.failed]);
  if (ack !== 1) {
    throw new MigrationAbortedError(
      `Cannot resume postcopy: RESUME_ACK carried ${ack}, expected 1`,
      { reason: "destination-failed" },
    );
  }
  scanner.seek(0, 0);
}

/** Sends what is left, requests first, then END and EOF; waits for SHUT. */
async function background(
  run: SourceRun,
  channel: OutgoingChannel,
): Promise<void> {
  const { clock, stepMs } = run.config;
  const scanner = run.scanner;
  let ioTurn = clock.now();
  while (scanner.remainingPages > 0) {
    await channel.write([{
      type: "section-part",
      sectionId: RAM_SECTION_ID,
    }]);
    const started = clock.now();
    let urgent = false;
    const pages = new PostcopyPageSourceStream(scanner, run.requests, {
      batchPages: run.partBatchPages(),
      shouldStop: () => clock.now() - started >= stepMs,
      requestsElsewhere: run.preempt !== undefined,
      onUrgent: () => {
        urgent = true;
      },
    }).pipeThrough(run.pageEncoder(false, false));
    for await (const batch of pages) {
      await channel.write(batch);
      if (clock.now() - ioTurn >= IO_TURN_MS) {
        // Writes to a ready socket never wait: let the return path (page
        // requests) be read, or they wait until this step ends.
        await yieldToIo();
        ioTurn = clock.now();
      }
      if (urgent) {
        // Requested pages must not wait for the rate limit.
        channel.limiter.passUntil(channel.encodedBytes);
        urgent = false;
      }
    }
    await channel.write([{
      type: "section-footer",
      sectionId: RAM_SECTION_ID,
    }]);
    run.progress(false);
    await yieldToTasks();
  }
  await run.preempt?.finish();
  await channel.write([
    { type: "section-end", sectionId: RAM_SECTION_ID },
    { type: "ram-eos" },
    { type: "section-footer", sectionId: RAM_SECTION_ID },
    { type: "eof" },
  ]);
  await channel.finish();
  const shut = await Promise.race([channel.shut, channel.failed]);
  if (shut !== 0) {
    throw new MigrationAbortedError(
      `Cannot complete migration: the destination reported an error (SHUT ${shut})`,
      { reason: "destination-failed" },
    );
  }
  run.preempt?.close();
}

/** POSTCOPY_RAM_DISCARD commands for every page still to send. */
function discardCommands(
  memory: GuestMemory,
  scanner: DirtyPageScanner,
): MigrationRecord[] {
  const pageSize = memory.pageSize;
  const discards: MigrationRecord[] = [];
  scanner.bitmaps.forEach((bitmap, index) => {
    const block = memory.blocks[index]!.idstr;
    const runs = bitmap.runs();
    for (let i = 0; i < runs.length; i += MAX_DISCARDS_PER_COMMAND) {
      discards.push({
        type: "command",
        command: "POSTCOPY_RAM_DISCARD",
        block,
        ranges: runs.slice(i, i + MAX_DISCARDS_PER_COMMAND).map((
          [first, count],
        ) => ({
          start: first * pageSize,
          length: count * pageSize,
        })),
      });
    }
  });
  return discards;
}

/** A preempt channel on `transport`: not rate-limited. */
function openPreempt(run: SourceRun, transport: Transport): PreemptChannel {
  const { clock, guest } = run.config;
  const channel = OutgoingChannel.toTransport(transport, {
    clock,
    pageSize: guest.memory.pageSize,
    bytesPerSecond: 0,
  });
  return new PreemptChannel(channel, run.scanner, run.requests);
}
