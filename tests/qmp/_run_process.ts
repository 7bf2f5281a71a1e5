/**
 * Starts `cli.ts run` (and `cli.ts qmp`) as separate processes for the
 * tests: a guest with its QMP monitor on a free loopback port.
 *
 * @module
 */

import { QmpClient } from "../../lib/qmp/qmp_client.ts";

const CLI = new URL("../../cli.ts", import.meta.url).pathname;
/**
 * What the processes may do: loopback sockets, and the one unix socket path
 * the differential script tries to reach (missing, as in QEMU's test).
 */
const PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-net=127.0.0.1,unix:/tmp/livemig-no-such-socket",
];

/** How long a process may run before it is killed, so a stuck one fails its test. */
const DEADLINE_MS = 120_000;

/** A `cli.ts run` process. */
export interface RunProcess {
  /** The monitor's address, `tcp:127.0.0.1:PORT`. */
  readonly qmpAddress: string;
  /** A connected, negotiated client. */
  readonly qmp: QmpClient;
  /** The process. */
  readonly child: Deno.ChildProcess;
  /** Every stderr line so far. */
  readonly stderr: string[];
  /**
   * Waits for the process to end.
   *
   * @returns The exit code and the JSON of the last stdout line, if any.
   */
  finish(): Promise<
    { code: number; json: Record<string, unknown> | undefined }
  >;
  /** Kills the process if it still runs, and waits for it. */
  kill(): Promise<void>;
}

/**
 * Starts `cli.ts run --qmp tcp:127.0.0.1:0 ARGS` and connects to its monitor.
 *
 * @param args More arguments.
 * @returns The process.
 */
export async function startRun(args: string[]): Promise<RunProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...PERMISSIONS,
      CLI,
      "run",
      "--qmp",
      "tcp:127.0.0.1:0",
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const watchdog = setTimeout(() => kill(child), DEADLINE_MS);
  child.status.finally(() => clearTimeout(watchdog));
  const stdout = new Response(child.stdout).text();
  const stderr: string[] = [];
  const address = Promise.withResolvers<string>();
  const reading = (async () => {
    let rest = "";
    for await (
      const text of child.stderr.pipeThrough(new TextDecoderStream())
    ) {
      const parts = (rest + text).split("\n");
      rest = parts.pop()!;
      for (const line of parts) {
        stderr.push(line);
        const match = /QMP monitor at (\S+)/.exec(line);
        if (match) address.resolve(match[1]!);
      }
    }
    if (rest) stderr.push(rest);
    address.reject(
      new Error(`run ended before listening:\n${stderr.join("\n")}`),
    );
  })();
  const qmpAddress = await address.promise;
  const qmp = await QmpClient.connect(qmpAddress);
  return {
    qmpAddress,
    qmp,
    child,
    stderr,
    async finish() {
      const [status, out] = await Promise.all([child.status, stdout, reading]);
      await qmp.close();
      const last = out.trimEnd().split("\n").at(-1);
      return {
        code: status.code,
        json: last ? JSON.parse(last) as Record<string, unknown> : undefined,
      };
    },
    async kill() {
      await qmp.close();
      kill(child);
      await Promise.all([child.status, stdout, reading]);
    },
  };
}

function kill(child: Deno.ChildProcess): void {
  try {
    child.kill("SIGKILL");
  } catch {
    // it has ended
  }
}

/**
 * Runs `cli.ts qmp ARGS`.
 *
 * @param args The arguments after `qmp`.
 * @returns The exit code, stdout and stderr.
 */
export async function runQmpCommand(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, CLI, "qmp", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}
