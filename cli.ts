/**
 * The livemig command line: `analyze`, `demo` and the migration commands.
 *
 * `main(args, io)` parses the arguments, runs the library and returns the
 * exit code (0 success, 1 failure, 2 usage error); it never exits the
 * process itself, so tests call it directly.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  analyzeMigrationStream,
  formatStreamAnalysis,
  ramBlockFileName,
  StreamFormatError,
} from "./mod.ts";

/** Where the command line writes. */
export interface CliIo {
  /**
   * Writes to standard output.
   *
   * @param text The text.
   */
  writeOut(text: string): void;
  /**
   * Writes to standard error.
   *
   * @param text The text.
   */
  writeErr(text: string): void;
  /** Whether standard error is a terminal (progress is shown only then). */
  readonly errIsTerminal: boolean;
}

/** The livemig version. */
export const VERSION = "0.1.0";

const USAGE = `livemig ${VERSION}: QEMU live migration for Deno

Usage: livemig <command> [options]

Commands:
  analyze FILE     Summarise a QEMU migration stream file
  demo             Show livemig on an embedded example

Options:
  -h, --help       Show help (also: livemig <command> --help)
  --version        Show the version

Run with deno: deno run --allow-read --allow-write cli.ts <command> ...
`;

const ANALYZE_USAGE = `Usage: livemig analyze FILE [options]

Summarise a QEMU migration stream: header, machine, commands, sections,
per RAM block its size and its zero / normal / xbzrle page counts, device
sections walked through the vmdesc trailer.

Options:
  --json               Print the summary as one JSON object (last line)
  --extract-ram DIR    Write each RAM block's final content to DIR/<name>.bin
                       (<name> = block idstr, characters outside
                       [A-Za-z0-9._-] replaced by _)
  --dump state         Print device fields decoded through the vmdesc
  --check-xbzrle       Re-encode every XBZRLE record from the page it patched
                       and count byte-identical ones (exit 1 if any differs)
  -h, --help           Show this help

Exit status: 0 valid stream, 1 stream or I/O error, 2 usage error.
`;

const DEMO_USAGE = `Usage: livemig demo

Analyses a migration stream recorded from a real QEMU 7.2 (bundled in
fixtures/qemu/) and prints its summary.
`;

/** An error in the command line itself (exit status 2). */
class UsageError extends Error {
  constructor(message: string, readonly usage: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * Runs the command line with `args` and returns the exit code.
 *
 * @example Usage
 * ```ts
 * import { main } from "@livemig/livemig/cli";
 * import assert from "node:assert/strict";
 *
 * let out = "";
 * const io = { writeOut: (t: string) => (out += t), writeErr: () => {}, errIsTerminal: false };
 * assert.equal(await main(["--version"], io), 0);
 * assert.match(out, /^livemig 0\.1\.0/);
 * assert.equal(await main(["no-such-command"], io), 2);
 * ```
 *
 * @param args The arguments, without the program name.
 * @param io Where to write; defaults to the process's stdout and stderr.
 * @returns The exit code: 0 success, 1 failure, 2 usage error.
 */
export async function main(
  args: string[],
  io: CliIo = processIo(),
): Promise<number> {
  try {
    const [command, ...rest] = args;
    switch (command) {
      case undefined:
      case "-h":
      case "--help":
      case "help":
        io.writeOut(USAGE);
        return command === undefined ? 2 : 0;
      case "--version":
        io.writeOut(`livemig ${VERSION}\n`);
        return 0;
      case "analyze":
        return await analyze(rest, io);
      case "demo":
        return await demo(rest, io);
      default:
        throw new UsageError(`Unknown command "${command}"`, USAGE);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      io.writeErr(`livemig: ${error.message}\n\n${error.usage}`);
      return 2;
    }
    io.writeErr(`livemig: ${describe(error)}\n`);
    return 1;
  }
}

function parse<
  T extends Record<
    string,
    { type: "string" | "boolean"; short?: string; multiple?: boolean }
  >,
>(
  args: string[],
  options: T,
  usage: string,
) {
  try {
    return parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError(
      error instanceof Error ? error.message : String(error),
      usage,
    );
  }
}

async function analyze(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    json: { type: "boolean" },
    "extract-ram": { type: "string" },
    dump: { type: "string" },
    "check-xbzrle": { type: "boolean" },
  }, ANALYZE_USAGE);
  if (values.help) {
    io.writeOut(ANALYZE_USAGE);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UsageError(
      positionals.length === 0
        ? "analyze needs a FILE"
        : `analyze takes one FILE: received ${positionals.length}`,
      ANALYZE_USAGE,
    );
  }
  if (values.dump !== undefined && values.dump !== "state") {
    throw new UsageError(
      `--dump accepts only "state": received "${values.dump}"`,
      ANALYZE_USAGE,
    );
  }
  const path = positionals[0]!;
  const file = await Deno.open(path);
  const progress = io.errIsTerminal
    ? (bytes: number) =>
      io.writeErr(`\ranalyzing ${path}: ${(bytes / 1e6).toFixed(1)} MB`)
    : undefined;
  let result;
  try {
    result = await analyzeMigrationStream(file.readable, {
      keepRam: values["extract-ram"] !== undefined,
      dumpState: values.dump === "state",
      checkXbzrle: values["check-xbzrle"] ?? false,
      ...(progress ? { onProgress: progress } : {}),
    });
  } finally {
    if (progress) io.writeErr("\r\x1b[K");
  }
  const { analysis, ram, state } = result;
  const dir = values["extract-ram"];
  const written: string[] = [];
  if (dir !== undefined && ram) {
    await Deno.mkdir(dir, { recursive: true });
    for (const block of ram.blocks) {
      const target = `${dir}/${ramBlockFileName(block.idstr)}`;
      const out = await Deno.open(target, {
        write: true,
        create: true,
        truncate: true,
      });
      try {
        for (const chunk of ram.chunks(block.idstr)) await writeAll(out, chunk);
      } finally {
        out.close();
      }
      written.push(target);
    }
  }
  if (values.json) {
    const json: Record<string, unknown> = { ...analysis };
    if (state) json.state = state;
    if (dir !== undefined) json["extracted"] = written;
    io.writeOut(JSON.stringify(json) + "\n");
  } else {
    io.writeOut(formatStreamAnalysis(analysis));
    for (const target of written) io.writeOut(`wrote ${target}\n`);
    if (state) io.writeOut(JSON.stringify(state, null, 2) + "\n");
  }
  const check = analysis["check-xbzrle"];
  return check && check.identical < check.records ? 1 : 0;
}

async function demo(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {}, DEMO_USAGE);
  if (values.help) {
    io.writeOut(DEMO_USAGE);
    return 0;
  }
  if (positionals.length > 0) {
    throw new UsageError("demo takes no arguments", DEMO_USAGE);
  }
  const fixture = new URL("./fixtures/qemu/dirty/stream.bin", import.meta.url);
  io.writeOut(
    `Analysing a live migration stream recorded from QEMU 7.2 (${fixture.pathname}):\n\n`,
  );
  const file = await Deno.open(fixture);
  const { analysis } = await analyzeMigrationStream(file.readable, {
    checkXbzrle: true,
  });
  io.writeOut(formatStreamAnalysis(analysis));
  return 0;
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.byteLength;) {
    done += await file.write(bytes.subarray(done));
  }
}

function describe(error: unknown): string {
  if (error instanceof StreamFormatError) return error.message;
  if (error instanceof Deno.errors.NotFound) {
    return `Cannot open file: ${error.message}`;
  }
  if (error instanceof Error) return error.message;
  return String(error);
}

function processIo(): CliIo {
  const encoder = new TextEncoder();
  const write = (stream: typeof Deno.stdout, text: string) => {
    const bytes = encoder.encode(text);
    for (let done = 0; done < bytes.byteLength;) {
      done += stream.writeSync(bytes.subarray(done));
    }
  };
  return {
    writeOut: (text) => write(Deno.stdout, text),
    writeErr: (text) => write(Deno.stderr, text),
    errIsTerminal: Deno.stderr.isTerminal(),
  };
}

if (import.meta.main) {
  Deno.exitCode = await main(Deno.args);
}
