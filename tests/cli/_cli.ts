/**
 * Runs the command line in this process with its output captured.
 *
 * @module
 */
import { type CliIo, main } from "../../cli.ts";

/** A {@linkcode CliIo} that keeps what was written. */
export interface CapturedIo extends CliIo {
  out: string;
  err: string;
}

/**
 * Creates an io that keeps what is written.
 *
 * @param errIsTerminal Whether stderr pretends to be a terminal.
 * @returns The io.
 */
export function capture(errIsTerminal = false): CapturedIo {
  const io: CapturedIo = {
    out: "",
    err: "",
    errIsTerminal,
    writeOut(text: string) {
      io.out += text;
    },
    writeErr(text: string) {
      io.err += text;
    },
  };
  return io;
}

/**
 * Runs `livemig ARGS`.
 *
 * @param args The arguments.
 * @returns The exit code and what was written.
 */
export async function run(
  args: string[],
): Promise<{ code: number; out: string; err: string }> {
  const io = capture();
  const code = await main(args, io);
  return { code, out: io.out, err: io.err };
}

/**
 * Writes `bytes` to a new temporary file.
 *
 * @param bytes The content.
 * @param suffix The file name's end.
 * @returns Its path.
 */
export async function tempFile(
  bytes: Uint8Array,
  suffix = ".mig",
): Promise<string> {
  const path = await Deno.makeTempFile({ suffix });
  await Deno.writeFile(path, bytes);
  return path;
}

/** A command running in this process. */
export interface Running {
  /** What it has written so far. */
  io: CapturedIo;
  /** Resolves with the first match of `pattern` in stderr. */
  waitForErr(pattern: RegExp): Promise<RegExpExecArray>;
  /** The exit code and what was written, once it ends. */
  done: Promise<{ code: number; out: string; err: string }>;
}

/**
 * Starts `livemig ARGS` in this process without waiting for it.
 *
 * @param args The arguments.
 * @returns The running command.
 */
export function start(args: string[]): Running {
  const io = capture();
  const waiters: { pattern: RegExp; resolve: (m: RegExpExecArray) => void }[] =
    [];
  const writeErr = io.writeErr.bind(io);
  io.writeErr = (text: string) => {
    writeErr(text);
    for (const waiter of [...waiters]) {
      const match = waiter.pattern.exec(io.err);
      if (match) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(match);
      }
    }
  };
  const done = main(args, io).then((code) => ({
    code,
    out: io.out,
    err: io.err,
  }));
  return {
    io,
    done,
    waitForErr(pattern) {
      const match = pattern.exec(io.err);
      if (match) return Promise.resolve(match);
      return new Promise((resolve, reject) => {
        waiters.push({ pattern, resolve });
        done.then(() =>
          reject(new Error(`the command ended before printing ${pattern}`))
        );
      });
    },
  };
}
