import {
  MigrationReportRecorder,
  renderMigrationReport,
  type ReportData,
  type ReportSample,
} from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";

/** Options for {@linkcode startReport}. */
export interface StartReportOptions<I> {
  /** Where to write the SVG. */
  path: string;
  /** The report's title. */
  title: string;
  /** Turns an info into a sample. */
  toSample: (info: I) => Omit<ReportSample, "atMs"> | undefined;
  /** The outcome, from the final info. */
  outcome: (info: I) => Omit<ReportData, "samples" | "title">;
  /** Where to say that the report was written. */
  io: CliIo;
}

/**
 * `--report FILE.svg`: records a migration from now on; the function it
 * returns writes the report once the migration ended.
 *
 * @example Usage
 * ```ts
 * import { sampleOfMigrationInfo, type MigrationInfo } from "../../mod.ts";
 * import { startReport } from "./start_report.ts";
 * import assert from "node:assert/strict";
 *
 * const path = await Deno.makeTempFile({ suffix: ".svg" });
 * let info: MigrationInfo = { status: "active" };
 * const finish = startReport({ query: () => info }, {
 *   path, title: "example", toSample: sampleOfMigrationInfo,
 *   outcome: (end) => ({ status: end.status, totalTimeMs: 10 }),
 *   io: { writeOut: () => {}, writeErr: () => {}, errIsTerminal: false },
 * });
 * info = { status: "completed" };
 * await finish(info);
 * assert.match(await Deno.readTextFile(path), /<svg[^>]*>[\s\S]*completed after 0\.01 s/);
 * await Deno.remove(path);
 * ```
 *
 * @param target What to sample.
 * @param options Where to write, and how to read the infos.
 * @returns Writes the report, given the final info.
 */
export function startReport<I>(
  target: { query(): I } & Partial<EventTarget>,
  options: StartReportOptions<I>,
): (end: I) => Promise<void> {
  const recorder = new MigrationReportRecorder(target, {
    toSample: options.toSample,
  });
  return async (end: I) => {
    const data = recorder.stop({
      title: options.title,
      ...options.outcome(end),
    });
    try {
      await Deno.writeTextFile(options.path, renderMigrationReport(data));
      options.io.writeErr(`livemig: report written to ${options.path}\n`);
    } catch (error) {
      options.io.writeErr(
        `livemig: Cannot write the report to ${options.path}: ${
          error instanceof Error ? error.message : String(error)
        }\n`,
      );
    }
  };
}
