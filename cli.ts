/**
 * The livemig command line: `analyze`, `demo` and the migration commands.
 *
 * `main(args, io)` parses the arguments, runs the library and returns the
 * exit code (0 success, 1 failure, 2 usage error); it never exits the
 * process itself, so tests call it directly. Each command lives in its own
 * module under `lib/cli/`.
 *
 * @module
 */

import { ANALYZE_COMMAND } from "./lib/cli/analyze_command.ts";
import type { CliIo } from "./lib/cli/cli_io.ts";
import { CONVERT_COMMAND } from "./lib/cli/convert_command.ts";
import type { Command } from "./lib/cli/define_command.ts";
import { DEMO_COMMAND } from "./lib/cli/demo_command.ts";
import { describeCliError } from "./lib/cli/describe_cli_error.ts";
import { INCOMING_COMMAND } from "./lib/cli/incoming_command.ts";
import { MIGRATE_COMMAND } from "./lib/cli/migrate_command.ts";
import { PLAN_COMMAND } from "./lib/cli/plan_command.ts";
import { PROXY_COMMAND } from "./lib/cli/proxy_command.ts";
import { QMP_COMMAND } from "./lib/cli/qmp_command.ts";
import { RUN_COMMAND } from "./lib/cli/run_command.ts";
import { UsageError } from "./lib/cli/usage_error.ts";

export type { CliIo } from "./lib/cli/cli_io.ts";

/** The livemig version. */
export const VERSION = "0.1.0";

const USAGE = `livemig ${VERSION}: QEMU live migration for Deno

Usage: livemig <command> [options]

Commands:
  demo             Live-migrate a simulated 256 MiB guest over loopback TCP
  migrate URI      Migrate a simulated guest to a destination at URI
  incoming URI     Receive a migration at URI into a new guest
  proxy IN OUT     Forward a migration from IN to OUT, re-encoding its RAM
  analyze FILE     Summarise a QEMU migration stream or mapped-ram file
  convert IN OUT   Convert a stream file to a mapped-ram file or back
  run --qmp ADDR   Run a simulated guest with a QEMU-compatible QMP monitor
  qmp SOCKET CMD   Run one QMP command on a monitor (livemig's or QEMU's)
  plan             Predict a migration: converges? passes, time, downtime

Options:
  -h, --help       Show help (also: livemig <command> --help)
  --version        Show the version

Run with deno: deno run --allow-read --allow-write cli.ts <command> ...
`;

/** The commands, by name. */
const COMMANDS: Record<string, Command> = {
  analyze: ANALYZE_COMMAND,
  demo: DEMO_COMMAND,
  migrate: MIGRATE_COMMAND,
  incoming: INCOMING_COMMAND,
  proxy: PROXY_COMMAND,
  convert: CONVERT_COMMAND,
  run: RUN_COMMAND,
  qmp: QMP_COMMAND,
  plan: PLAN_COMMAND,
};

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
    }
    if (!Object.hasOwn(COMMANDS, command)) {
      throw new UsageError(`Unknown command "${command}"`, USAGE);
    }
    return await COMMANDS[command]!.run(rest, io);
  } catch (error) {
    if (error instanceof UsageError) {
      io.writeErr(`livemig: ${error.message}\n\n${error.usage}`);
      return 2;
    }
    io.writeErr(`livemig: ${describeCliError(error)}\n`);
    return 1;
  }
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
