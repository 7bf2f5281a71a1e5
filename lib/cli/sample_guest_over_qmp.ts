import {
  type MigrationCapabilities,
  type MigrationParameters,
  QmpClient,
  QmpError,
} from "../../mod.ts";

/** What a running guest's monitor says about it. */
export interface SampledGuest {
  /**
   * Bytes of RAM (`query-memory-size-summary` `base-memory`), or
   * `undefined` when the monitor has no such command (livemig's `run`).
   */
  ramBytes: number | undefined;
  /** Bytes per second of pages dirtied, measured by `calc-dirty-rate`. */
  dirtyBytesPerSecond: number;
  /** The migration parameters the planner uses, as the monitor has them. */
  parameters: Partial<MigrationParameters>;
  /** The capabilities the planner uses, as the monitor has them. */
  capabilities: Partial<MigrationCapabilities>;
}

/** Options for {@linkcode sampleGuestOverQmp}. */
export interface SampleGuestOptions {
  /**
   * Seconds `calc-dirty-rate` measures for (QEMU allows 1 to 60).
   *
   * @default {1}
   */
  calcTimeS?: number;
  /**
   * Milliseconds between two `query-dirty-rate` while it measures.
   *
   * @default {250}
   */
  pollMs?: number;
}

const PLANNED_PARAMETERS = [
  "max-bandwidth",
  "downtime-limit",
  "avail-switchover-bandwidth",
  "xbzrle-cache-size",
  "max-postcopy-bandwidth",
] as const;

const PLANNED_CAPABILITIES = ["xbzrle", "postcopy-ram"] as const;

/**
 * Asks a running guest's monitor (QEMU 7.2's or livemig `run`'s) for what
 * the planner needs: RAM size, migration parameters and capabilities, and
 * a dirty-rate measurement (`calc-dirty-rate`, then `query-dirty-rate`
 * until it is `measured`; QEMU reports MiB/s).
 *
 * @example Usage
 * ```ts ignore
 * import { sampleGuestOverQmp } from "./sample_guest_over_qmp.ts";
 *
 * const guest = await sampleGuestOverQmp("unix:/tmp/qmp.sock");
 * console.log(guest.dirtyBytesPerSecond);
 * ```
 *
 * @param target The monitor's address, `unix:PATH` or `tcp:HOST:PORT`.
 * @param options How long to measure.
 * @returns What the monitor said.
 * @throws {QmpError} If the monitor refuses a command.
 */
export async function sampleGuestOverQmp(
  target: string,
  options: SampleGuestOptions = {},
): Promise<SampledGuest> {
  const calcTimeS = options.calcTimeS ?? 1;
  const pollMs = options.pollMs ?? 250;
  const qmp = await QmpClient.connect(target);
  try {
    const ramBytes = await queryRamBytes(qmp);
    const reported = await qmp.execute<Record<string, unknown>>(
      "query-migrate-parameters",
    );
    const parameters: Partial<MigrationParameters> = {};
    for (const name of PLANNED_PARAMETERS) {
      const value = reported[name];
      if (typeof value === "number") parameters[name] = value;
    }
    const states = await qmp.execute<{ capability: string; state: boolean }[]>(
      "query-migrate-capabilities",
    );
    const capabilities: Partial<MigrationCapabilities> = {};
    for (const { capability, state } of states) {
      const name = PLANNED_CAPABILITIES.find((c) => c === capability);
      if (name) capabilities[name] = state;
    }
    await qmp.execute("calc-dirty-rate", { "calc-time": calcTimeS });
    let info: { status?: string; "dirty-rate"?: number } = {};
    const deadline = Date.now() + calcTimeS * 1000 + 30_000;
    while (info.status !== "measured") {
      if (Date.now() > deadline) {
        throw new QmpError({
          desc:
            `Cannot measure the dirty rate: query-dirty-rate still says "${info.status}" after ${calcTimeS} s`,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, pollMs));
      info = await qmp.execute("query-dirty-rate");
    }
    return {
      ramBytes,
      dirtyBytesPerSecond: (info["dirty-rate"] ?? 0) * 1024 * 1024,
      parameters,
      capabilities,
    };
  } finally {
    await qmp.close();
  }
}

async function queryRamBytes(qmp: QmpClient): Promise<number | undefined> {
  try {
    const summary = await qmp.execute<{ "base-memory": number }>(
      "query-memory-size-summary",
    );
    return summary["base-memory"];
  } catch (error) {
    if (error instanceof QmpError && error.class === "CommandNotFound") {
      return undefined;
    }
    throw error;
  }
}
