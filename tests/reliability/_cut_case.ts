/**
 * One case of the cut matrix: a small guest migrates over a connection
 * that breaks after a given number of bytes, in precopy, postcopy, or
 * postcopy with recovery on a fresh connection; what both ends and the
 * guest ended as is returned for the test to judge.
 *
 * @module
 */
import {
  describeError,
  DestinationMigration,
  type IncomingResult,
  type MigrationInfo,
  type MigrationStatus,
  ramSha256,
  SimulatedGuest,
  SourceMigration,
} from "../../mod.ts";
import {
  createCuttingTransportPair,
  type CutMode,
} from "../_helpers/cutting_transport.ts";

/** How a case migrates. */
export type CutScenario = "precopy" | "postcopy" | "postcopy-recover";

/** Every scenario, for loops. */
export const CUT_SCENARIOS: readonly CutScenario[] = [
  "precopy",
  "postcopy",
  "postcopy-recover",
];

const MIB = 1024 * 1024;
const RAM_BYTES = 2 * MIB;
const SEED = 11;
const WORKLOAD = { kind: "random", bytesPerSecond: 16 * MIB } as const;

/** What one case ended as. */
export interface CutOutcome {
  /** Whether the connection broke (false: the stream was shorter). */
  cut: boolean;
  /** Stream bytes the destination received on the first connection. */
  delivered: number;
  /**
   * Stream bytes the destination had received when it entered postcopy
   * (undefined when it did not).
   */
  postcopyAt: number | undefined;
  /** The source's status at the end (or when both settled as paused). */
  source: MigrationStatus;
  /** The destination's status at the same moment. */
  destination: MigrationStatus;
  /** Statuses each end went through, in order. */
  sourceStatuses: MigrationStatus[];
  destinationStatuses: MigrationStatus[];
  /** The source's error, as the user would see it, if it failed. */
  sourceError: string | undefined;
  /** The destination's error, if it failed. */
  destinationError: string | undefined;
  /** Whether the source guest was running at the end. */
  sourceGuestRunning: boolean;
  /**
   * Whether the source guest's RAM is exactly its workload's writes on top
   * of its first state (checked when it runs again after a failure).
   */
  sourceRamIntact: boolean | undefined;
  /** Whether a recovery was made. */
  recovered: boolean;
  /** The source's `ram-sha256` once completed (its guest stopped). */
  sourceSha256: Record<string, string> | undefined;
  /** The destination's `ram-sha256-received` once completed. */
  receivedSha256: Record<string, string> | undefined;
  /** Whether both ends reached their end within the time bound. */
  settled: boolean;
  /** Pages the destination guest asked for in postcopy. */
  postcopyRequests: number;
}

/**
 * Where a case cuts: after `at` bytes of the stream, or once the given
 * fraction of the pages missing when the destination entered postcopy
 * could have arrived (counted in bytes of page records from there).
 */
export type CutPoint = { at: number } | { inPostcopy: number };

/**
 * Runs one case.
 *
 * @param scenario How to migrate.
 * @param point Where the connection breaks (`{ at: Infinity }`: never).
 * @param options How the connection breaks; the time bound.
 * @returns What happened.
 */
export async function runCutCase(
  scenario: CutScenario,
  point: CutPoint,
  options: { mode?: CutMode; timeoutMs?: number } = {},
): Promise<CutOutcome> {
  const postcopy = scenario !== "precopy";
  const guest = new SimulatedGuest({
    ramBytes: RAM_BYTES,
    workload: WORKLOAD,
    prefill: true,
    seed: SEED,
  });
  const source = new SourceMigration(guest, {
    // With a return path the source learns whether the destination loaded
    // everything (without one it reports completed once its last byte is
    // written, like QEMU).
    capabilities: { "return-path": true, "postcopy-ram": postcopy },
    parameters: {
      "max-bandwidth": (postcopy ? 16 : 32) * MIB,
      "max-postcopy-bandwidth": 8 * MIB,
      // Precopy must not converge before postcopy starts.
      ...(postcopy ? { "downtime-limit": 1 } : {}),
    },
    // "postcopy" switches after a first pass, so a cut may fall in
    // precopy data; "postcopy-recover" switches at once, so the
    // destination guest runs (and writes) while all of RAM arrives.
    ...(postcopy
      ? { postcopyAfterPasses: scenario === "postcopy" ? 2 : 1 }
      : {}),
  });
  const destination = new DestinationMigration({
    postcopy,
    ramSha256Received: true,
  });
  const sourceStatuses = record(source);
  const destinationStatuses = record(destination);
  const pair = createCuttingTransportPair(
    "at" in point ? point.at : Infinity,
    options.mode,
  );
  let postcopyAt: number | undefined;
  destination.addEventListener("status", (event) => {
    if ((event as CustomEvent).detail.status !== "postcopy-active") return;
    if (postcopyAt !== undefined) return;
    postcopyAt = pair.delivered;
    if ("inPostcopy" in point) {
      // The missing pages are known right after the status moved.
      queueMicrotask(() => {
        const memory = destination.guest!.memory;
        const recordBytes = memory.pageSize + 8;
        pair.cutAfter = postcopyAt! +
          Math.floor(point.inPostcopy * memory.missingPages * recordBytes);
      });
    }
  });
  const sent = settle(source.migrate(pair.source));
  const received = settle(destination.incoming(pair.destination));
  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  const pairs = [pair];
  let settled = await bothEnd(source, destination, sent, received, deadline);
  if (
    settled && scenario === "postcopy-recover" &&
    source.status === "postcopy-paused" &&
    destination.status === "postcopy-paused"
  ) {
    const again = createCuttingTransportPair(Infinity);
    pairs.push(again);
    destination.recover(again.destination);
    source.resume(again.source);
    settled = await bothEnd(source, destination, sent, received, deadline);
  }
  const sourceStatus = source.status;
  const destinationStatus = destination.status;
  const sourceGuestRunning = guest.running;
  guest.pause();
  destination.guest?.pause();
  const sourceResult = await peek(sent);
  const destinationResult = await peek(received);
  const completed = sourceStatus === "completed" &&
    destinationStatus === "completed";
  const outcome: CutOutcome = {
    cut: pair.isCut,
    delivered: pair.delivered,
    postcopyAt,
    source: sourceStatus,
    destination: destinationStatus,
    sourceStatuses,
    destinationStatuses,
    sourceError: errorText(sourceResult),
    destinationError: errorText(destinationResult),
    sourceGuestRunning,
    sourceRamIntact: sourceGuestRunning ? ramIntact(guest) : undefined,
    recovered: pairs.length > 1,
    sourceSha256: completed ? await ramSha256(guest.memory) : undefined,
    receivedSha256: completed && destinationResult?.ok
      ? destinationResult.value.ramSha256Received
      : undefined,
    settled,
    postcopyRequests: destination.query().ram?.["postcopy-requests"] ?? 0,
  };
  for (const { source, destination } of pairs) {
    await source.close();
    await destination.close();
  }
  return outcome;
}

type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

function settle<T>(promise: Promise<T>): Promise<Settled<T>> {
  return promise.then(
    (value) => ({ ok: true as const, value }),
    (error) => ({ ok: false as const, error }),
  );
}

/** The result if the promise settled already, without waiting. */
async function peek<T>(
  promise: Promise<Settled<T>>,
): Promise<Settled<T> | undefined> {
  return await Promise.race([promise, Promise.resolve(undefined)]);
}

function errorText(
  result: Settled<MigrationInfo | IncomingResult> | undefined,
): string | undefined {
  return result && !result.ok ? describeError(result.error) : undefined;
}

function record(target: EventTarget): MigrationStatus[] {
  const statuses: MigrationStatus[] = [];
  target.addEventListener("status", (event) => {
    statuses.push((event as CustomEvent).detail.status);
  });
  return statuses;
}

const FINAL: readonly MigrationStatus[] = [
  "completed",
  "failed",
  "cancelled",
  "postcopy-paused",
];

/**
 * Waits until each end reached a status it stays in without help (a
 * settled migration, or postcopy-paused), or the deadline passed.
 */
async function bothEnd(
  source: SourceMigration,
  destination: DestinationMigration,
  sent: Promise<unknown>,
  received: Promise<unknown>,
  deadline: number,
): Promise<boolean> {
  let done = false;
  void Promise.all([sent, received]).then(() => done = true);
  while (Date.now() < deadline) {
    const atRest = (status: MigrationStatus) => FINAL.includes(status);
    if (done || (atRest(source.status) && atRest(destination.status))) {
      // A paused end may still fail or settle: give it a moment.
      await new Promise((resolve) => setTimeout(resolve, 20));
      if (done || (atRest(source.status) && atRest(destination.status))) {
        return true;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return false;
}

/** The source RAM is its first state plus exactly its workload's writes. */
function ramIntact(guest: SimulatedGuest): boolean {
  const replay = new SimulatedGuest({
    ramBytes: RAM_BYTES,
    workload: WORKLOAD,
    prefill: true,
    seed: SEED,
    running: false,
  });
  replay.workload.write(guest.workload.progress.written);
  const a = replay.memory.blocks[0]!.bytes;
  const b = guest.memory.blocks[0]!.bytes;
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}
