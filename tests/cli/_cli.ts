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
