import {
  type Clock,
  formatProgressLine,
  type MigrationInfo,
  SYSTEM_CLOCK,
} from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";

/**
 * How progress is shown on standard error (`--progress`): `tty` rewrites
 * one line in place, `lines` prints a line every few seconds (for logs and
 * pipes), `off` shows nothing, `auto` is `tty` on a terminal and `lines`
 * elsewhere.
 */
export type ProgressMode = "auto" | "tty" | "lines" | "off";

/** The values `--progress` takes. */
export const PROGRESS_MODES: readonly ProgressMode[] = [
  "auto",
  "tty",
  "lines",
  "off",
];

/** Options for {@linkcode showProgress}. */
export interface ShowProgressOptions<I> {
  /**
   * How to show it.
   *
   * @default {"auto"}
   */
  mode?: ProgressMode;
  /**
   * Formats the info as one line.
   *
   * @default {formatProgressLine}
   */
  format?: (info: I) => string;
  /**
   * Milliseconds between two lines in `lines` mode.
   *
   * @default {5000}
   */
  linesEveryMs?: number;
  /**
   * Time source of the updates.
   *
   * @default {SYSTEM_CLOCK}
   */
  clock?: Clock;
}

/** How often the line is rewritten on a terminal. */
const TTY_EVERY_MS = 200;

/**
 * Checks a `--progress` value.
 *
 * @example Usage
 * ```ts
 * import { parseProgressMode } from "./show_progress.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(parseProgressMode(undefined), "auto");
 * assert.equal(parseProgressMode("lines"), "lines");
 * assert.throws(() => parseProgressMode("bar"), TypeError);
 * ```
 *
 * @param text The flag's value, if given.
 * @returns The mode (`auto` when not given).
 * @throws {TypeError} If it is not a mode.
 */
export function parseProgressMode(text: string | undefined): ProgressMode {
  const mode = text ?? "auto";
  if (!PROGRESS_MODES.includes(mode as ProgressMode)) {
    throw new TypeError(
      `Cannot use --progress "${mode}": expected ${PROGRESS_MODES.join(", ")}`,
    );
  }
  return mode as ProgressMode;
}

/**
 * Shows a migration's progress on standard error while it runs, asking it
 * for its `query()` info at intervals; returns the function that stops
 * (and clears the line on a terminal).
 *
 * @example Usage
 * ```ts
 * import { showProgress } from "./show_progress.ts";
 * import assert from "node:assert/strict";
 *
 * let err = "";
 * const io = { writeOut: () => {}, writeErr: (text: string) => (err += text), errIsTerminal: false };
 * const ticks: (() => void)[] = []; // each sleep ends when the test says so
 * const clock = { now: () => 0, sleep: () => new Promise<void>((end) => ticks.push(end)) };
 * const stop = showProgress({ query: () => ({ status: "active" as const }) }, io, { clock });
 * ticks.shift()!();
 * await new Promise((resolve) => setTimeout(resolve, 0));
 * stop();
 * assert.equal(err, "livemig: active\n");
 * ```
 *
 * @typeParam I What the migration's `query()` returns.
 * @param migration The migration.
 * @param io Where to write.
 * @param options The mode, the format, the clock.
 * @returns Stops showing progress.
 */
export function showProgress<I = MigrationInfo>(
  migration: { query(): I },
  io: CliIo,
  options: ShowProgressOptions<I> = {},
): () => void {
  const requested = options.mode ?? "auto";
  const mode = requested === "auto"
    ? (io.errIsTerminal ? "tty" : "lines")
    : requested;
  if (mode === "off") return () => {};
  const format = options.format ??
    (formatProgressLine as unknown as (info: I) => string);
  const clock = options.clock ?? SYSTEM_CLOCK;
  const everyMs = mode === "tty" ? TTY_EVERY_MS : options.linesEveryMs ?? 5000;
  const stopped = new AbortController();
  (async () => {
    while (true) {
      await clock.sleep(everyMs, stopped.signal);
      const line = format(migration.query());
      io.writeErr(mode === "tty" ? `\r\x1b[K${line}` : `livemig: ${line}\n`);
    }
  })().catch(() => {});
  return () => {
    stopped.abort();
    if (mode === "tty") io.writeErr("\r\x1b[K");
  };
}
