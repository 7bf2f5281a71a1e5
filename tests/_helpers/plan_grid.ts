/**
 * The planner's validation grid: small workloads migrated for real
 * (livemig → livemig in this process over loopback TCP) next to what
 * predictMigration says for them. Used by tests/plan/plan_grid_test.ts and
 * by `deno task plan-grid`, which prints the table the README shows.
 */
import {
  connectTransport,
  DestinationMigration,
  formatBytes,
  listenTransport,
  type MigrationInfo,
  type MigrationPrediction,
  predictMigration,
  RateLimitStream,
  SimulatedGuest,
  SourceMigration,
  type Transport,
  type WorkloadSpec,
} from "../../mod.ts";

const MIB = 1024 * 1024;

/** One workload of the grid. */
export interface GridCase {
  ramBytes: number;
  workload: WorkloadSpec;
  maxBandwidth: number;
  downtimeLimitMs: number;
}

/**
 * The link every case goes over: loopback TCP held to 64 MiB/s, so the
 * final pass (which max-bandwidth does not limit) has a known rate, as a
 * real network has.
 */
export const LINK_BYTES_PER_SECOND = 64 * MIB;

/** A case, its prediction and what really happened. */
export interface GridRow {
  gridCase: GridCase;
  predicted: MigrationPrediction;
  actual: MigrationInfo;
}

/** RAM × workload × max-bandwidth, each run about a second or less. */
export const GRID: GridCase[] = (() => {
  const cases: GridCase[] = [];
  for (const ramBytes of [32 * MIB, 64 * MIB]) {
    for (
      const workload of [
        { kind: "hot-set", setBytes: 8 * MIB, bytesPerSecond: 24 * MIB },
        { kind: "random", bytesPerSecond: 16 * MIB },
      ] satisfies WorkloadSpec[]
    ) {
      for (const maxBandwidth of [32 * MIB, 48 * MIB]) {
        cases.push({ ramBytes, workload, maxBandwidth, downtimeLimitMs: 300 });
      }
    }
  }
  return cases;
})();

/**
 * Migrates a guest for real, in this process over loopback TCP.
 *
 * @returns The source's final query-migrate.
 */
export async function migrateForReal(
  gridCase: GridCase,
  watch?: (source: SourceMigration) => void,
): Promise<MigrationInfo> {
  const guest = new SimulatedGuest({
    ramBytes: gridCase.ramBytes,
    workload: gridCase.workload,
    prefill: true,
    seed: 11,
  });
  const listener = await listenTransport("tcp:127.0.0.1:0");
  try {
    const source = new SourceMigration(guest, {
      capabilities: { events: true },
      parameters: {
        "max-bandwidth": gridCase.maxBandwidth,
        "downtime-limit": gridCase.downtimeLimitMs,
      },
    });
    watch?.(source);
    const destination = new DestinationMigration({ autostart: false });
    const [outgoing, incoming] = await Promise.all([
      connectTransport(listener.address),
      listener.accept(),
    ]);
    const [info] = await Promise.all([
      source.migrate(limitLink(outgoing, LINK_BYTES_PER_SECOND)),
      destination.incoming(incoming),
    ]);
    return info;
  } finally {
    await listener.close();
  }
}

/** A transport whose sending side carries at most `bytesPerSecond`. */
function limitLink(inner: Transport, bytesPerSecond: number): Transport {
  // 10 ms windows: every 1 MiB chunk waits its own time, a smooth pipe
  // without a burst.
  const limiter = new RateLimitStream({ bytesPerSecond, windowMs: 10 });
  limiter.readable.pipeTo(inner.writable).catch(() => {});
  return {
    readable: inner.readable,
    writable: limiter.writable,
    description: inner.description,
    close: () => inner.close(),
  };
}

/** The model's prediction for a case, over a link of the given rate. */
export function predictCase(gridCase: GridCase): MigrationPrediction {
  const workload = gridCase.workload;
  return predictMigration({
    ramBytes: gridCase.ramBytes,
    dirtyBytesPerSecond: "bytesPerSecond" in workload
      ? workload.bytesPerSecond
      : 0,
    ...(workload.kind === "hot-set" ? { hotSetBytes: workload.setBytes } : {}),
    linkBytesPerSecond: LINK_BYTES_PER_SECOND,
    // Device state, the last sync and the confirmation, with the
    // destination loading in this same thread.
    switchoverOverheadMs: 20,
    parameters: {
      "max-bandwidth": gridCase.maxBandwidth,
      "downtime-limit": gridCase.downtimeLimitMs,
    },
  });
}

/** Runs the whole grid. */
export async function runGrid(cases = GRID): Promise<GridRow[]> {
  const rows: GridRow[] = [];
  for (const gridCase of cases) {
    const actual = await migrateForReal(gridCase);
    rows.push({ gridCase, predicted: predictCase(gridCase), actual });
  }
  return rows;
}

/** How far `actual` is from `predicted`, as a fraction of `predicted`. */
export function relativeError(actual: number, predicted: number): number {
  return Math.abs(actual - predicted) / predicted;
}

/** The grid as a Markdown table. */
export function formatGrid(rows: GridRow[]): string {
  const lines = [
    "| RAM | workload | max-bandwidth | passes (model/real) | total ms (model/real) | downtime ms (model/real) |",
    "| --- | --- | --- | --- | --- | --- |",
  ];
  for (const { gridCase, predicted, actual } of rows) {
    const workload = gridCase.workload;
    const text = workload.kind === "hot-set"
      ? `hot-set ${formatBytes(workload.setBytes)} @ ${
        formatBytes(workload.bytesPerSecond)
      }/s`
      : workload.kind === "random"
      ? `random @ ${formatBytes(workload.bytesPerSecond)}/s`
      : workload.kind;
    lines.push(
      `| ${formatBytes(gridCase.ramBytes)} | ${text} | ${
        formatBytes(gridCase.maxBandwidth)
      }/s | ${predicted.passes} / ${
        actual.ram?.["dirty-sync-count"]
      } | ${predicted.totalTimeMs} / ${
        actual["total-time"]
      } | ${predicted.downtimeMs} / ${actual.downtime} |`,
    );
  }
  return lines.join("\n");
}
