/**
 * An io for the CLI's commands in tests: it keeps what was written and can
 * wait for a line on stderr.
 */
import type { CliIo } from "../../cli.ts";

/** A {@linkcode CliIo} that keeps what was written and reports lines. */
export interface CapturedIo extends CliIo {
  /** Standard output so far. */
  readonly out: string;
  /** Standard error so far. */
  readonly err: string;
  /**
   * Resolves with the first match of `pattern` in standard error (where the
   * CLI reports what it is doing), as soon as it is written.
   */
  waitForErr(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
}

/**
 * Creates an io for `main()` that records stdout and stderr.
 *
 * @returns The io.
 */
export function captureIo(): CapturedIo {
  let out = "";
  let err = "";
  const waiters = new Set<() => void>();
  const io: CapturedIo = {
    errIsTerminal: false,
    get out() {
      return out;
    },
    get err() {
      return err;
    },
    writeOut(text: string) {
      out += text;
    },
    writeErr(text: string) {
      err += text;
      for (const wake of waiters) wake();
    },
    waitForErr(pattern: RegExp, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const match = err.match(pattern);
          if (match === null) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(match);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(
            new Error(
              `Cannot see ${pattern} on stderr within ${timeoutMs} ms: ${out}${err}`,
            ),
          );
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
  return io;
}
